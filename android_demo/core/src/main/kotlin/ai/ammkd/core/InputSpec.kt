package ai.ammkd.core

import org.json.JSONObject

/**
 * How a photo becomes the encoder input, from the manifest's `input` object: convert to RGB,
 * resize the shorter side to [size] px (aspect kept) with [interpolation] (PIL semantics),
 * centre-crop to [size]x[size], scale uint8 to [valueRange], and subtract [mean] / divide by
 * [std] only when [normalizationInGraph] is false. Layout NCHW float32, shape (1, 3, size, size).
 *
 * The geometry ([resizeRounding] "half_even", [cropOffset] "floor", the only values, and what a
 * manifest without these keys means): a W x H image that is not S x S is resized to
 * NW = max(S, rint(W * (S / min(W, H)))), NH likewise, in double precision with ties to even
 * ([Math.rint]), and the crop starts at left = floor((NW - S) / 2), top = floor((NH - S) / 2).
 */
data class InputSpec(
    val size: Int,
    val resize: String = "shortest_side",
    val interpolation: String = "bicubic",
    val crop: String = "center",
    val resizeRounding: String = "half_even",
    val cropOffset: String = "floor",
    val valueRange: Pair<Double, Double> = 0.0 to 1.0,
    val mean: List<Double> = listOf(0.48145466, 0.4578275, 0.40821073),
    val std: List<Double> = listOf(0.26862954, 0.26130258, 0.27577711),
    val normalizationInGraph: Boolean = true,
    val layout: String = "NCHW",
    val color: String = "RGB",
    val dtype: String = "float32",
    val name: String = "image",
) {
    companion object {
        /**
         * Parse the manifest's `input` object; absent keys take the exporter's defaults. `size`
         * must be 1..[Limits.MAX_INPUT_SIZE] (it sizes the (1, 3, S, S) input tensor), checked here.
         */
        fun fromJson(o: JSONObject, where: String): InputSpec = try {
            val d = InputSpec(Limits.int(where, "input/size", o.opt("size"), 1, Limits.MAX_INPUT_SIZE.toLong()))
            fun doubles(key: String, default: List<Double>, n: Int): List<Double> {
                val a = o.optJSONArray(key) ?: return default
                if (a.length() != n) throw BundleException.Invalid(where, "invalid manifest at input/$key: ${a.length()} values, not $n")
                return List(n) { a.getDouble(it) }
            }
            val range = doubles("value_range", listOf(d.valueRange.first, d.valueRange.second), 2)
            InputSpec(
                size = d.size,
                resize = o.optString("resize", d.resize),
                interpolation = o.optString("interpolation", d.interpolation),
                crop = o.optString("crop", d.crop),
                resizeRounding = o.optString("resize_rounding", d.resizeRounding),
                cropOffset = o.optString("crop_offset", d.cropOffset),
                valueRange = range[0] to range[1],
                mean = doubles("mean", d.mean, 3),
                std = doubles("std", d.std, 3),
                normalizationInGraph = o.optBoolean("normalization_in_graph", d.normalizationInGraph),
                layout = o.optString("layout", d.layout),
                color = o.optString("color", d.color),
                dtype = o.optString("dtype", d.dtype),
                name = o.optString("name", d.name),
            )
        } catch (e: org.json.JSONException) {
            throw BundleException.Invalid(where, "bad input spec (${e.message})")
        }
    }
}
