package ai.ammkd.core

import java.io.File

/**
 * The on-device loop (`ammkd.mobile_runtime.retriever.Retriever`): photo -> preprocess ->
 * ONNX Runtime encoder -> exact top-k over the bundle's texts; and text -> top-k gallery photos.
 * Everything is read and hash-checked at [open]; [close] releases the ONNX Runtime session.
 */
class Retriever private constructor(
    val bundle: Bundle,
    val preprocessor: Preprocessor,
    val encoder: OnnxImageEncoder,
    val index: ClassIndex,
    val gallery: Gallery?,
    /** Time [open] took: manifest, hashes, index decode, session creation (ms). */
    val loadMs: Double,
) : AutoCloseable {

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
                "`ammkd search --bundle B --gallery PHOTOS --text ...` (or embed photos on the device)",
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
        fun open(bundleDir: File, threads: Int = 1, format: String = "onnx", quantization: String = "none"): Retriever {
            val t0 = System.nanoTime()
            val bundle = Bundle.open(bundleDir)
            val pre = try {
                Preprocessor(bundle.inputSpec)
            } catch (e: IllegalArgumentException) {
                throw BundleException.Invalid(bundle.manifestPath, e.message ?: "unsupported input spec")
            }
            val index = ClassIndex.load(bundle)
            val gallery = Gallery.open(bundle)
            val encoder = OnnxImageEncoder.open(bundle, threads, format, quantization)
            return Retriever(bundle, pre, encoder, index, gallery, ms(t0, System.nanoTime()))
        }

        fun open(bundleDir: String, threads: Int = 1): Retriever = open(File(bundleDir), threads)

        private fun ms(from: Long, to: Long) = (to - from) / 1e6
    }
}
