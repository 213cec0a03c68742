package ai.ammkd.demo

import ai.ammkd.core.Bundle
import ai.ammkd.core.BundleException
import ai.ammkd.core.ImageEncoder
import ai.ammkd.core.Target
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * Optional (built with -Pammkd.executorch=true): the bundle's ExecuTorch program
 * (`--target executorch`, XNNPACK-delegated) run by the ExecuTorch Android runtime.
 * The core's [ImageEncoder] contract: input (1, 3, S, S) float32 from the core's Preprocessor,
 * output (D,) float32. The file is hash-checked by the core before it is loaded. The app makes
 * it by reflection ([Encoders]), so that builds without ExecuTorch need not compile it.
 */
class ExecuTorchImageEncoder(bundle: Bundle, quantization: String = "none") : ImageEncoder {
    private val size = bundle.inputSpec.size.toLong()
    private val module: Module
    override val target: Target

    init {
        target = bundle.targets.firstOrNull { it.format == "executorch" && it.quantization == quantization }
            ?: throw BundleException.Invalid(
                bundle.manifestPath,
                "no executorch/$quantization target (the bundle has: ${bundle.targets.joinToString { it.label }})",
            )
        val file = target.file ?: throw BundleException.Invalid(bundle.manifestPath, "${target.label} has no file entry")
        bundle.readBytes(file) // size + SHA-256 check before the runtime maps the file
        module = Module.load(bundle.resolve(file).absolutePath)
    }

    /** Input (3*S*S floats, NCHW) -> embedding (D,). */
    override fun embed(input: FloatArray): FloatArray {
        val x = Tensor.fromBlob(input, longArrayOf(1, 3, size, size))
        return module.forward(EValue.from(x))[0].toTensor().dataAsFloatArray
    }

    override fun close() = module.destroy()
}
