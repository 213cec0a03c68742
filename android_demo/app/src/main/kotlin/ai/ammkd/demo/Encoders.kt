package ai.ammkd.demo

import ai.ammkd.core.Bundle
import ai.ammkd.core.ImageEncoder
import ai.ammkd.core.OnnxImageEncoder

/**
 * Which runtime runs the bundle's image encoder, chosen from its manifest: the ExecuTorch
 * program when the bundle has an unquantized `executorch` target and the app was built with
 * ExecuTorch (`-Pammkd.executorch=true`); otherwise ONNX Runtime (`onnx`, then `ort`).
 */
object Encoders {
    private const val EXECUTORCH_CLASS = "ai.ammkd.demo.ExecuTorchImageEncoder"

    fun open(bundle: Bundle, threads: Int): ImageEncoder {
        val has = { format: String -> bundle.targets.any { it.role == "image_encoder" && it.format == format && it.quantization == "none" } }
        if (BuildConfig.WITH_EXECUTORCH && has("executorch")) {
            val cls = Class.forName(EXECUTORCH_CLASS)
            return cls.getConstructor(Bundle::class.java, String::class.java).newInstance(bundle, "none") as ImageEncoder
        }
        val format = if (!has("onnx") && has("ort")) "ort" else "onnx" // a bundle without either: the core lists what it has
        return OnnxImageEncoder.open(bundle, threads, format)
    }
}
