package ai.ammkd.core

import org.json.JSONArray
import org.json.JSONObject
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assertions.fail
import org.junit.jupiter.api.Assumptions.assumeTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.io.TempDir
import java.io.File
import java.io.RandomAccessFile
import java.nio.file.Files

/**
 * Free-text search (the bundle's text side, docs/design.md §5.10) against the Python runtime.
 * Runs only when both are given (tests/android/test_kotlin_core.py
 * `test_kotlin_free_text_search_agrees_with_python` writes them and runs exactly this):
 *
 *   mvn -B -f android_demo/core/pom.xml test -Dtest=TextSearchTest -Dsurefire.failIfNoSpecifiedTests=false \
 *       -Dammkd.textBundle=BUNDLE_WITH_TEXT_SIDE_AND_GALLERY -Dammkd.textExpected=EXPECTED_JSON [-Dammkd.report=OUT.json] \
 *       [-Dammkd.textRuns=10] [-Dammkd.textWarmup=3]
 *
 * Per query of the expectations: the Kotlin token ids equal Python's; the fp32 text encoder's
 * embedding has cosine >= `cosine_bound` to Python's, and its top-k texts of the index and top-k
 * photos of the gallery equal Python's (a rank may differ only at a near-tie of Python's scores,
 * [Agreement]); each other variant (int8) is compared with Python's same variant (cosine, top-k
 * overlap). Each variant also runs the bundle's tokenizer kit, and its text-encode latency
 * (tokenize + encode, 1 thread, after warm-up) is measured. Then the refusals: empty,
 * whitespace-only and too long queries, damaged tokenizer files and models, a width other than the index's.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class TextSearchTest {
    @TempDir
    lateinit var tmp: File

    private lateinit var bundleDir: File
    private lateinit var expected: JSONObject
    private var retriever: Retriever? = null

    private fun prop(name: String): String? =
        System.getProperty(name)?.trim()?.takeIf { it.isNotEmpty() && !it.startsWith("\${") }

    @BeforeAll
    fun setUp() {
        val dir = prop("ammkd.textBundle")
        val exp = prop("ammkd.textExpected")
        assumeTrue(
            dir != null && exp != null,
            "free-text tests skipped: -Dammkd.textBundle and -Dammkd.textExpected are not set " +
                "(`.venv/bin/pytest -q tests/android/test_kotlin_core.py -k free_text` sets them)",
        )
        bundleDir = File(dir!!)
        assertTrue(File(bundleDir, "manifest.json").isFile, "-Dammkd.textBundle=$bundleDir is not a bundle folder")
        expected = JSONObject(File(exp!!).readText())
    }

    @AfterAll
    fun tearDown() {
        retriever?.close()
    }

    /** The retriever every agreement test shares: the bundle with its fp32 text encoder, 1 thread. */
    private fun fp32(): Retriever = retriever ?: Retriever.open(bundleDir, threads = 1, textQuantization = "none").also { retriever = it }

    private val k: Int get() = expected.getInt("k")
    private val queries: List<JSONObject> get() = expected.getJSONArray("queries").let { a -> List(a.length()) { a.getJSONObject(it) } }

    private fun ints(a: JSONArray): List<Int> = List(a.length()) { a.getInt(it) }
    private fun doubles(a: JSONArray): List<Double> = List(a.length()) { a.getDouble(it) }
    private fun floats(a: JSONArray): FloatArray = FloatArray(a.length()) { a.getDouble(it).toFloat() }

    /** [s] quoted, every code point outside printable ASCII written as \u{hex}. */
    private fun escaped(s: String): String = s.codePoints().toArray().joinToString("", "\"", "\"") { cp ->
        if (cp in 0x20..0x7E && cp != '\\'.code && cp != '"'.code) String(Character.toChars(cp)) else "\\u{%X}".format(cp)
    }

    @Test
    fun `the tokenizer gives Python's ids for every query and the kit's for every kit case`() {
        val bundle = Bundle.open(bundleDir)
        val tokenizer = TextSide.readTokenizer(bundle)
        val wrong = mutableListOf<String>()
        for (q in queries) {
            val text = q.getString("text")
            val want = ints(q.getJSONArray("ids"))
            val got = tokenizer.encode(text).toList()
            if (got != want) wrong += "${escaped(text)}:\n    python $want\n    kotlin $got"
        }
        assertTrue(wrong.isEmpty(), "${wrong.size} of ${queries.size} queries tokenized differently:\n" + wrong.joinToString("\n"))
        val spec = bundle.textEncoder!!
        val cases = (bundle.readJson(spec.kitCases) as JSONObject).getJSONArray("cases")
        var kitWrong = 0
        for (i in 0 until cases.length()) {
            val c = cases.getJSONObject(i)
            if (tokenizer.encode(c.getString("text")).toList() != ints(c.getJSONArray("ids"))) kitWrong++
        }
        assertEquals(0, kitWrong, "kit cases tokenized differently")
        TestInputs.report("text_queries", queries.size)
        TestInputs.report("text_token_ids_identical", "${queries.size}/${queries.size}")
        TestInputs.report("text_kit_cases", cases.length())
    }

    @Test
    fun `the fp32 text encoder embeds and ranks like the Python runtime`() {
        val r = fp32()
        assertTrue(r.hasTextEncoder, "$bundleDir has no text side")
        val g = r.gallery ?: fail("$bundleDir/gallery: expected the gallery Python built")
        assertEquals(expected.getJSONObject("gallery").getInt("count"), g.count)
        val bound = expected.getDouble("cosine_bound")
        val rows = expected.getJSONObject("variants").getJSONObject("none").getJSONArray("queries")
        var cosMin = 1.0
        var indexExact = 0
        var indexSwaps = 0
        var galleryExact = 0
        var gallerySwaps = 0
        var indexQueriesIdentical = 0
        var galleryQueriesIdentical = 0
        for ((i, q) in queries.withIndex()) {
            val text = q.getString("text")
            val py = rows.getJSONObject(i)
            val what = "query ${escaped(text)}"
            val emb = r.embedText(text)
            val cos = TestInputs.cosine(emb, floats(py.getJSONArray("embedding")))
            assertTrue(cos >= bound, "$what: cosine to Python's embedding $cos < $bound")
            cosMin = minOf(cosMin, cos)

            val texts = r.searchTexts(text, k)
            assertTrue(texts.query.byTextEncoder && texts.query.textId == null, "$what: not embedded by the text encoder")
            val pyIndex = ints(py.getJSONArray("index_ids"))
            val a = Agreement.check(texts.hits.map { it.id }, texts.hits.map { it.score }, pyIndex, doubles(py.getJSONArray("index_scores")), k, "$what, index")
            indexExact += a.exact
            indexSwaps += a.nearTieSwaps
            if (a.exact == k) indexQueriesIdentical++
            assertEquals(texts.hits.map { r.index.texts[it.id] }, texts.hits.map { it.text })
            if (q.getBoolean("in_index")) {
                assertEquals(r.index.texts.indexOf(text), texts.hits[0].id, "$what: an index text's nearest text is itself")
            }

            val photos = r.topImages(text, k)
            assertTrue(photos.byTextEncoder, "$what: gallery query not embedded by the text encoder")
            assertNull(photos.textId)
            val b = Agreement.check(
                photos.hits.map { it.id }, photos.hits.map { it.score },
                ints(py.getJSONArray("gallery_ids")), doubles(py.getJSONArray("gallery_scores")), k, "$what, gallery",
            )
            galleryExact += b.exact
            gallerySwaps += b.nearTieSwaps
            if (b.exact == k) galleryQueriesIdentical++
            println("[ammkd-core] text ${escaped(text).take(60)}: texts ${texts.hits.take(3).map { it.id }}, photos ${photos.hits.take(3).map { it.image }}")
        }
        val n = queries.size
        TestInputs.report("text_fp32_cosine_min_vs_python", cosMin)
        TestInputs.report("text_fp32_index_topk_positions_identical", "$indexExact/${n * k}")
        TestInputs.report("text_fp32_index_topk_near_tie_swaps", indexSwaps)
        TestInputs.report("text_fp32_index_topk_queries_identical", "$indexQueriesIdentical/$n")
        TestInputs.report("text_fp32_gallery_topk_positions_identical", "$galleryExact/${n * k}")
        TestInputs.report("text_fp32_gallery_topk_near_tie_swaps", gallerySwaps)
        TestInputs.report("text_fp32_gallery_topk_queries_identical", "$galleryQueriesIdentical/$n")
        TestInputs.report("text_k", k)
    }

    /** median, p90 (linear interpolation, as NumPy's percentile) of [xs] in ms, rounded to 0.1 µs. */
    private fun pct(xs: DoubleArray, p: Double): Double {
        val s = xs.sortedArray()
        val pos = p / 100 * (s.size - 1)
        val lo = Math.floor(pos).toInt()
        val hi = minOf(lo + 1, s.size - 1)
        return Math.round((s[lo] + (s[hi] - s[lo]) * (pos - lo)) * 1e4) / 1e4
    }

    private fun overlap(a: List<Int>, b: List<Int>): Int = a.take(k).toSet().intersect(b.take(k).toSet()).size

    @Test
    fun `every text encoder variant agrees with Python's and its encode latency is measured`() {
        val bundle = Bundle.open(bundleDir)
        val variants = expected.getJSONObject("variants")
        assertEquals(bundle.textEncoder!!.quantizations.toSet(), variants.keySet(), "text encoder variants of the bundle")
        val runs = prop("ammkd.textRuns")?.toInt() ?: 10
        val warmup = prop("ammkd.textWarmup")?.toInt() ?: 3
        require(runs >= 1 && warmup >= 0)
        val kitCases = (bundle.readJson(bundle.textEncoder!!.kitCases) as JSONObject).getJSONArray("cases")
        val kitEmb = bundle.readFloats(bundle.textEncoder!!.kitEmbeddings)
        val fp32Rows = variants.getJSONObject("none").getJSONArray("queries")
        val summary = JSONObject()
        for (q in TextEncoderSpec.PRECISION_ORDER.filter { variants.has(it) }) {
            val spec = variants.getJSONObject(q)
            val rows = spec.getJSONArray("queries")
            val float = spec.getString("dtype") == "float32"
            TextSide.open(bundle, q, threads = 1).use { side ->
                assertEquals(q, side.target.quantization)
                // the kit: the export's PyTorch embeddings, within the bound of the weight dtype (`ammkd verify`)
                var kitCos = 1.0
                val d = side.dim
                for (i in 0 until kitCases.length()) {
                    val ids = ints(kitCases.getJSONObject(i).getJSONArray("ids")).toIntArray()
                    kitCos = minOf(kitCos, TestInputs.cosine(side.embedIds(ids), kitEmb.copyOfRange(i * d, (i + 1) * d)))
                }
                val kitBound = if (float) 0.999 else 0.95
                assertTrue(kitCos >= kitBound, "$q: kit cosine to PyTorch $kitCos < $kitBound")

                // agreement with Python's same variant (and, for int8, with fp32)
                var cosMin = 1.0
                var overlapIndex = 0
                var overlapGallery = 0
                var overlapFp32 = 0
                val r = fp32()
                for ((i, query) in queries.withIndex()) {
                    val text = query.getString("text")
                    val py = rows.getJSONObject(i)
                    val emb = side.embed(text)
                    cosMin = minOf(cosMin, TestInputs.cosine(emb, floats(py.getJSONArray("embedding"))))
                    val idx = r.searchEmbedding(emb, k).map { it.id }
                    val gal = r.searchGallery(emb, k).map { it.id }
                    overlapIndex += overlap(idx, ints(py.getJSONArray("index_ids")))
                    overlapGallery += overlap(gal, ints(py.getJSONArray("gallery_ids")))
                    overlapFp32 += overlap(idx, ints(fp32Rows.getJSONObject(i).getJSONArray("index_ids")))
                }
                val positions = queries.size * k
                val minCos = if (float) expected.getDouble("cosine_bound") else INT8_COSINE_BOUND
                assertTrue(cosMin >= minCos, "$q: cosine to Python's $q embedding $cosMin < $minCos")
                assertTrue(overlapIndex >= INT8_MIN_OVERLAP * positions, "$q: index top-$k overlap with Python $overlapIndex/$positions")

                // latency: tokenize + encode of each query, after warm-up, 1 thread
                val total = DoubleArray(runs * queries.size)
                val tok = DoubleArray(runs * queries.size)
                val enc = DoubleArray(runs * queries.size)
                val perQuery = JSONArray()
                var n = 0
                for (query in queries) {
                    val text = query.getString("text")
                    repeat(warmup) { side.embedTimed(text) }
                    val first = n
                    repeat(runs) {
                        val t0 = System.nanoTime()
                        val e = side.embedTimed(text)
                        total[n] = (System.nanoTime() - t0) / 1e6
                        tok[n] = e.tokenizeMs
                        enc[n] = e.encodeMs
                        n++
                    }
                    perQuery.put(pct(total.copyOfRange(first, n), 50.0))
                }
                val tokens = queries.sumOf { it.getJSONArray("ids").length() }.toDouble() / queries.size
                val row = JSONObject()
                    .put("median_ms", pct(total, 50.0))
                    .put("p90_ms", pct(total, 90.0))
                    .put("tokenize_median_ms", pct(tok, 50.0))
                    .put("encode_median_ms", pct(enc, 50.0))
                    .put("min_ms", pct(total, 0.0))
                    .put("max_ms", pct(total, 100.0))
                    .put("runs", total.size)
                    .put("queries", queries.size)
                    .put("mean_tokens", Math.round(tokens * 10) / 10.0)
                    .put("threads", 1)
                    .put("open_ms", Math.round(side.loadMs * 10) / 10.0)
                    .put("model_bytes", side.target.file!!.bytes)
                    .put("kit_cosine_min", kitCos)
                    .put("cosine_min_vs_python", cosMin)
                    .put("index_topk_overlap_vs_python", "$overlapIndex/$positions")
                    .put("gallery_topk_overlap_vs_python", "$overlapGallery/$positions")
                    .put("index_topk_overlap_vs_fp32", "$overlapFp32/$positions")
                    .put("per_query_median_ms", perQuery)
                summary.put(q, row)
                TestInputs.report("text_variant_$q", row)
            }
        }
        val rt = Runtime.getRuntime()
        TestInputs.report(
            "text_latency_machine",
            JSONObject()
                .put("java.version", System.getProperty("java.version"))
                .put("java.vm.name", System.getProperty("java.vm.name"))
                .put("available_processors", rt.availableProcessors())
                .put("os.arch", System.getProperty("os.arch")),
        )
        TestInputs.report("text_variants", JSONArray(summary.keySet().sorted()))
    }

    // --- refusals ---------------------------------------------------------------------------------

    private var refusedCount = 0

    private fun refused(e: Exception, vararg needles: String) {
        for (n in needles) assertTrue(e.message!!.contains(n), "message lacks '$n': ${e.message}")
        println("[ammkd-core] refused (${e::class.simpleName}): ${e.message!!.take(300)}")
        refusedCount++
        TestInputs.report("text_cases_refused", refusedCount)
    }

    /**
     * A copy of the bundle to damage: the big model files are hard links (never written to; a case
     * that modifies a model copies it first), everything else is copied.
     */
    private fun copy(name: String): File {
        val dest = File(tmp, name)
        bundleDir.walkTopDown().forEach { src ->
            val to = File(dest, src.relativeTo(bundleDir).path)
            when {
                src.isDirectory -> to.mkdirs()
                src.length() > (1 shl 20) -> try {
                    Files.createLink(to.toPath(), src.toPath())
                } catch (e: Exception) {
                    src.copyTo(to)
                }
                else -> src.copyTo(to)
            }
        }
        return dest
    }

    private fun manifest(dir: File) = JSONObject(File(dir, "manifest.json").readText())
    private fun save(dir: File, m: JSONObject) = File(dir, "manifest.json").writeText(m.toString(1))
    private fun flipByte(f: File) = RandomAccessFile(f, "rw").use { raf ->
        raf.seek(raf.length() / 2)
        val b = raf.read()
        raf.seek(raf.length() / 2)
        raf.write(b xor 0x20)
    }

    @Test
    fun `empty, whitespace-only and too long queries are refused`() {
        val r = fp32()
        for (q in listOf("", " ", " \t\n\r\u000B\u000C", "\u3000\u00A0\u2028\u001C\u0085")) {
            refused(assertThrows(IllegalArgumentException::class.java) { r.embedText(q) }, "text query is empty")
        }
        refused(assertThrows(IllegalArgumentException::class.java) { r.searchTexts("  ", k) }, "text query is empty")
        refused(assertThrows(IllegalArgumentException::class.java) { r.topImages("\t", k) }, "text query is empty")
        val max = TextSide.MAX_QUERY_CHARS
        refused(
            assertThrows(IllegalArgumentException::class.java) { r.embedText("a".repeat(max + 1)) },
            "text query has ${max + 1} characters", "at most $max",
        )
        refused(assertThrows(IllegalArgumentException::class.java) { r.embedText("dog \uD83D on a beach") }, "unpaired surrogate")
        // the bound counts code points, as Python's len(): 10,000 emoji (20,000 UTF-16 units) are accepted
        assertEquals(d(), r.embedText("\uD83D\uDC36".repeat(max)).size)
        assertEquals(d(), r.embedText("a ".repeat(max / 2)).size)
        refused(
            assertThrows(IllegalArgumentException::class.java) { r.embedText("\uD83D\uDC36".repeat(max) + "!") },
            "text query has ${max + 1} characters",
        )
    }

    private fun d() = fp32().index.dim

    @Test
    fun `damaged tokenizer files are refused naming the file`() {
        val flipped = copy("vocab-flipped")
        flipByte(File(flipped, "tokenizer/vocab.txt"))
        Retriever.open(flipped, threads = 1).use { r -> // the image side opens; the text side is checked on first use
            refused(assertThrows(BundleException.HashMismatch::class.java) { r.embedText("a dog on the beach") }, "vocab.txt", "SHA-256")
        }
        refused(assertThrows(BundleException.HashMismatch::class.java) { TextSide.open(Bundle.open(flipped)) }, "vocab.txt")

        val cut = copy("vocab-truncated")
        RandomAccessFile(File(cut, "tokenizer/vocab.txt"), "rw").use { it.setLength(it.length() - 7) }
        refused(assertThrows(BundleException.Truncated::class.java) { TextSide.readTokenizer(Bundle.open(cut)) }, "vocab.txt", "truncated")

        val gone = copy("settings-missing")
        assertTrue(File(gone, "tokenizer/settings.json").delete())
        refused(assertThrows(BundleException.Missing::class.java) { TextSide.open(Bundle.open(gone)) }, "settings.json", "missing")

        val edited = copy("settings-edited")
        flipByte(File(edited, "tokenizer/settings.json")) // same size, other bytes
        refused(assertThrows(BundleException.HashMismatch::class.java) { TextSide.open(Bundle.open(edited)) }, "settings.json", "SHA-256")
    }

    @Test
    fun `a modified text encoder, a missing variant and a width other than the index's are refused`() {
        val dir = copy("model-flipped")
        val spec = Bundle.open(dir).textEncoder!!
        val smallest = spec.targets.minByOrNull { it.file!!.bytes }!!
        val model = File(dir, smallest.file!!.path)
        Files.delete(model.toPath()) // a hard link: replace it by a real copy before writing
        File(bundleDir, smallest.file!!.path).copyTo(model)
        flipByte(model)
        refused(
            assertThrows(BundleException.HashMismatch::class.java) { TextSide.open(Bundle.open(dir), smallest.quantization) },
            File(smallest.file!!.path).name,
        )

        refused(
            assertThrows(BundleException.Invalid::class.java) { TextSide.open(Bundle.open(bundleDir), "fp16") },
            "no ONNX text encoder with quantization fp16", "it has: ${spec.quantizations.joinToString(", ")}",
        )

        val width = copy("manifest-width")
        save(width, manifest(width).also { it.getJSONObject("text_encoder").put("dim", 128) })
        refused(
            assertThrows(BundleException.Invalid::class.java) { TextSide.open(Bundle.open(width)) },
            "manifest.json", "output width 128", "index's ${d()}",
        )

        // a model whose output is narrower than the index (written by the Python test), in place of the fp32 one
        val narrowSpec = expected.getJSONObject("narrow_text_encoder")
        val narrow = copy("model-narrow")
        val onnx = File(narrowSpec.getString("path")).readBytes()
        File(narrow, "narrow_text_encoder.onnx").writeBytes(onnx)
        val m = manifest(narrow)
        val targets = m.getJSONObject("text_encoder").getJSONArray("targets")
        for (i in 0 until targets.length()) {
            val t = targets.getJSONObject(i)
            if (t.getString("quantization") == "none") {
                t.put("file", JSONObject().put("path", "narrow_text_encoder.onnx").put("sha256", Bundle.sha256Hex(onnx)).put("bytes", onnx.size))
            }
        }
        save(narrow, m)
        Retriever.open(narrow, threads = 1, textQuantization = "none").use { r ->
            refused(
                assertThrows(BundleException.Invalid::class.java) { r.embedText("a dog") },
                "narrow_text_encoder.onnx", "output width ${narrowSpec.getInt("width")} does not match the index's ${d()}",
            )
        }
    }

    @Test
    fun `a bundle without a text side keeps looking texts up among the index's`() {
        val dir = copy("no-text-side")
        save(dir, manifest(dir).also { it.remove("text_encoder") })
        Retriever.open(dir, threads = 1).use { r ->
            assertTrue(!r.hasTextEncoder)
            refused(assertThrows(BundleException.Invalid::class.java) { r.embedText("a dog") }, "has no text encoder")
            val known = queries.first { it.getBoolean("in_index") }.getString("text")
            val e = assertThrows(TextNotFoundException::class.java) { r.topImages("zqx a dog running on the beach qzx", 3) }  // in no index
            assertTrue(e.nearest.isNotEmpty())
            val id = r.index.texts.indexOf(known)
            val res = r.topImages(known, 3)
            assertEquals(id, res.textId)
            assertTrue(!res.byTextEncoder)
            val t = r.searchTexts(known, 3)
            assertEquals(id, t.query.textId)
            assertEquals(id, t.hits[0].id)
        }
    }

    companion object {
        /** An int8 text encoder run by ONNX Runtime Java vs the same model run by Python's ONNX Runtime. */
        const val INT8_COSINE_BOUND = 0.99

        /** Fraction of top-k positions an int8 variant shares with Python's same variant, at least. */
        const val INT8_MIN_OVERLAP = 0.9
    }
}
