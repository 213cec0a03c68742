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
        )) {
            val e = assertThrows(IllegalArgumentException::class.java) { Preprocessor(bad) }
            assertTrue(e.message!!.contains("unsupported input spec") && e.message!!.contains(word), e.message)
        }
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
