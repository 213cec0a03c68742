package ai.ammkd.core

import org.json.JSONObject

/**
 * A file named by the manifest: [path] relative to the bundle folder, its [sha256] (hex) and
 * size in [bytes]; raw arrays also carry [dtype] ("float16", "float32", ...) and [shape]
 * (little-endian, row-major).
 */
data class FileEntry(
    val path: String,
    val sha256: String,
    val bytes: Long,
    val dtype: String? = null,
    val shape: List<Long>? = null,
) {
    /** Number of values the shape holds (1 for a scalar shape `[]`). */
    val count: Long get() = shape?.fold(1L) { a, b -> a * b } ?: 0L

    companion object {
        /** Parse a manifest file entry; [where] names the manifest in error messages. */
        fun fromJson(o: JSONObject, where: String): FileEntry = try {
            val shape = o.optJSONArray("shape")?.let { a -> List(a.length()) { a.getLong(it) } }
            FileEntry(
                o.getString("path"),
                o.getString("sha256"),
                o.getLong("bytes"),
                if (o.has("dtype")) o.getString("dtype") else null,
                shape,
            )
        } catch (e: org.json.JSONException) {
            throw BundleException.Invalid(where, "bad file entry ${o.toString().take(120)} (${e.message})")
        }
    }
}
