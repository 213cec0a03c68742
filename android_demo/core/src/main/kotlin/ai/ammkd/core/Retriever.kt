package ai.ammkd.core

import java.io.File

/**
 * The on-device loop (`ammkd.mobile_runtime.retriever.Retriever`): photo -> preprocess ->
 * image encoder (ONNX Runtime unless told otherwise) -> exact top-k over the bundle's texts;
 * and text -> top-k photos of the gallery (made on the host or here, [updateGallery]) or top-k
 * texts of the index. A text query is embedded by the bundle's text encoder when it has one
 * ([textSide], free text: [embedText]); otherwise it must be one of the index's texts
 * ([TextLookup], the nearest ones suggested) and its class vector is the query.
 * Everything but the text side is read and hash-checked at [open]; the text side (tokenizer and
 * text encoder, tens of MB) on first use. [close] releases the ONNX Runtime sessions.
 */
class Retriever private constructor(
    val bundle: Bundle,
    val preprocessor: Preprocessor,
    val encoder: ImageEncoder,
    val index: ClassIndex,
    gallery: Gallery?,
    /** Time [open] took: manifest, hashes, index decode, session creation (ms). */
    val loadMs: Double,
    /** Which text encoder [textSide] opens ("none", "int8-dynamic", "int8-weights"; null: the most precise held). */
    val textQuantization: String? = null,
    /** ONNX Runtime intra-op threads of the text encoder. */
    val textThreads: Int = 1,
) : AutoCloseable {

    private var text: TextSide? = null

    /** Whether the bundle has a text side (manifest `text_encoder`): free-text queries are embedded on the device. */
    val hasTextEncoder: Boolean get() = bundle.textEncoder != null

    /**
     * The bundle's text side (tokenizer + the [textQuantization] text encoder), opened and checked on
     * the first call (vocabulary, settings and model hashes, output width). A [BundleException] when
     * the bundle has none or a file is missing or modified (the file named).
     */
    @Synchronized
    fun textSide(): TextSide = text ?: TextSide.open(bundle, textQuantization, textThreads).also { text = it }

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

    /**
     * Gallery photos for the text [query], best first. [textId]: the index text whose class vector
     * was the query, or null when the text encoder embedded it ([byTextEncoder], taking [encodeMs]:
     * tokenize + encode).
     */
    data class ImageResults(
        val textId: Int?,
        val query: String,
        val hits: List<Gallery.Hit>,
        val searchMs: Double,
        val byTextEncoder: Boolean = false,
        val encodeMs: Double = 0.0,
    )

    /**
     * The vector a text query searches with: the text encoder's [embedding] of it ([byTextEncoder];
     * [textId] null), or, in a bundle without a text side, the class vector of the index text
     * [textId]. [tokenizeMs] and [encodeMs] are 0 for the latter.
     */
    class TextQuery(
        val query: String,
        val embedding: FloatArray,
        val textId: Int?,
        val byTextEncoder: Boolean,
        val tokenizeMs: Double,
        val encodeMs: Double,
    )

    /** Texts of the index for a text query, best first, and the time the search took (ms). */
    data class TextSearch(val query: TextQuery, val hits: List<Hit>, val searchMs: Double)

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

    /**
     * A free-text query -> its (D,) unit embedding by the bundle's text encoder ([textSide]).
     * [IllegalArgumentException] for an empty or whitespace-only query or one over
     * [TextSide.MAX_QUERY_CHARS] characters; [BundleException] for a bundle without a text side.
     */
    fun embedText(text: String): FloatArray = textSide().embed(text)

    /**
     * The vector [text] searches with (`Retriever.text_query` of the Python runtime): embedded by the
     * text encoder when the bundle has one, else the class vector of that text of the index
     * ([TextLookup]: a [TextNotFoundException] with the nearest texts when it is not one).
     */
    fun textQuery(text: String): TextQuery {
        if (hasTextEncoder) {
            val e = textSide().embedTimed(text)
            return TextQuery(text, e.embedding, null, true, e.tokenizeMs, e.encodeMs)
        }
        val id = TextLookup.find(index.texts, text)
        return TextQuery(index.texts[id], index.row(id), id, false, 0.0, 0.0)
    }

    /** Text -> the [k] closest texts of the index (free text with a text encoder; see [textQuery]). */
    fun searchTexts(text: String, k: Int = 5): TextSearch {
        val q = textQuery(text)
        val t0 = System.nanoTime()
        val hits = searchEmbedding(q.embedding, k)
        return TextSearch(q, hits, ms(t0, System.nanoTime()))
    }

    /** The [k] gallery photos closest to an embedding (D,) (a photo's, a text's or a class vector), best first. */
    fun searchGallery(embedding: FloatArray, k: Int): List<Gallery.Hit> = requireGallery().search(embedding, k)

    /** Gallery photos closest to the class vector of text [textId]; an error when the bundle has no gallery. */
    fun topImages(textId: Int, k: Int = 5): ImageResults {
        val g = requireGallery()
        require(textId in 0 until index.count) { "text id $textId is outside 0..${index.count - 1}" }
        val t0 = System.nanoTime()
        val hits = g.search(index.row(textId), k)
        return ImageResults(textId, index.texts[textId], hits, ms(t0, System.nanoTime()))
    }

    /**
     * Gallery photos for a text query: free text embedded by the bundle's text encoder when it has
     * one; otherwise a text of the bundle (any other gets a [TextNotFoundException] with the nearest ones).
     */
    fun topImages(text: String, k: Int = 5): ImageResults {
        if (!hasTextEncoder) return topImages(TextLookup.find(index.texts, text), k) // the lookup first: a typo fails at once
        val q = textQuery(text)
        val g = requireGallery()
        val t0 = System.nanoTime()
        val hits = g.search(q.embedding, k)
        return ImageResults(null, text, hits, ms(t0, System.nanoTime()), true, q.tokenizeMs + q.encodeMs)
    }

    private fun requireGallery(): Gallery = gallery ?: throw IllegalStateException(
        "${File(bundle.root, Gallery.DIR).path}: this bundle has no gallery; build one on the host with " +
            "`ammkd search --bundle B --gallery PHOTOS --text ...`, or on the device with updateGallery",
    )

    @Synchronized
    override fun close() {
        try {
            encoder.close()
        } finally {
            text?.close()
            text = null
        }
    }

    companion object {
        /**
         * Open a bundle folder: manifest, index and encoder are checked (format version, sizes,
         * SHA-256) and loaded. [format]/[quantization] pick the ONNX Runtime target (default the
         * unquantized `onnx` one); [threads] is ONNX Runtime's intra-op thread count, for the text
         * encoder too; [textQuantization] picks the text encoder (null: the most precise one held).
         */
        fun open(
            bundleDir: File,
            threads: Int = 1,
            format: String = "onnx",
            quantization: String = "none",
            textQuantization: String? = null,
        ): Retriever = open(bundleDir, textQuantization, threads) { bundle -> OnnxImageEncoder.open(bundle, threads, format, quantization) }

        /**
         * Open a bundle folder with the image encoder [openEncoder] makes from the checked bundle
         * (e.g. an ExecuTorch one); it must read its model through [Bundle.readBytes] (hash check).
         * [textQuantization] and [textThreads] are for the text encoder, opened on first use.
         */
        fun open(
            bundleDir: File,
            textQuantization: String? = null,
            textThreads: Int = 1,
            openEncoder: (Bundle) -> ImageEncoder,
        ): Retriever {
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
            return Retriever(bundle, pre, encoder, index, gallery, ms(t0, System.nanoTime()), textQuantization, textThreads)
        }

        fun open(bundleDir: String, threads: Int = 1): Retriever = open(File(bundleDir), threads)

        private fun ms(from: Long, to: Long) = (to - from) / 1e6
    }
}
