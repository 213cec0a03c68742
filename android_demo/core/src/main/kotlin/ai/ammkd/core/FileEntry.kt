package ai.ammkd.core

import org.json.JSONObject

/**
 * A file named by the manifest: [path] relative to the bundle folder, its [sha256] (hex) and
 * size in [bytes]; raw arrays also carry [dtype] ("float16", "float32", ...) and [shape]
 * (little-endian, row-major). [fromJson] bounds the shape ([Limits.MAX_RANK] dimensions of at
 * most [Limits.MAX_EXTENT]) and refuses one whose value count does not fit in a Long.
 */
data class FileEntry(
    val path: String,
    val sha256: String,
    val bytes: Long,
    val dtype: String? = null,
    val shape: List<Long>? = null,
) {
    /** Number of values the shape holds (1 for a scalar shape `[]`, 0 without a shape); overflow is an [ArithmeticException]. */
    val count: Long get() = shape?.fold(1L) { a, b -> Math.multiplyExact(a, b) } ?: 0L

    companion object {
        /**
         * Parse a manifest file entry; [where] names the manifest in error messages, [key] the
         * entry inside it (e.g. `index/vectors`). Every number is checked before it is used.
         */
        fun fromJson(o: JSONObject, where: String, key: String = "file"): FileEntry {
            val entry = try {
                FileEntry(
                    o.getString("path"),
                    o.getString("sha256"),
                    Limits.long(where, "$key/bytes", o.opt("bytes"), 0, Long.MAX_VALUE),
                    if (o.has("dtype")) o.getString("dtype") else null,
                    o.optJSONArray("shape")?.let { a ->
                        if (a.length() > Limits.MAX_RANK) {
                            throw BundleException.Invalid(
                                where,
                                "invalid manifest at $key/shape: ${a.length()} dimensions, more than the maximum of ${Limits.MAX_RANK}",
                            )
                        }
                        List(a.length()) { Limits.long(where, "$key/shape/$it", a.opt(it), 0, Limits.MAX_EXTENT) }
                    },
                )
            } catch (e: org.json.JSONException) {
                throw BundleException.Invalid(where, "bad file entry ${o.toString().take(120)} (${e.message})")
            }
            if (entry.shape != null && Limits.product(entry.shape) == null) {
                throw BundleException.Invalid(where, "invalid manifest at $key/shape: ${entry.shape} holds more values than a reader can address")
            }
            return entry
        }
    }
}
