package ai.ammkd.core

/**
 * An image encoder of a bundle, whatever runs it: input (1, 3, S, S) float32 NCHW as made by
 * [Preprocessor], output (D,) float32, unit-norm. The core has [OnnxImageEncoder]; an app adds
 * others (the demo app's ExecuTorch encoder) and hands them to [Retriever.open].
 */
interface ImageEncoder : AutoCloseable {
    /** The manifest target it runs (format, quantization, file). */
    val target: Target

    /** Input tensor (3*S*S floats, one image) -> embedding (D,). */
    fun embed(input: FloatArray): FloatArray
}
