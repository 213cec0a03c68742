package ai.ammkd.core

import org.json.JSONArray
import org.json.JSONObject
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assumptions.assumeTrue
import org.junit.jupiter.api.Test
import java.io.File
import javax.imageio.ImageIO

/**
 * Latency of the Kotlin core on this JVM (benchmarks/android_core.py runs it and puts the figures
 * next to the Python runtime's). Skipped unless `-Dammkd.bench.out=FILE` is given, so the ordinary
 * test run never pays for it.
 *
 *   mvn -q -B -f android_demo/core/pom.xml test -Dtest=BenchmarkTest -Dsurefire.failIfNoSpecifiedTests=false \
 *       -Dammkd.bundle=BUNDLE -Dammkd.bench.images=LIST -Dammkd.bench.out=OUT.json [-Dammkd.bench.runs=100]
 *
 * The bundle is opened with 1 ONNX Runtime thread (its unquantized ONNX encoder, as the app does).
 * (a) Per image of `ammkd.bench.images` (one path per line): end to end = decode the file with
 *     javax.imageio to ARGB -> [Retriever.topTexts] (preprocess -> encode -> top-10), and each stage.
 * (b) Search alone: [ClassIndex.topK] (scores over every class vector, then the top-10) for each
 *     golden embedding of the bundle.
 * Each measurement: `ammkd.bench.warmup` (default 10) untimed runs, then `ammkd.bench.runs` timed
 * runs, System.nanoTime; median / p90 / min / max ms written as JSON to `ammkd.bench.out`.
 */
class BenchmarkTest {
    private fun prop(name: String): String? =
        System.getProperty(name)?.trim()?.takeIf { it.isNotEmpty() && !it.startsWith("\${") }

    private fun ms(from: Long, to: Long) = (to - from) / 1e6

    /** median, p90 (linear interpolation, as NumPy's percentile), min, max of [xs] in ms. */
    private fun stats(xs: DoubleArray): JSONObject {
        val s = xs.sortedArray()
        fun pct(p: Double): Double {
            val pos = p / 100 * (s.size - 1)
            val lo = Math.floor(pos).toInt()
            val hi = minOf(lo + 1, s.size - 1)
            return s[lo] + (s[hi] - s[lo]) * (pos - lo)
        }
        fun r(x: Double) = Math.round(x * 1e4) / 1e4
        return JSONObject()
            .put("median_ms", r(pct(50.0)))
            .put("p90_ms", r(pct(90.0)))
            .put("min_ms", r(s.first()))
            .put("max_ms", r(s.last()))
            .put("runs", s.size)
    }

    private fun decode(file: File): Triple<IntArray, Int, Int> =
        TestInputs.toArgb(ImageIO.read(file) ?: throw IllegalArgumentException("${file.path}: javax.imageio cannot decode it"))

    @Test
    fun `latency of the Kotlin core`() {
        val out = prop("ammkd.bench.out")
        assumeTrue(out != null, "benchmark skipped: -Dammkd.bench.out is not set")
        val bundleDir = File(prop("ammkd.bundle") ?: error("-Dammkd.bundle=BUNDLE_DIR is required with -Dammkd.bench.out"))
        val list = File(prop("ammkd.bench.images") ?: error("-Dammkd.bench.images=FILE (one image path a line) is required"))
        val runs = prop("ammkd.bench.runs")?.toInt() ?: 100
        val warmup = prop("ammkd.bench.warmup")?.toInt() ?: 10
        val k = prop("ammkd.bench.k")?.toInt() ?: 10
        require(runs >= 1 && warmup >= 0 && k >= 1) { "runs $runs, warmup $warmup, k $k" }
        val images = list.readLines().map { it.trim() }.filter { it.isNotEmpty() }.map { File(it) }
        assertTrue(images.isNotEmpty(), "${list.path} lists no images")

        val t0 = System.nanoTime()
        Retriever.open(bundleDir, threads = 1).use { r ->
            val openMs = ms(t0, System.nanoTime())
            val imageRows = JSONArray()
            for (file in images) {
                val e2e = DoubleArray(runs)
                val dec = DoubleArray(runs)
                val pre = DoubleArray(runs)
                val enc = DoubleArray(runs)
                val sea = DoubleArray(runs)
                var last: Retriever.TextResults? = null
                var size = 0 to 0
                for (i in -warmup until runs) {
                    val a = System.nanoTime()
                    val (argb, w, h) = decode(file)
                    val b = System.nanoTime()
                    val res = r.topTexts(argb, w, h, k)
                    val c = System.nanoTime()
                    if (i >= 0) {
                        e2e[i] = ms(a, c)
                        dec[i] = ms(a, b)
                        pre[i] = res.timings.preprocessMs
                        enc[i] = res.timings.encodeMs
                        sea[i] = res.timings.searchMs
                    }
                    last = res
                    size = w to h
                }
                val decPre = DoubleArray(runs) { dec[it] + pre[it] }
                val row = JSONObject()
                    .put("path", file.path)
                    .put("width", size.first)
                    .put("height", size.second)
                    .put("end_to_end", stats(e2e))
                    .put("decode", stats(dec))
                    .put("preprocess", stats(pre))
                    .put("decode_preprocess", stats(decPre))
                    .put("encode", stats(enc))
                    .put("search", stats(sea))
                    .put("topk_ids", JSONArray(last!!.hits.map { it.id }))
                imageRows.put(row)
                println("[ammkd-bench] ${file.name} ${size.first}x${size.second}: end to end ${row.getJSONObject("end_to_end")}")
            }

            val index = r.index
            val goldens = r.bundle.golden.map { r.bundle.readFloats(it.embedding) }
            assertTrue(goldens.isNotEmpty(), "the bundle has no golden embeddings")
            val all = ArrayList<Double>()
            val perEmbedding = JSONArray()
            for ((gi, q) in goldens.withIndex()) {
                val t = DoubleArray(runs)
                var ids: List<Int> = emptyList()
                for (i in -warmup until runs) {
                    val a = System.nanoTime()
                    val hits = index.topK(q, k)
                    val b = System.nanoTime()
                    if (i >= 0) t[i] = ms(a, b)
                    ids = hits.map { it.id }
                }
                all.addAll(t.asList())
                perEmbedding.put(JSONObject().put("golden", gi).put("stats", stats(t)).put("topk_ids", JSONArray(ids)))
            }
            val search = JSONObject()
                .put("count", index.count)
                .put("dim", index.dim)
                .put("k", k)
                .put("stats", stats(all.toDoubleArray()))
                .put("per_embedding", perEmbedding)
            println("[ammkd-bench] search alone over ${index.count} x ${index.dim}: ${search.getJSONObject("stats")}")

            val rt = Runtime.getRuntime()
            val report = JSONObject()
                .put("bundle", bundleDir.path)
                .put("runs", runs)
                .put("warmup", warmup)
                .put("k", k)
                .put("threads", 1)
                .put("encoder", r.encoder.target.label)
                .put("open_ms", Math.round(openMs * 10) / 10.0)
                .put("images", imageRows)
                .put("search_alone", search)
                .put(
                    "jvm",
                    JSONObject()
                        .put("java.version", System.getProperty("java.version"))
                        .put("java.vm.name", System.getProperty("java.vm.name"))
                        .put("java.vm.version", System.getProperty("java.vm.version"))
                        .put("available_processors", rt.availableProcessors())
                        .put("max_heap_mib", rt.maxMemory() / (1 shl 20))
                        .put("kotlin", KotlinVersion.CURRENT.toString()),
                )
            File(out!!).apply { parentFile?.mkdirs() }.writeText(report.toString(2))
        }
    }
}
