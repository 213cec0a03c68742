package ai.ammkd.core

import org.json.JSONObject

/**
 * One manifest `targets` entry: an encoder artifact in [format] ("onnx", "ort", "executorch",
 * "coreml") with [quantization] ("none", "fp16", "int8", "int8-dynamic", "int8-weights", ...).
 * [file] is null for multi-file packages (Core ML). [batch] is the static batch size, or null
 * when dynamic. [sessionConfig] holds ONNX Runtime session config entries the target needs
 * (e.g. `session.disable_quant_qdq` = "1" for int8-weights); apply them all.
 */
data class Target(
    val role: String,
    val format: String,
    val quantization: String,
    val dtype: String,
    val file: FileEntry?,
    val inputName: String,
    val outputName: String,
    val batch: Int?,
    val sessionConfig: Map<String, String>,
) {
    /** "format/quantization", as the manifest and the Python CLI name a target. */
    val label: String get() = "$format/$quantization"

    companion object {
        /** Parse a `targets` entry; [where] names the manifest, [key] the entry (e.g. `targets/0`). */
        fun fromJson(o: JSONObject, where: String, key: String = "targets"): Target = try {
            val cfg = o.optJSONObject("session_config")
            Target(
                role = o.getString("role"),
                format = o.getString("format"),
                quantization = o.optString("quantization", "none"),
                dtype = o.optString("dtype", "float32"),
                file = o.optJSONObject("file")?.let { FileEntry.fromJson(it, where, "$key/file") },
                inputName = o.optString("input_name", "image"),
                outputName = o.optString("output_name", "embedding"),
                batch = o.opt("batch").takeIf { it != null && it != "dynamic" }
                    ?.let { Limits.int(where, "$key/batch", it, 1, Limits.MAX_BATCH.toLong()) },
                sessionConfig = cfg?.keys()?.asSequence()?.associateWith { cfg.get(it).toString() } ?: emptyMap(),
            )
        } catch (e: org.json.JSONException) {
            throw BundleException.Invalid(where, "bad target entry (${e.message})")
        }
    }
}
