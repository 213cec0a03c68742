package ai.ammkd.core

import org.json.JSONObject

/**
 * A bundle's text side (`bundle/text_encoder.py` `TextSide`, docs/design.md §5.10): its
 * [tokenizer] and one of its ONNX text encoders, so a free-text query ("my dog on the beach last
 * summer") is embedded on the device into the space of the photos' embeddings and the class
 * vectors: query -> [checkQuery] -> [WordPieceTokenizer.encode] (ids `[CLS] ... [SEP]`, at most
 * `max_length`, unpadded) -> [OnnxTextEncoder.embed] ((1, L) int64 -> (D,) unit vector).
 *
 * Opened by [open] (the vocabulary, the settings and the model are size- and SHA-256-checked;
 * the encoder's output width must be the index's); [Retriever.textSide] opens it on first use.
 * Thread-safe; [close] releases the ONNX Runtime session.
 */
class TextSide private constructor(
    val spec: TextEncoderSpec,
    val tokenizer: WordPieceTokenizer,
    val encoder: OnnxTextEncoder,
    /** Embedding width D (= the index's). */
    val dim: Int,
    /** Time [open] took: tokenizer files, model bytes and hash, session creation (ms). */
    val loadMs: Double,
) : AutoCloseable {

    /** The manifest entry of the text encoder in use (its quantization, file, session config). */
    val target: Target get() = encoder.target

    /** One embedded query: its token [ids], the (D,) [embedding], and the time of each stage (ms). */
    class Embedded(val ids: IntArray, val embedding: FloatArray, val tokenizeMs: Double, val encodeMs: Double)

    /** A query's token ids, after [checkQuery] (an [IllegalArgumentException] for an empty or too long one). */
    fun tokenize(query: String): IntArray {
        checkQuery(query)
        return tokenizer.encode(query)
    }

    /** A free-text query -> its (D,) unit embedding. [IllegalArgumentException] for an empty or too long query. */
    fun embed(query: String): FloatArray = embedTimed(query).embedding

    /** As [embed], with the token ids and the tokenize / encode times. */
    fun embedTimed(query: String): Embedded {
        val t0 = System.nanoTime()
        val ids = tokenize(query)
        val t1 = System.nanoTime()
        val emb = embedIds(ids)
        return Embedded(ids, emb, ms(t0, t1), ms(t1, System.nanoTime()))
    }

    /** Token ids (as [WordPieceTokenizer.encode] gives them) -> (D,) embedding. */
    fun embedIds(ids: IntArray): FloatArray {
        val emb = encoder.embed(ids)
        if (emb.size != dim) throw OnnxTextEncoder.widthMismatch(encoder.where, emb.size.toLong(), dim)
        return emb
    }

    override fun close() = encoder.close()

    companion object {
        /** Longer queries are refused before they are tokenized (`MAX_QUERY_CHARS` of bundle/text_encoder.py), in code points. */
        const val MAX_QUERY_CHARS = 10_000

        /**
         * Refuse, with an [IllegalArgumentException] saying why, a query that is empty or only
         * whitespace (Python's `str.isspace`), holds an unpaired UTF-16 surrogate (not Unicode text),
         * or is longer than [MAX_QUERY_CHARS] code points: the checks of the Python reader, in its order.
         */
        fun checkQuery(query: String) {
            require(!query.codePoints().allMatch { WordPieceTokenizer.isPythonSpace(it) }) { "text query is empty: type a few words" }
            val lone = query.indices.firstOrNull { j ->
                val c = query[j]
                (Character.isHighSurrogate(c) && (j + 1 >= query.length || !Character.isLowSurrogate(query[j + 1]))) ||
                    (Character.isLowSurrogate(c) && (j == 0 || !Character.isHighSurrogate(query[j - 1])))
            }
            require(lone == null) {
                "text query is not valid Unicode (an unpaired surrogate U+%04X at index %d); pass UTF-8 text".format(query[lone!!].code, lone)
            }
            val n = query.codePointCount(0, query.length)
            require(n <= MAX_QUERY_CHARS) { "text query has $n characters; at most $MAX_QUERY_CHARS are accepted" }
        }

        /**
         * The bundle's tokenizer: `tokenizer/vocab.txt` and `tokenizer/settings.json`, each size- and
         * SHA-256-checked before it is used ([BundleException] naming the file: missing, truncated,
         * modified, malformed). A bundle without a text side is a [BundleException.Invalid].
         */
        fun readTokenizer(bundle: Bundle): WordPieceTokenizer {
            val spec = specOf(bundle)
            val settingsWhere = bundle.where(spec.settings)
            val vocab = bundle.readBytes(spec.vocab)
            val settings = bundle.readJson(spec.settings) as? JSONObject
                ?: throw BundleException.Invalid(settingsWhere, "not a JSON object of tokenizer settings")
            return WordPieceTokenizer.fromBytes(vocab, settings, bundle.where(spec.vocab), settingsWhere)
        }

        /**
         * Open the text side of [bundle]: its tokenizer ([readTokenizer]) and the text encoder of
         * [quantization] ("none", "int8-dynamic", "int8-weights"; null: the most precise one held)
         * with [threads] intra-op threads. Refused ([BundleException], naming the file): a bundle
         * without a text side, tokenizer files or a model missing or modified, a quantization the
         * bundle lacks, an output width (`text_encoder/dim`, or the model's) other than the index's.
         */
        fun open(bundle: Bundle, quantization: String? = null, threads: Int = 1): TextSide {
            val t0 = System.nanoTime()
            val spec = specOf(bundle)
            val width = bundle.index.dim
            if (spec.dim != width) {
                throw BundleException.Invalid(
                    bundle.manifestPath,
                    "text encoder output width ${spec.dim} (text_encoder/dim) does not match the index's $width",
                )
            }
            val tokenizer = readTokenizer(bundle)
            val encoder = OnnxTextEncoder.open(bundle, spec, quantization, threads)
            try {
                if (encoder.dim < 0) { // the graph does not state its width: measure it with the empty query
                    val probe = encoder.embed(tokenizer.encode(""))
                    if (probe.size != width) throw OnnxTextEncoder.widthMismatch(encoder.where, probe.size.toLong(), width)
                }
                return TextSide(spec, tokenizer, encoder, width, ms(t0, System.nanoTime()))
            } catch (e: Exception) {
                encoder.close()
                throw e
            }
        }

        private fun specOf(bundle: Bundle): TextEncoderSpec = bundle.textEncoder ?: throw BundleException.Invalid(
            bundle.manifestPath,
            "this bundle has no text encoder, so free text cannot be embedded on the device (export one with " +
                "`ammkd export ... --text-encoder on`); search by a text of the index instead",
        )

        private fun ms(from: Long, to: Long) = (to - from) / 1e6
    }
}
