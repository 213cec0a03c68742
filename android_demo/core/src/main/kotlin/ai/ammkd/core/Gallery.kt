package ai.ammkd.core

import org.json.JSONException
import org.json.JSONObject
import org.json.JSONTokener
import java.io.File
import java.io.RandomAccessFile

/**
 * The bundle's optional photo gallery, made on the host (`ammkd search --gallery`) or on the
 * device ([GalleryBuilder]): `gallery/gallery.json` lists [images] (paths relative to
 * [sourceDir]) and the photos [skipped] with their reasons, and `gallery/embeddings.f32.bin`
 * holds the (M, D) float32 embeddings, row i = images[i]. Searched with a class vector of the
 * text index.
 */
class Gallery(
    val images: List<String>,
    val sourceDir: String,
    vectors: FloatArray,
    dim: Int,
    val skipped: List<GalleryBuilder.Skipped> = emptyList(),
) : VectorIndex(vectors, images.size, dim) {

    /** A gallery photo: row [id], its path relative to the gallery folder ([image]) and cosine [score]. */
    data class Hit(val id: Int, val image: String, val score: Float)

    /** The [k] photos closest to [query] (D,), best first. */
    fun search(query: FloatArray, k: Int): List<Hit> = topK(query, k).map { Hit(it.id, images[it.id], it.score) }

    companion object {
        const val FORMAT = "ammkd-gallery"
        const val VERSION = 1
        const val DIR = "gallery"
        const val MANIFEST = "gallery.json"
        const val EMBEDDINGS = "embeddings.f32.bin"

        /**
         * The gallery of [bundle], checked (format, version, dim, size and SHA-256 of the
         * embeddings), or null when the bundle has none. Bytes past the recorded size (an
         * interrupted append) are ignored, not read; only [GalleryBuilder] writes the gallery.
         */
        fun open(bundle: Bundle): Gallery? {
            val folder = File(bundle.root, DIR)
            val mfile = File(folder, MANIFEST)
            if (!mfile.isFile) return null
            val m = try {
                JSONTokener(mfile.readText(Charsets.UTF_8)).nextValue() as? JSONObject
            } catch (e: JSONException) {
                null
            } ?: throw BundleException.Invalid(mfile.path, "unreadable gallery manifest; delete the gallery folder to rebuild it")
            if (m.opt("format") != FORMAT) throw BundleException.Invalid(mfile.path, "not an $FORMAT manifest")
            if (m.opt("format_version") != VERSION) {
                throw BundleException.UnsupportedVersion(mfile.path, m.opt("format_version"), VERSION)
            }
            try {
                val entry = m.getJSONObject("embeddings")
                val images = m.getJSONArray("images").let { a ->
                    if (a.length() > Limits.MAX_COUNT) {
                        throw BundleException.Invalid(mfile.path, "${a.length()} images, more than the maximum of ${Limits.MAX_COUNT}")
                    }
                    List(a.length()) { a.getString(it) }
                }
                val dim = Limits.int(mfile.path, "dim", m.opt("dim"), 1, Limits.MAX_DIM.toLong())
                if (dim != bundle.outputDim) {
                    throw BundleException.Invalid(mfile.path, "gallery dim $dim differs from the encoder's ${bundle.outputDim}")
                }
                // every number that sizes the read is checked before anything is allocated
                val bytes = Limits.long(mfile.path, "embeddings/bytes", entry.opt("bytes"), 0, Limits.MAX_FILE_BYTES)
                if (bytes != images.size.toLong() * dim * 4) {
                    throw BundleException.Invalid(mfile.path, "${images.size} images of dim $dim need ${images.size.toLong() * dim * 4} bytes, embeddings say $bytes")
                }
                val emb = File(folder, EMBEDDINGS)
                val size = if (emb.isFile) emb.length() else 0L
                if (size < bytes) throw BundleException.Truncated(emb.path, size, bytes)
                val data = ByteArray(bytes.toInt()) // rows past it (an interrupted append) are not read
                if (bytes > 0) RandomAccessFile(emb, "r").use { it.readFully(data) }
                if (Bundle.sha256Hex(data) != entry.getString("sha256")) throw BundleException.HashMismatch(emb.path)
                val buf = java.nio.ByteBuffer.wrap(data).order(java.nio.ByteOrder.LITTLE_ENDIAN).asFloatBuffer()
                val vectors = FloatArray(data.size / 4).also { buf.get(it) }
                val skipped = (m.optJSONArray("skipped") ?: org.json.JSONArray()).let { a ->
                    List(a.length()) { a.getJSONObject(it).let { s -> GalleryBuilder.Skipped(s.getString("path"), s.optString("reason")) } }
                }
                return Gallery(images, m.optString("source_dir", ""), vectors, dim, skipped)
            } catch (e: JSONException) {
                throw BundleException.Invalid(mfile.path, "bad gallery manifest (${e.message})")
            }
        }
    }
}
