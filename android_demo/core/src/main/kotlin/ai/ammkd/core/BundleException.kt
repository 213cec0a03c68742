package ai.ammkd.core

/**
 * A bundle (or gallery) file that cannot be used. [file] is the path of the offending file
 * (inside the bundle folder); the message always starts with it and then says the problem.
 */
sealed class BundleException(val file: String, problem: String) : Exception("$file: $problem") {
    /** The file does not exist (or is not a regular file). */
    class Missing(file: String, problem: String = "missing from the bundle") : BundleException(file, problem)

    /** The file's size is not the one the manifest records (cut short, or replaced). */
    class Truncated(file: String, actual: Long, expected: Long) :
        BundleException(file, "size $actual bytes, manifest says $expected (truncated or replaced)")

    /** The file's SHA-256 is not the one the manifest records (modified). */
    class HashMismatch(file: String) : BundleException(file, "SHA-256 does not match the manifest (file was modified)")

    /** The manifest's `format_version` is not one this reader understands. */
    class UnsupportedVersion(file: String, version: Any?, supported: Int) : BundleException(
        file,
        "format_version $version is not supported by this reader (it reads version $supported); " +
            "re-export the bundle or upgrade the app",
    )

    /** Anything else: not a bundle, malformed JSON, a path leaving the bundle, a shape mismatch, no usable target. */
    class Invalid(file: String, problem: String) : BundleException(file, problem)
}
