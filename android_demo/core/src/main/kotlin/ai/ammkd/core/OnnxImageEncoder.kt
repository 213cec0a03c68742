package ai.ammkd.core

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import ai.onnxruntime.TensorInfo
import java.nio.FloatBuffer

/**
 * The bundle's image encoder run by ONNX Runtime (CPU): input (1, 3, S, S) float32 as made by
 * [Preprocessor], output (D,) float32, unit-norm (normalisation is inside the graph).
 * The model bytes are read and hash-checked from the bundle, the target's `session_config`
 * entries are applied, intra-op threads are pinned to [threads] (inter-op: 1).
 */
class OnnxImageEncoder private constructor(
    override val target: Target,
    val threads: Int,
    private val session: OrtSession,
    private val env: OrtEnvironment,
    private val inputShape: LongArray,
    val dim: Int,
) : ImageEncoder {

    /** Input tensor (3*S*S floats, NCHW, one image) -> embedding (D,). */
    override fun embed(input: FloatArray): FloatArray {
        val per = inputShape[1] * inputShape[2] * inputShape[3]
        require(input.size.toLong() == per) {
            "image encoder input must be (1, ${inputShape.drop(1).joinToString(", ")}) = $per floats; got ${input.size}"
        }
        val batch = if (inputShape[0] > 0) inputShape[0].toInt() else 1
        val data = if (batch == 1) input else input.copyOf((per * batch).toInt()) // static batch: pad with zeros
        val shape = longArrayOf(batch.toLong(), inputShape[1], inputShape[2], inputShape[3])
        OnnxTensor.createTensor(env, FloatBuffer.wrap(data), shape).use { tensor ->
            session.run(mapOf(target.inputName to tensor)).use { result ->
                val out = (result.get(0) as OnnxTensor).floatBuffer
                val total = out.remaining()
                if (total % batch != 0 || total / batch != dim) {
                    throw IllegalStateException("${target.label}: encoder output has $total values, expected $batch x $dim")
                }
                return FloatArray(dim).also { out.get(it) }
            }
        }
    }

    override fun close() = session.close()

    companion object {
        /** Formats this encoder runs: ONNX and the ORT (mobile) format of the same model. */
        val FORMATS = listOf("onnx", "ort")

        /**
         * Open the [format] ("onnx" or "ort") / [quantization] ("none", "fp16", "int8",
         * "int8-dynamic", "int8-weights") encoder of [bundle]. A bundle without it gets a
         * [BundleException.Invalid] listing the targets it has.
         */
        fun open(bundle: Bundle, threads: Int = 1, format: String = "onnx", quantization: String = "none"): OnnxImageEncoder {
            require(format in FORMATS) { "OnnxImageEncoder runs formats ${FORMATS.joinToString()}; got '$format'" }
            require(threads >= 1) { "threads must be >= 1; got $threads" }
            val target = bundle.targets.firstOrNull {
                it.role == "image_encoder" && it.format == format && it.quantization == quantization
            } ?: throw BundleException.Invalid(
                bundle.manifestPath,
                "no ONNX Runtime image encoder $format/$quantization in this bundle " +
                    "(it has: ${bundle.targets.joinToString(", ") { it.label }.ifEmpty { "none" }}); " +
                    "export one with `ammkd export ... --target onnx`",
            )
            val file = target.file ?: throw BundleException.Invalid(bundle.manifestPath, "${target.label} has no file entry")
            val bytes = bundle.readBytes(file)
            val where = bundle.where(file)
            val env = OrtEnvironment.getEnvironment()
            val session = OrtSessions.create(env, bytes, target.sessionConfig, threads, where, "model")
            try {
                val info = session.inputInfo[target.inputName]?.info as? TensorInfo
                    ?: throw BundleException.Invalid(
                        where,
                        "model has no tensor input '${target.inputName}' (inputs: ${session.inputNames.joinToString()})",
                    )
                val shape = info.shape
                val s = bundle.inputSpec.size.toLong()
                if (shape.size != 4 || shape[0] > Limits.MAX_BATCH || shape[1] != 3L || shape[2] != s || shape[3] != s) {
                    throw BundleException.Invalid(
                        where,
                        "model input ${shape.contentToString()} is not (B, 3, $s, $s) as the manifest's input spec says " +
                            "(B dynamic or at most ${Limits.MAX_BATCH})",
                    )
                }
                return OnnxImageEncoder(target, threads, session, env, shape, bundle.outputDim)
            } catch (e: Exception) {
                session.close()
                throw e
            }
        }
    }
}
