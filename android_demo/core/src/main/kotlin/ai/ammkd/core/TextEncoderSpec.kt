package ai.ammkd.core

import org.json.JSONArray
import org.json.JSONObject

/**
 * The manifest's optional `text_encoder` section (docs/design.md §5.10): the tokenizer files
 * ([vocab] `tokenizer/vocab.txt`, [settings] `tokenizer/settings.json`), the tokenizer kit
 * ([kitCases] `golden/tokenizer_kit.json`, [kitEmbeddings] `golden/text_embeddings.f32.bin`, (M, D)
 * float32) and the ONNX text encoders [targets] (role `text_encoder`, quantization `none`,
 * `int8-dynamic` or `int8-weights`; input [inputName] (B, L) int64 token ids, output [outputName]
 * (B, [dim]) unit rows). Every number is bounded ([Limits]) when the manifest is read; the files
 * are read (and hash-checked) only when the text side is opened ([TextSide.open]).
 */
data class TextEncoderSpec(
    val inputName: String,
    val outputName: String,
    val dim: Int,
    val vocab: FileEntry,
    val settings: FileEntry,
    val kitCases: FileEntry,
    val kitEmbeddings: FileEntry,
    val targets: List<Target>,
) {
    /** Quantizations of the ONNX text encoders held, in manifest order (the first of each kept). */
    val quantizations: List<String> get() = targets.filter { it.format == "onnx" }.map { it.quantization }.distinct()

    companion object {
        /** Manifest key of the section. */
        const val KEY = "text_encoder"

        /**
         * The most precise first (bundle/backends.py `PRECISION_ORDER`): the text encoder a reader
         * opens when not told which.
         */
        val PRECISION_ORDER = listOf("none", "fp16", "int8-weights", "palettize8", "int8", "int8-dynamic", "palettize4")

        /** Parse the `text_encoder` object [o] of the manifest [where]; anything malformed is a [BundleException.Invalid]. */
        fun fromJson(o: JSONObject, where: String): TextEncoderSpec {
            fun obj(parent: JSONObject, key: String, at: String): JSONObject = parent.optJSONObject(key)
                ?: throw BundleException.Invalid(where, "invalid manifest: '$KEY/$at' is missing or not an object")
            fun str(key: String): String = (o.opt(key) as? String)?.takeIf { it.isNotEmpty() }
                ?: throw BundleException.Invalid(where, "invalid manifest: '$KEY/$key' is missing or not a non-empty string")
            val inputName = str("input_name")
            val outputName = str("output_name")
            if (!o.has("dim")) throw BundleException.Invalid(where, "invalid manifest: '$KEY/dim' is missing")
            val dim = Limits.int(where, "$KEY/dim", o.opt("dim"), 1, Limits.MAX_DIM.toLong())
            val tok = obj(o, "tokenizer", "tokenizer")
            if (tok.opt("kind") != TokenizerSettings.KIND) {
                throw BundleException.Invalid(where, "invalid manifest: '$KEY/tokenizer/kind' is ${tok.opt("kind")}, not '${TokenizerSettings.KIND}'")
            }
            val kit = obj(o, "kit", "kit")
            val list: JSONArray = o.optJSONArray("targets")
                ?: throw BundleException.Invalid(where, "invalid manifest: '$KEY/targets' is missing or not a list")
            if (list.length() == 0) throw BundleException.Invalid(where, "invalid manifest: '$KEY/targets' is empty")
            val targets = List(list.length()) { i ->
                val t = list.optJSONObject(i) ?: throw BundleException.Invalid(where, "invalid manifest: '$KEY/targets/$i' is not an object")
                val parsed = Target.fromJson(t, where, "$KEY/targets/$i")
                if (parsed.role != KEY) throw BundleException.Invalid(where, "invalid manifest: '$KEY/targets/$i' has role '${parsed.role}'")
                if (parsed.file == null) throw BundleException.Invalid(where, "invalid manifest: '$KEY/targets/$i' has no file")
                // the section names the tensors; a target may override them
                parsed.copy(
                    inputName = t.optString("input_name", inputName),
                    outputName = t.optString("output_name", outputName),
                )
            }
            return TextEncoderSpec(
                inputName,
                outputName,
                dim,
                FileEntry.fromJson(obj(tok, "vocab", "tokenizer/vocab"), where, "$KEY/tokenizer/vocab"),
                FileEntry.fromJson(obj(tok, "settings", "tokenizer/settings"), where, "$KEY/tokenizer/settings"),
                FileEntry.fromJson(obj(kit, "cases", "kit/cases"), where, "$KEY/kit/cases"),
                FileEntry.fromJson(obj(kit, "embeddings", "kit/embeddings"), where, "$KEY/kit/embeddings"),
                targets,
            )
        }
    }
}
