package ai.ammkd.core

import kotlin.math.ceil

/**
 * Pillow's `Image.resize` (Pillow 13) for 8-bit RGB, reimplemented so that the app's pixels equal the ones
 * the model was validated on (Pillow's src/libImaging/Resample.c and Geometry.c).
 *
 * Images are packed `0xRRGGBB` ints, row-major, `width * height` long.
 * - bicubic (a = -0.5, support 2) and bilinear (support 1): ImagingResample: separable, one
 *   pass per side that changes, in Pillow 13's order (see [resample]); the filter support
 *   is scaled by the downscale factor (antialiasing), weights are normalised to sum 1 and
 *   quantised to 22-bit fixed point; every pass rounds and clips to uint8.
 * - nearest: Pillow's affine scaling, source pixel = floor((x + 0.5) * in / out).
 */
object PilResample {
    private const val PRECISION_BITS = 32 - 8 - 2

    /** Interpolations this implementation supports (the manifest's `interpolation`). */
    val SUPPORTED = listOf("bicubic", "bilinear", "nearest")

    /** Resize [src] ([width] x [height], packed RGB) to [outWidth] x [outHeight] with [interpolation]. */
    fun resize(src: IntArray, width: Int, height: Int, outWidth: Int, outHeight: Int, interpolation: String): IntArray {
        require(width > 0 && height > 0 && outWidth > 0 && outHeight > 0) {
            "resize: sizes must be positive (${width}x$height -> ${outWidth}x$outHeight)"
        }
        require(src.size >= width * height) { "resize: ${src.size} pixels for a ${width}x$height image" }
        if (width == outWidth && height == outHeight) return src.copyOf(width * height)
        return when (interpolation) {
            "nearest" -> nearest(src, width, height, outWidth, outHeight)
            "bicubic" -> resample(src, width, height, outWidth, outHeight, 2.0, ::bicubic)
            "bilinear" -> resample(src, width, height, outWidth, outHeight, 1.0, ::bilinear)
            else -> throw IllegalArgumentException(
                "unsupported interpolation '$interpolation' (supported: ${SUPPORTED.joinToString()})",
            )
        }
    }

    private fun bicubic(x0: Double): Double {
        val a = -0.5
        val x = if (x0 < 0.0) -x0 else x0
        if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
        if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a
        return 0.0
    }

    private fun bilinear(x0: Double): Double {
        val x = if (x0 < 0.0) -x0 else x0
        return if (x < 1.0) 1.0 - x else 0.0
    }

    /** Per output pixel: first input index, count, and [ksize] fixed-point weights. */
    private class Coeffs(val ksize: Int, val bounds: IntArray, val weights: IntArray)

    /** Pillow's precompute_coeffs + normalize_coeffs_8bpc for the box (0, inSize). */
    private fun coeffs(inSize: Int, outSize: Int, filterSupport: Double, filter: (Double) -> Double): Coeffs {
        val scale = inSize.toFloat().toDouble() / outSize
        val filterScale = if (scale < 1.0) 1.0 else scale
        val support = filterSupport * filterScale
        val ksize = ceil(support).toInt() * 2 + 1
        val kk = DoubleArray(outSize * ksize)
        val bounds = IntArray(outSize * 2)
        val ss = 1.0 / filterScale
        for (xx in 0 until outSize) {
            val center = 0.0 + (xx + 0.5) * scale
            var ww = 0.0
            var xmin = (center - support + 0.5).toInt()
            if (xmin < 0) xmin = 0
            var xmax = (center + support + 0.5).toInt()
            if (xmax > inSize) xmax = inSize
            xmax -= xmin
            val base = xx * ksize
            for (x in 0 until xmax) {
                val w = filter((x + xmin - center + 0.5) * ss)
                kk[base + x] = w
                ww += w
            }
            if (ww != 0.0) for (x in 0 until xmax) kk[base + x] /= ww
            bounds[xx * 2] = xmin
            bounds[xx * 2 + 1] = xmax
        }
        val one = (1 shl PRECISION_BITS).toDouble()
        val weights = IntArray(kk.size) { i ->
            val p = kk[i]
            if (p < 0) (-0.5 + p * one).toInt() else (0.5 + p * one).toInt()
        }
        return Coeffs(ksize, bounds, weights)
    }

    private fun clip8(v: Int): Int {
        val s = v shr PRECISION_BITS
        return if (s < 0) 0 else if (s > 255) 255 else s
    }

    /**
     * Pillow's ImagingResampleInner for RGB. Each pass runs only when its side changes. Pillow 13
     * orders them: vertical first when the height shrinks by more than twice as many pixels as
     * the width (`h - outH > 0 && h - outH > (w - outW) * 2`), else horizontal first; the order
     * changes the uint8 rounding between the passes, so it is kept exactly.
     */
    private fun resample(
        src: IntArray, width: Int, height: Int, outW: Int, outH: Int,
        support: Double, filter: (Double) -> Double,
    ): IntArray {
        val needH = outW != width
        val needV = outH != height
        val horizontalFirst = !((height - outH) > 0 && (height - outH) > (width - outW) * 2)
        if (horizontalFirst) {
            var img = src
            val vert = if (needV) coeffs(height, outH, support, filter) else null
            if (needH) {
                // only the source rows the vertical pass will read
                val yFirst = vert?.bounds?.get(0) ?: 0
                val yLast = vert?.let { it.bounds[outH * 2 - 2] + it.bounds[outH * 2 - 1] } ?: height
                vert?.let { v -> for (i in 0 until outH) v.bounds[i * 2] -= yFirst }
                img = horizontalPass(img, width, yLast - yFirst, yFirst, outW, coeffs(width, outW, support, filter))
            }
            return if (vert != null) verticalPass(img, outW, outH, vert) else img
        }
        var img = src
        if (needV) img = verticalPass(img, width, outH, coeffs(height, outH, support, filter))
        if (needH) img = horizontalPass(img, width, outH, 0, outW, coeffs(width, outW, support, filter))
        return img
    }

    /** Rows [offset, offset + rows) of [src] ([srcW] wide) resampled to [outW] wide: (outW x rows). */
    private fun horizontalPass(src: IntArray, srcW: Int, rows: Int, offset: Int, outW: Int, c: Coeffs): IntArray {
        val out = IntArray(outW * rows)
        val half = 1 shl (PRECISION_BITS - 1)
        for (yy in 0 until rows) {
            val rowIn = (yy + offset) * srcW
            for (xx in 0 until outW) {
                val xmin = c.bounds[xx * 2]
                val xmax = c.bounds[xx * 2 + 1]
                val kb = xx * c.ksize
                var r = half
                var g = half
                var b = half
                for (x in 0 until xmax) {
                    val p = src[rowIn + xmin + x]
                    val k = c.weights[kb + x]
                    r += ((p ushr 16) and 0xFF) * k
                    g += ((p ushr 8) and 0xFF) * k
                    b += (p and 0xFF) * k
                }
                out[yy * outW + xx] = (clip8(r) shl 16) or (clip8(g) shl 8) or clip8(b)
            }
        }
        return out
    }

    /** [src] ([w] wide) resampled vertically to [outH] rows, row bounds from [c]: (w x outH). */
    private fun verticalPass(src: IntArray, w: Int, outH: Int, c: Coeffs): IntArray {
        val out = IntArray(w * outH)
        val half = 1 shl (PRECISION_BITS - 1)
        for (yy in 0 until outH) {
            val ymin = c.bounds[yy * 2]
            val ymax = c.bounds[yy * 2 + 1]
            val kb = yy * c.ksize
            for (xx in 0 until w) {
                var r = half
                var g = half
                var b = half
                for (y in 0 until ymax) {
                    val p = src[(y + ymin) * w + xx]
                    val k = c.weights[kb + y]
                    r += ((p ushr 16) and 0xFF) * k
                    g += ((p ushr 8) and 0xFF) * k
                    b += (p and 0xFF) * k
                }
                out[yy * w + xx] = (clip8(r) shl 16) or (clip8(g) shl 8) or clip8(b)
            }
        }
        return out
    }

    /** Pillow's nearest resize (ImagingScaleAffine): accumulated source coordinates, truncated. */
    private fun nearest(src: IntArray, width: Int, height: Int, outW: Int, outH: Int): IntArray {
        val a0 = width.toFloat().toDouble() / outW
        val a4 = height.toFloat().toDouble() / outH
        val xin = IntArray(outW)
        var xo = 0.0 + a0 * 0.5
        for (x in 0 until outW) {
            xin[x] = if (xo < 0.0) -1 else xo.toInt()
            xo += a0
        }
        val out = IntArray(outW * outH)
        var yo = 0.0 + a4 * 0.5
        for (y in 0 until outH) {
            val yi = if (yo < 0.0) -1 else yo.toInt()
            if (yi in 0 until height) {
                for (x in 0 until outW) {
                    val xi = xin[x]
                    if (xi in 0 until width) out[y * outW + x] = src[yi * width + xi]
                }
            }
            yo += a4
        }
        return out
    }
}
