package ai.ammkd.core

import kotlin.math.min

/**
 * Photo -> encoder input, exactly as `ammkd.bundle.preprocess` does it from the same
 * [InputSpec]: transparent pixels composited over white (Pillow's `alpha_composite`), shorter
 * side resized to `size` with Pillow's resampling ([PilResample]), centre crop to size x size,
 * uint8 scaled to `value_range` in float32, then `(x - mean) / std` only when the spec says
 * normalisation is not in the graph.
 *
 * Input pixels are ARGB ints (`0xAARRGGBB`, not premultiplied, as Android's `Bitmap.getPixels`
 * and Java's `BufferedImage.getRGB` give them), row-major, already upright (apply EXIF
 * orientation first). Output is a FloatArray of shape (1, 3, S, S), NCHW, RGB.
 */
class Preprocessor(val spec: InputSpec) {
    init {
        require(spec.resize == "shortest_side" && spec.crop == "center") {
            "unsupported input spec: resize='${spec.resize}' crop='${spec.crop}' " +
                "(this reader supports resize='shortest_side' with crop='center')"
        }
        require(spec.resizeRounding == "half_even" && spec.cropOffset == "floor") {
            "unsupported input spec: resize_rounding='${spec.resizeRounding}' crop_offset='${spec.cropOffset}' " +
                "(this reader implements 'half_even' and 'floor')"
        }
        require(spec.interpolation in PilResample.SUPPORTED) {
            "unsupported input spec: interpolation '${spec.interpolation}' (supported: ${PilResample.SUPPORTED.joinToString()})"
        }
        require(spec.layout == "NCHW" && spec.color == "RGB" && spec.dtype == "float32") {
            "unsupported input spec: layout ${spec.layout}, color ${spec.color}, dtype ${spec.dtype} (this reader makes NCHW RGB float32)"
        }
        require(spec.size in 1..Limits.MAX_INPUT_SIZE) { "unsupported input spec: size ${spec.size} (1 to ${Limits.MAX_INPUT_SIZE})" }
    }

    /** Side S of the square input. */
    val size: Int get() = spec.size

    /** ARGB pixels ([width] x [height]) -> model input (1, 3, S, S) float32, NCHW. */
    fun preprocess(argb: IntArray, width: Int, height: Int): FloatArray = toInput(resizeAndCrop(argb, width, height))

    /**
     * ARGB pixels -> the resized, centre-cropped S x S image as packed `0xRRGGBB` ints (what the
     * model sees, before scaling to floats). Images smaller than S are upsampled, as in Python.
     */
    fun resizeAndCrop(argb: IntArray, width: Int, height: Int): IntArray {
        require(width > 0 && height > 0) { "image must have a positive size; got ${width}x$height" }
        require(width.toLong() * height <= MAX_IMAGE_PIXELS) {
            "${width}x$height exceeds $MAX_IMAGE_PIXELS pixels (the decompression-bomb limit of the Python runtime)"
        }
        require(argb.size >= width * height) { "expected ${width * height} ARGB pixels for ${width}x$height; got ${argb.size}" }
        val rgb = toRgb(argb, width * height)
        val s = spec.size
        if (width == s && height == s) return rgb
        val (nw, nh, left, top) = plan(width, height, s)
        val resized = if (nw != width || nh != height) {
            PilResample.resize(rgb, width, height, nw, nh, spec.interpolation)
        } else {
            rgb
        }
        val out = IntArray(s * s)
        for (y in 0 until s) System.arraycopy(resized, (top + y) * nw + left, out, y * s, s)
        return out
    }

    /** Packed RGB S x S -> (1, 3, S, S) float32 in value_range (normalised when not in the graph). */
    fun toInput(rgb: IntArray): FloatArray {
        val s = spec.size
        val plane = s * s
        require(rgb.size == plane) { "expected $plane pixels; got ${rgb.size}" }
        val lo = spec.valueRange.first
        val step = ((spec.valueRange.second - lo) / 255.0).toFloat()
        val loF = lo.toFloat()
        val out = FloatArray(3 * plane)
        for (c in 0 until 3) {
            val shift = 16 - 8 * c
            val mean = spec.mean[c].toFloat()
            val std = spec.std[c].toFloat()
            for (i in 0 until plane) {
                var v = ((rgb[i] ushr shift) and 0xFF).toFloat() * step + loF
                if (!spec.normalizationInGraph) v = (v - mean) / std
                out[c * plane + i] = v
            }
        }
        return out
    }

    companion object {
        /**
         * The manifest's geometry (resize_rounding "half_even", crop_offset "floor"), as Python's
         * `resize_plan`: [NW, NH, left, top] for a [width] x [height] image and side [s].
         * scale = s / min(w, h); NW = max(s, rint(w * scale)) (ties to even, as Python's round());
         * left = floor((NW - s) / 2) (non-negative, so integer division).
         */
        fun plan(width: Int, height: Int, s: Int): List<Int> {
            if (width == s && height == s) return listOf(s, s, 0, 0)
            val scale = s.toDouble() / min(width, height)
            val nw = maxOf(s, Math.rint(width * scale).toInt())
            val nh = maxOf(s, Math.rint(height * scale).toInt())
            return listOf(nw, nh, (nw - s) / 2, (nh - s) / 2)
        }

        /** The Python runtime's limit on decoded pixels. */
        const val MAX_IMAGE_PIXELS = 16_000L * 16_000L

        /**
         * ARGB -> packed RGB; a pixel with alpha < 255 is composited over opaque white with
         * Pillow's integer `alpha_composite` arithmetic (so the result equals Python's `to_rgb`).
         */
        fun toRgb(argb: IntArray, n: Int): IntArray = IntArray(n) { i ->
            val p = argb[i]
            val a = p ushr 24
            when (a) {
                255 -> p and 0xFFFFFF
                0 -> 0xFFFFFF
                else -> {
                    val blend = 255 * (255 - a)
                    val outa255 = a * 255 + blend
                    val coef1 = a * 255 * 255 * 128 / outa255
                    val coef2 = 255 * 128 - coef1
                    fun ch(v: Int): Int {
                        val t = v * coef1 + 255 * coef2 + (0x80 shl 7)
                        return (((t ushr 8) + t) ushr 8) ushr 7
                    }
                    (ch((p ushr 16) and 0xFF) shl 16) or (ch((p ushr 8) and 0xFF) shl 8) or ch(p and 0xFF)
                }
            }
        }
    }
}
