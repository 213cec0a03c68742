package ai.ammkd.core

import java.io.File

/**
 * The on-device loop (`ammkd.mobile_runtime.retriever.Retriever`): photo -> preprocess ->
 * image encoder (ONNX Runtime unless told otherwise) -> exact top-k over the bundle's texts;
 * and text -> top-k photos of the gallery (made on the host or here, [updateGallery]).
 * Everything is read and hash-checked at [open]; [close] releases the ONNX Runtime session.
 */
class Retriever private constructor(
    val bundle: Bundle,
    val preprocessor: Preprocessor,
    val encoder: ImageEncoder,
    val index: ClassIndex,
    gallery: Gallery?,
    /** Time [open] took: manifest, hashes, index decode, session creation (ms). */
    val loadMs: Double,
) : AutoCloseable {

    /** The bundle's photo gallery, if it has one; replaced by [updateGallery]. */
    var gallery: Gallery? = gallery
        private set

    /**
     * Embed the photos of [source] that the gallery does not hold yet (see [GalleryBuilder.update])
     * and search them from now on. Returns what was added and skipped.
     */
    fun updateGallery(
        source: String,
        photos: List<GalleryBuilder.Photo>,
        rebuild: Boolean = false,
        onProgress: (done: Int, total: Int) -> Unit = { _, _ -> },
    ): GalleryBuilder.Update = GalleryBuilder.update(this, source, photos, rebuild, onProgress).also { gallery = it.gallery }

    /**
     * [updateGallery] with the image files under [folder] ([GalleryBuilder.listImages]), decoded by
     * [decoder] (an exception from it skips the photo, with its message as the reason).
     */
    fun updateGallery(folder: File, decoder: (File) -> Pixels, rebuild: Boolean = false): GalleryBuilder.Update {
        val photos = GalleryBuilder.listImages(folder).map { name -> GalleryBuilder.Photo(name) { decoder(File(folder, name)) } }
        return updateGallery(folder.canonicalPath, photos, rebuild)
    }

    /** A text of the bundle: its [id] in `index/texts.json`, the [text], and cosine [score]. */
    data class Hit(val id: Int, val text: String, val score: Float)

    /** Stage times of one call, milliseconds; [loadMs] is the retriever's open time. */
    data class Timings(val loadMs: Double, val preprocessMs: Double, val encodeMs: Double, val searchMs: Double)

    data class TextResults(val hits: List<Hit>, val timings: Timings)

    /** Gallery photos for the text [query] (id [textId] in the index), best first. */
    data class ImageResults(val textId: Int, val query: String, val hits: List<Gallery.Hit>, val searchMs: Double)

    /** Photo (ARGB pixels, [width] x [height]) -> embedding (D,), with the stage times. */
    fun embed(argb: IntArray, width: Int, height: Int): Pair<FloatArray, Timings> {
        val t0 = System.nanoTime()
        val x = preprocessor.preprocess(argb, width, height)
        val t1 = System.nanoTime()
        val emb = encoder.embed(x)
        val t2 = System.nanoTime()
        return emb to Timings(loadMs, ms(t0, t1), ms(t1, t2), 0.0)
    }

    /** The [k] texts closest to an embedding (D,), best first, ties towards the lower id. */
    fun searchEmbedding(embedding: FloatArray, k: Int): List<Hit> =
        index.topK(embedding, k).map { Hit(it.id, index.texts[it.id], it.score) }

    /** Photo (ARGB pixels) -> the [k] best texts with scores, and the time of each stage. */
    fun topTexts(argb: IntArray, width: Int, height: Int, k: Int = 5): TextResults {
        val (emb, t) = embed(argb, width, height)
        val t0 = System.nanoTime()
        val hits = searchEmbedding(emb, k)
        return TextResults(hits, t.copy(searchMs = ms(t0, System.nanoTime())))
    }

    /** Gallery photos closest to the class vector of text [textId]; an error when the bundle has no gallery. */
    fun topImages(textId: Int, k: Int = 5): ImageResults {
        val g = gallery ?: throw IllegalStateException(
            "${File(bundle.root, Gallery.DIR).path}: this bundle has no gallery; build one on the host with " +
                "`ammkd search --bundle B --gallery PHOTOS --text ...`, or on the device with updateGallery",
        )
        require(textId in 0 until index.count) { "text id $textId is outside 0..${index.count - 1}" }
        val t0 = System.nanoTime()
        val hits = g.search(index.row(textId), k)
        return ImageResults(textId, index.texts[textId], hits, ms(t0, System.nanoTime()))
    }

    /** As [topImages] by id, for a text of the bundle; any other text gets a [TextNotFoundException] with the nearest ones. */
    fun topImages(text: String, k: Int = 5): ImageResults = topImages(TextLookup.find(index.texts, text), k)

    override fun close() = encoder.close()

    companion object {
        /**
         * Open a bundle folder: manifest, index and encoder are checked (format version, sizes,
         * SHA-256) and loaded. [format]/[quantization] pick the ONNX Runtime target (default the
         * unquantized `onnx` one); [threads] is ONNX Runtime's intra-op thread count.
         */
        fun open(bundleDir: File, threads: Int = 1, format: String = "onnx", quantization: String = "none"): Retriever =
            open(bundleDir) { bundle -> OnnxImageEncoder.open(bundle, threads, format, quantization) }

        /**
         * Open a bundle folder with the image encoder [openEncoder] makes from the checked bundle
         * (e.g. an ExecuTorch one); it must read its model through [Bundle.readBytes] (hash check).
         */
        fun open(bundleDir: File, openEncoder: (Bundle) -> ImageEncoder): Retriever {
            val t0 = System.nanoTime()
            val bundle = Bundle.open(bundleDir)
            val pre = try {
                Preprocessor(bundle.inputSpec)
            } catch (e: IllegalArgumentException) {
                throw BundleException.Invalid(bundle.manifestPath, e.message ?: "unsupported input spec")
            }
            val index = ClassIndex.load(bundle)
            val gallery = Gallery.open(bundle)
            val encoder = openEncoder(bundle)
            return Retriever(bundle, pre, encoder, index, gallery, ms(t0, System.nanoTime()))
        }

        fun open(bundleDir: String, threads: Int = 1): Retriever = open(File(bundleDir), threads)

        private fun ms(from: Long, to: Long) = (to - from) / 1e6
    }
}
