package ai.ammkd.core

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import java.io.File

/**
 * Pillow's resize reimplemented: images of many sizes, interpolations and modes (written by the
 * Python test with the Python runtime's input tensor for each) must give the same tensor.
 */
class PreprocessCasesTest {
    @Test
    fun `Kotlin preprocessing equals the Python runtime's on every case`() {
        val cases = TestInputs.expected.getJSONArray("preprocess_cases")
        assertTrue(cases.length() > 0, "the expectations hold no preprocessing cases")
        val bound = 1.0 / 255 + 1e-6
        var worst = 0.0
        var equal = 0L
        var total = 0L
        for (i in 0 until cases.length()) {
            val c = cases.getJSONObject(i)
            val spec = InputSpec.fromJson(c.getJSONObject("spec"), "case ${c.getString("name")}")
            val (argb, w, h) = TestInputs.decodePng(File(c.getString("png")))
            val x = Preprocessor(spec).preprocess(argb, w, h)
            val want = TestInputs.readF32(File(c.getString("input")))
            assertEquals(want.size, x.size, "${c.getString("name")}: tensor size")
            val d = TestInputs.maxAbsDiff(x, want)
            val same = x.indices.count { x[it] == want[it] }
            println("[ammkd-core] case ${c.getString("name")} ${w}x$h -> ${spec.size} ${spec.interpolation}: max abs diff $d, $same/${x.size} identical")
            assertTrue(d <= bound, "${c.getString("name")}: max abs diff $d > $bound")
            worst = maxOf(worst, d)
            equal += same
            total += x.size
        }
        TestInputs.report("preprocess_cases", cases.length())
        TestInputs.report("preprocess_cases_max_abs_diff", worst)
        TestInputs.report("preprocess_cases_values_identical", "$equal/$total")
    }

    @Test
    fun `unsupported resize, crop and interpolation are refused with a clear message`() {
        val spec = InputSpec(size = 32)
        for ((bad, word) in listOf(
            spec.copy(interpolation = "lanczos") to "lanczos",
            spec.copy(resize = "longest_side") to "longest_side",
            spec.copy(crop = "top_left") to "top_left",
            spec.copy(layout = "NHWC") to "NHWC",
            spec.copy(resizeRounding = "half_up") to "half_up",
            spec.copy(cropOffset = "round") to "round",
        )) {
            val e = assertThrows(IllegalArgumentException::class.java) { Preprocessor(bad) }
            assertTrue(e.message!!.contains("unsupported input spec") && e.message!!.contains(word), e.message)
        }
    }

    @Test
    fun `the resize and crop geometry is the manifest's rule, as Python computes it`() {
        // every [w, h, s, nw, nh, left, top] the Python test wrote (resize_plan), ties included
        val plans = TestInputs.expected.getJSONArray("geometry_plans")
        assertTrue(plans.length() > 0, "the expectations hold no geometry plans")
        for (i in 0 until plans.length()) {
            val c = plans.getJSONArray(i)
            val (w, h, s) = Triple(c.getInt(0), c.getInt(1), c.getInt(2))
            val want = List(4) { c.getInt(3 + it) }
            assertEquals(want, Preprocessor.plan(w, h, s), "${w}x$h -> $s: [nw, nh, left, top]")
        }
        TestInputs.report("geometry_plans", plans.length())
        // a manifest written before resize_rounding / crop_offset existed means the same rule
        val old = InputSpec.fromJson(org.json.JSONObject("""{"size": 64}"""), "old manifest")
        assertEquals("half_even" to "floor", old.resizeRounding to old.cropOffset)
        val now = InputSpec.fromJson(
            org.json.JSONObject("""{"size": 64, "resize_rounding": "half_even", "crop_offset": "floor"}"""), "manifest",
        )
        assertEquals(old, now)
    }

    @Test
    fun `tiny, thin and empty images never crash`() {
        val p = Preprocessor(InputSpec(size = 16))
        for ((w, h) in listOf(1 to 1, 1 to 300, 300 to 1, 15 to 16, 16 to 16)) {
            assertEquals(3 * 16 * 16, p.preprocess(IntArray(w * h) { 0xFF336699.toInt() }, w, h).size)
        }
        assertThrows(IllegalArgumentException::class.java) { p.preprocess(IntArray(0), 0, 5) }
        assertThrows(IllegalArgumentException::class.java) { p.preprocess(IntArray(3), 2, 2) }
    }
}
