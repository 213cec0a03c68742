package ai.ammkd.core

import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assertions.fail
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.json.JSONObject
import java.io.ByteArrayInputStream
import javax.imageio.ImageIO

/**
 * The bundle's golden pairs through the Kotlin core: preprocessing of each golden PNG against
 * the stored input tensor, ONNX Runtime Java against the stored (PyTorch) embedding and the
 * Python runtime's, and the top-k ids against the Python runtime's.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class GoldenTest {
    private lateinit var retriever: Retriever
    private val bundle get() = retriever.bundle

    @BeforeAll
    fun open() {
        retriever = Retriever.open(TestInputs.bundleDir, threads = 1)
        TestInputs.report("load_ms", "%.1f".format(retriever.loadMs).toDouble())
        assertTrue(bundle.golden.isNotEmpty(), "${bundle.manifestPath}: the bundle has no golden pairs")
    }

    @AfterAll
    fun close() {
        if (::retriever.isInitialized) retriever.close()
    }

    private fun goldenPixels(g: Bundle.Golden): Triple<IntArray, Int, Int> {
        val img = ImageIO.read(ByteArrayInputStream(bundle.readBytes(g.image))) // hash-checked bytes
            ?: fail("${bundle.where(g.image)}: javax.imageio cannot decode it")
        return TestInputs.toArgb(img)
    }

    private fun pythonGolden(i: Int): JSONObject = TestInputs.expected.getJSONArray("golden").getJSONObject(i)

    @Test
    fun `preprocessing each golden PNG gives the golden input tensor`() {
        val bound = 1.0 / 255 + 1e-6
        var worst = 0.0
        var equal = 0L
        var total = 0L
        for (g in bundle.golden) {
            val (argb, w, h) = goldenPixels(g)
            val x = retriever.preprocessor.preprocess(argb, w, h)
            val want = bundle.readFloats(g.input)
            assertEquals(want.size, x.size, "${g.input.path}: shape")
            val d = TestInputs.maxAbsDiff(x, want)
            println("[ammkd-core] ${g.image.path} (${w}x$h): max |kotlin - golden input| = $d")
            assertTrue(d <= bound, "${g.image.path}: max abs diff $d > bound $bound")
            worst = maxOf(worst, d)
            equal += x.indices.count { x[it] == want[it] }
            total += x.size
        }
        TestInputs.report("preprocess_golden_max_abs_diff", worst)
        TestInputs.report("preprocess_golden_values_identical", "$equal/$total")
    }

    @Test
    fun `ONNX Runtime Java embeds the golden inputs like PyTorch and the Python runtime`() {
        var minGolden = 1.0
        var minPython = 1.0
        bundle.golden.forEachIndexed { i, g ->
            val emb = retriever.encoder.embed(bundle.readFloats(g.input))
            val cGolden = TestInputs.cosine(emb, bundle.readFloats(g.embedding))
            val py = pythonGolden(i).getJSONArray("python_embedding").let { a -> FloatArray(a.length()) { a.getFloat(it) } }
            val (argb, w, h) = goldenPixels(g)
            val fromPng = retriever.embed(argb, w, h).first
            val cPython = TestInputs.cosine(fromPng, py)
            println("[ammkd-core] ${g.image.path}: cosine vs golden (PyTorch) $cGolden, vs Python ONNX Runtime $cPython")
            assertTrue(cGolden >= 0.999, "${g.embedding.path}: cosine $cGolden < 0.999")
            assertTrue(cPython >= 0.999, "${g.image.path}: cosine to the Python runtime's embedding $cPython < 0.999")
            minGolden = minOf(minGolden, cGolden)
            minPython = minOf(minPython, cPython)
        }
        TestInputs.report("encoder_cosine_min_vs_golden", minGolden)
        TestInputs.report("encoder_cosine_min_vs_python_ort", minPython)
    }

    @Test
    fun `top-k texts of the golden images equal the Python runtime's`() {
        val k = TestInputs.expected.getInt("k")
        var exact = 0
        var swaps = 0
        var positions = 0
        val timings = mutableListOf<Retriever.Timings>()
        bundle.golden.forEachIndexed { i, g ->
            val (argb, w, h) = goldenPixels(g)
            val res = retriever.topTexts(argb, w, h, k)
            timings += res.timings
            val py = pythonGolden(i)
            val a = Agreement.check(
                res.hits.map { it.id }, res.hits.map { it.score },
                py.getJSONArray("python_topk_ids").let { ids -> List(ids.length()) { ids.getInt(it) } },
                py.getJSONArray("python_topk_scores").let { s -> List(s.length()) { s.getDouble(it) } },
                k, what = g.image.path,
            )
            println("[ammkd-core] ${g.image.path}: kotlin top-$k ${res.hits.map { it.id }}, ${a.exact}/$k positions identical; ${res.timings}")
            exact += a.exact
            swaps += a.nearTieSwaps
            positions += k
        }
        TestInputs.report("topk_golden_images", bundle.golden.size)
        TestInputs.report("topk_positions", positions)
        TestInputs.report("topk_agreement_exact", exact)
        TestInputs.report("topk_agreement_near_tie_swaps", swaps)
        TestInputs.report("timings_ms_last_image", timings.last().toString())
    }

    @Test
    fun `index search of the golden embeddings gives the manifest's top-k ids`() {
        for (g in bundle.golden) {
            val hits = retriever.index.topK(bundle.readFloats(g.embedding), g.topkIds.size).map { it.id }
            assertEquals(g.topkIds, hits, "${g.embedding.path}: top-k ids of the stored embedding")
        }
    }

    @Test
    fun `every ONNX Runtime target of the bundle loads with its session config and agrees`() {
        val bounds = mapOf("float32" to 0.999, "float16" to 0.995)
        val misses = bundle.manifest.optJSONArray("parity_misses")?.join("\n").orEmpty()
        val seen = mutableListOf<String>()
        for (t in bundle.targets.filter { it.format in OnnxImageEncoder.FORMATS }) {
            OnnxImageEncoder.open(bundle, 1, t.format, t.quantization).use { enc ->
                val bound = bounds[t.dtype] ?: 0.98
                for (g in bundle.golden) {
                    val c = TestInputs.cosine(enc.embed(bundle.readFloats(g.input)), bundle.readFloats(g.embedding))
                    if (misses.contains(t.label) && c < bound) continue // exported with --allow-degraded; recorded there
                    assertTrue(c >= bound, "${t.label}: cosine $c < $bound on ${g.input.path}")
                }
                seen += "${t.label}${if (t.sessionConfig.isEmpty()) "" else " ${t.sessionConfig}"}"
            }
        }
        TestInputs.report("onnx_targets_checked", seen.joinToString("; "))
    }
}
