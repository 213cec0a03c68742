package ai.ammkd.core

import ai.onnxruntime.OnnxJavaType
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import ai.onnxruntime.TensorInfo
import java.nio.LongBuffer

/**
 * One of the bundle's text encoders (manifest `text_encoder.targets`) run by ONNX Runtime (CPU):
 * the token ids of one query, unpadded, as a (1, L) int64 tensor -> its (D,) float32 unit
 * embedding, in the space of the image encoder and the class vectors (`bundle/text_encoder.py`
 * `OnnxTextEncoder`). The model bytes are read and hash-checked from the bundle, the target's
 * `session_config` entries are applied (`session.disable_quant_qdq` for int8-weights), intra-op
 * threads are pinned to [threads] (inter-op: 1), as for [OnnxImageEncoder].
 *
 * [dim] is the model's output width when the graph states it, else -1 ([TextSide.open] then
 * measures it with one query). Thread-safe (ONNX Runtime sessions are).
 */
class OnnxTextEncoder private constructor(
    val target: Target,
    val threads: Int,
    private val session: OrtSession,
    private val env: OrtEnvironment,
    /** Path of the model file, as used in error messages. */
    val where: String,
    val dim: Int,
) : AutoCloseable {

    /** Token ids of one query ([cls] ... [sep], 1..max_length of them, not padded) -> embedding (D,). */
    fun embed(ids: IntArray): FloatArray {
        require(ids.isNotEmpty()) { "a text encoder input needs at least one token id" }
        val data = LongArray(ids.size) { ids[it].toLong() }
        OnnxTensor.createTensor(env, LongBuffer.wrap(data), longArrayOf(1, ids.size.toLong())).use { tensor ->
            session.run(mapOf(target.inputName to tensor), setOf(target.outputName)).use { result ->
                val value = result.get(target.outputName).orElse(null) as? OnnxTensor
                    ?: throw IllegalStateException("$where: no tensor output '${target.outputName}'")
                val out = value.floatBuffer ?: throw IllegalStateException("$where: output '${target.outputName}' is not float32")
                val total = out.remaining()
                if (dim > 0 && total != dim) {
                    throw IllegalStateException("$where: text encoder output has $total values, expected 1 x $dim")
                }
                return FloatArray(total).also { out.get(it) }
            }
        }
    }

    override fun close() = session.close()

    companion object {
        /**
         * Open the ONNX text encoder of [spec] with [quantization] ("none", "int8-dynamic",
         * "int8-weights"; null: the most precise one held, [TextEncoderSpec.PRECISION_ORDER]).
         * A quantization the bundle lacks is a [BundleException.Invalid] listing those it has; a
         * model whose input is not (B, L) int64 or whose stated output width differs from the
         * index's is refused ([BundleException.Invalid] naming the model file).
         */
        fun open(bundle: Bundle, spec: TextEncoderSpec, quantization: String? = null, threads: Int = 1): OnnxTextEncoder {
            require(threads >= 1) { "threads must be >= 1; got $threads" }
            val held = spec.targets.filter { it.format == "onnx" }
            val want = quantization ?: TextEncoderSpec.PRECISION_ORDER.firstOrNull { q -> held.any { it.quantization == q } }
            val target = held.firstOrNull { it.quantization == want } ?: throw BundleException.Invalid(
                bundle.manifestPath,
                "no ONNX text encoder with quantization ${want ?: "any"} in this bundle " +
                    "(it has: ${spec.quantizations.joinToString(", ").ifEmpty { "none" }})",
            )
            val file = target.file ?: throw BundleException.Invalid(bundle.manifestPath, "text encoder ${target.label} has no file entry")
            val where = bundle.where(file)
            val bytes = bundle.readBytes(file)
            val env = OrtEnvironment.getEnvironment()
            val session = OrtSessions.create(env, bytes, target.sessionConfig, threads, where, "text encoder")
            try {
                val input = session.inputInfo[target.inputName]?.info as? TensorInfo
                    ?: throw BundleException.Invalid(
                        where,
                        "text encoder has no tensor input '${target.inputName}' (inputs: ${session.inputNames.joinToString()})",
                    )
                if (input.type != OnnxJavaType.INT64 || input.shape.size != 2) {
                    throw BundleException.Invalid(
                        where,
                        "text encoder input '${target.inputName}' is ${input.type} ${input.shape.contentToString()}, not (B, L) int64 token ids",
                    )
                }
                val output = session.outputInfo[target.outputName]?.info as? TensorInfo
                    ?: throw BundleException.Invalid(
                        where,
                        "text encoder has no tensor output '${target.outputName}' (outputs: ${session.outputNames.joinToString()})",
                    )
                if (output.type != OnnxJavaType.FLOAT || output.shape.size != 2) {
                    throw BundleException.Invalid(
                        where,
                        "text encoder output '${target.outputName}' is ${output.type} ${output.shape.contentToString()}, not (B, D) float32",
                    )
                }
                val width = output.shape[1]
                if (width > 0 && width != bundle.index.dim.toLong()) {
                    throw widthMismatch(where, width, bundle.index.dim)
                }
                return OnnxTextEncoder(target, threads, session, env, where, if (width > 0) width.toInt() else -1)
            } catch (e: Exception) {
                session.close()
                throw e
            }
        }

        internal fun widthMismatch(where: String, width: Long, indexDim: Int) = BundleException.Invalid(
            where,
            "text encoder output width $width does not match the index's $indexDim (a text embedding must be " +
                "comparable with the class vectors and the photos' embeddings)",
        )
    }
}
