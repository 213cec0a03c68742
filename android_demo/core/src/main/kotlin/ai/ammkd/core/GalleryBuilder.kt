package ai.ammkd.core

import org.json.JSONArray
import org.json.JSONObject
import java.io.File
import java.io.FileOutputStream
import java.io.RandomAccessFile
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.file.Files
import java.nio.file.StandardCopyOption
import java.security.MessageDigest

/**
 * Embeds photos on the device into the bundle's gallery (`gallery/`), in the format the Python
 * tool writes and reads (`ammkd.mobile_runtime.gallery.update_gallery`), so either side can
 * extend the other's gallery.
 *
 * Append-only: the photos the gallery already holds are not embedded again; each batch of new
 * rows is appended to `embeddings.f32.bin` and flushed, then `gallery.json` is replaced
 * atomically with the new count and SHA-256. An interrupted run loses at most the batch in
 * flight (rows past the recorded size are cut off on the next run). A photo that cannot be
 * decoded or preprocessed is skipped, listed with its reason, and tried again next time.
 */
object GalleryBuilder {
    /** File name suffixes taken as photos (as `gallery.IMAGE_SUFFIXES` in Python). */
    val IMAGE_SUFFIXES = setOf("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")

    /** Photos embedded, appended and recorded at a time: what an interruption can lose. */
    const val BATCH = 16

    /** A photo of the source: its [path] relative to the source (the gallery's key), and how to decode it. */
    class Photo(val path: String, val decode: () -> Pixels)

    /** A photo that was not embedded, and why. */
    data class Skipped(val path: String, val reason: String)

    /** The gallery after an update, how many photos this run [added], and what it [skipped]. */
    data class Update(val gallery: Gallery, val added: Int, val skipped: List<Skipped>)

    /** Image files under [folder] (recursively, by suffix, hidden names left out), as sorted relative paths with '/'. */
    fun listImages(folder: File): List<String> {
        require(folder.isDirectory) { "${folder.path}: gallery folder not found (or not a folder)" }
        return folder.walkTopDown()
            .filter { it.isFile && !it.name.startsWith(".") && it.extension.lowercase() in IMAGE_SUFFIXES }
            .map { it.relativeTo(folder).invariantSeparatorsPath }
            .sorted()
            .toList()
    }

    /**
     * Embed the [photos] the gallery does not hold yet with [retriever]'s encoder and append them.
     * [source] names where the photos come from (a canonical folder path, or a content URI on
     * Android); a gallery made from another source or with another encoder is refused with an
     * [IllegalStateException] unless [rebuild], which starts it afresh.
     */
    fun update(
        retriever: Retriever,
        source: String,
        photos: List<Photo>,
        rebuild: Boolean = false,
        onProgress: (done: Int, total: Int) -> Unit = { _, _ -> },
    ): Update {
        val bundle = retriever.bundle
        val folder = File(bundle.root, Gallery.DIR)
        val mfile = File(folder, Gallery.MANIFEST)
        val embFile = File(folder, Gallery.EMBEDDINGS)
        val encoder = encoderId(retriever.encoder.target)
        val dim = bundle.outputDim
        var old = if (rebuild) null else Gallery.open(bundle)
        if (old != null) {
            val enc = JSONObject(mfile.readText(Charsets.UTF_8)).optJSONObject("encoder")
            val same = enc != null && listOf("format", "quantization", "sha256").all { enc.optString(it) == encoder.getString(it) }
            if (!same || old.sourceDir != source) {
                val was = "${old.sourceDir} with the ${enc?.optString("format")}/${enc?.optString("quantization")} encoder"
                throw IllegalStateException(
                    "${folder.path}: this gallery was made from $was; rebuild it to replace it with $source " +
                        "(${retriever.encoder.target.label})",
                )
            }
        } else {
            folder.deleteRecursively()
            if (!folder.mkdirs()) throw IllegalStateException("${folder.path}: cannot create the gallery folder")
            embFile.writeBytes(ByteArray(0))
            writeManifest(mfile, manifest(encoder, source, dim, emptyList(), emptyList(), 0, sha256Of(MessageDigest.getInstance("SHA-256"))))
            old = Gallery.open(bundle)!!
        }
        val recorded = old.count.toLong() * dim * 4
        RandomAccessFile(embFile, "rw").use { if (it.length() > recorded) it.setLength(recorded) } // an interrupted append
        val digest = MessageDigest.getInstance("SHA-256")
        embFile.inputStream().use { input ->
            val buf = ByteArray(1 shl 16)
            while (true) {
                val n = input.read(buf)
                if (n < 0) break
                digest.update(buf, 0, n)
            }
        }
        val images = old.images.toMutableList()
        val rows = ArrayList<FloatArray>(images.size + photos.size).apply { for (i in 0 until old.count) add(old.row(i)) }
        val known = images.toHashSet()
        val todo = photos.filter { it.path !in known }
        val skipped = ArrayList<Skipped>()
        val earlierSkips = old.skipped.associateBy { it.path } // tried again in this run
        FileOutputStream(embFile, true).use { out ->
            for (start in todo.indices step BATCH) {
                val batch = todo.subList(start, minOf(start + BATCH, todo.size))
                val bytes = ByteBuffer.allocate(batch.size * dim * 4).order(ByteOrder.LITTLE_ENDIAN)
                var embedded = 0
                for (photo in batch) {
                    val emb = try {
                        val px = photo.decode()
                        retriever.embed(px.argb, px.width, px.height).first
                    } catch (e: Exception) {
                        skipped.add(Skipped(photo.path, e.message ?: e.javaClass.simpleName))
                        continue
                    }
                    for (v in emb) bytes.putFloat(v)
                    rows.add(emb)
                    images.add(photo.path)
                    embedded++
                }
                out.write(bytes.array(), 0, embedded * dim * 4)
                out.flush()
                out.fd.sync()
                digest.update(bytes.array(), 0, embedded * dim * 4)
                val pending = todo.drop(start + BATCH).mapNotNull { earlierSkips[it.path] }
                writeManifest(mfile, manifest(encoder, source, dim, images, skipped + pending, images.size, sha256Of(digest)))
                onProgress(minOf(start + BATCH, todo.size), todo.size)
            }
        }
        val flat = FloatArray(rows.size * dim).also { for ((i, r) in rows.withIndex()) r.copyInto(it, i * dim) }
        return Update(Gallery(images, source, flat, dim, skipped), images.size - old.count, skipped)
    }

    /** The encoder a gallery was made with, as Python records it: format, quantization, SHA-256 of its files' hashes. */
    fun encoderId(target: Target): JSONObject {
        val files = listOfNotNull(target.file)
        val digest = Bundle.sha256Hex(files.joinToString("") { it.sha256 }.toByteArray(Charsets.UTF_8))
        return JSONObject().put("format", target.format).put("quantization", target.quantization).put("sha256", digest)
    }

    private fun sha256Of(digest: MessageDigest): String =
        (digest.clone() as MessageDigest).digest().joinToString("") { "%02x".format(it) }

    private fun manifest(
        encoder: JSONObject,
        source: String,
        dim: Int,
        images: List<String>,
        skipped: List<Skipped>,
        count: Int,
        sha256: String,
    ): JSONObject = JSONObject()
        .put("format", Gallery.FORMAT)
        .put("format_version", Gallery.VERSION)
        .put("encoder", encoder)
        .put("source_dir", source)
        .put("dim", dim)
        .put("images", JSONArray(images))
        .put("skipped", JSONArray(skipped.map { JSONObject().put("path", it.path).put("reason", it.reason) }))
        .put(
            "embeddings",
            JSONObject()
                .put("path", "${Gallery.DIR}/${Gallery.EMBEDDINGS}")
                .put("dtype", "float32")
                .put("shape", JSONArray(listOf(count, dim)))
                .put("bytes", count.toLong() * dim * 4)
                .put("sha256", sha256),
        )

    /** Write [m] to a temporary file beside [file], sync it, and move it over [file] in one step. */
    private fun writeManifest(file: File, m: JSONObject) {
        val tmp = File(file.parentFile, ".${file.name}.tmp")
        FileOutputStream(tmp).use { out ->
            out.write(m.toString(2).toByteArray(Charsets.UTF_8))
            out.fd.sync()
        }
        Files.move(tmp.toPath(), file.toPath(), StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE)
    }
}
