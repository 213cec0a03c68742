package ai.ammkd.core

import org.json.JSONObject
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assumptions.assumeTrue
import org.junit.jupiter.api.Test
import java.io.File

/**
 * The language-neutral fixtures (tests/fixtures/{topk,fp16,nearest_texts,resize_plans}.json, -Dammkd.fixtures, default ../../tests/fixtures
 * from this module): the same cases Python (tests/bundle/test_fixtures.py) and the web page's modules
 * (web_demo/tests/fixtures_check.mjs) must pass. The tokenizer kit (tokenizer_kit.json) also needs
 * the vocabulary it was made with (-Dammkd.vocab=.../vocab.txt of all-MiniLM-L6-v2); without it that
 * test is skipped.
 */
class FixturesTest {
    private fun load(name: String): JSONObject {
        val dir = System.getProperty("ammkd.fixtures")?.takeIf { it.isNotBlank() && !it.startsWith("\${") }
            ?: "../../tests/fixtures"
        val f = File(dir, "$name.json")
        assertTrue(f.isFile, "fixture $f not found (set -Dammkd.fixtures to the repository's tests/fixtures)")
        return JSONObject(f.readText())
    }

    @Test
    fun `top-k follows the fixture, ties towards the lower id`() {
        val cases = load("topk").getJSONArray("cases")
        for (i in 0 until cases.length()) {
            val c = cases.getJSONObject(i)
            val s = c.getJSONArray("scores")
            val scores = FloatArray(s.length()) { s.getDouble(it).toFloat() }
            val want = c.getJSONArray("ids").let { a -> List(a.length()) { a.getInt(it) } }
            assertEquals(want, TopK.select(scores, c.getInt("k")).map { it.id }, c.getString("name"))
        }
        TestInputs.report("fixture_topk_cases", cases.length())
    }

    @Test
    fun `float16 decoding follows the fixture`() {
        val cases = load("fp16").getJSONArray("cases")
        for (i in 0 until cases.length()) {
            val c = cases.getJSONObject(i)
            val f = Half.toFloat(Integer.decode(c.getString("half")).toShort())
            val want = c.getString("float32")
            if (want == "nan") {
                assertTrue(f.isNaN(), c.toString())
            } else {
                assertEquals(java.lang.Long.decode(want).toInt(), java.lang.Float.floatToRawIntBits(f), c.toString())
            }
        }
        TestInputs.report("fixture_fp16_cases", cases.length())
    }

    @Test
    fun `text lookup and nearest texts follow the fixture`() {
        val doc = load("nearest_texts")
        val t = doc.getJSONArray("texts")
        val texts = List(t.length()) { t.getString(it) }
        val forms = doc.getJSONArray("normal_forms")
        for (i in 0 until forms.length()) {
            val c = forms.getJSONObject(i)
            assertEquals(c.getString("normal"), TextLookup.normalise(c.getString("text")), c.toString())
        }
        val cases = doc.getJSONArray("cases")
        for (i in 0 until cases.length()) {
            val c = cases.getJSONObject(i)
            val query = c.getString("query")
            if (c.getInt("id") >= 0) {
                assertEquals(c.getInt("id"), TextLookup.find(texts, query), "query '$query'")
            } else {
                val want = c.getJSONArray("nearest").let { a -> List(a.length()) { a.getInt(it) } }
                assertEquals(want, TextLookup.nearest(texts, query, 5), "query '$query'")
                val e = runCatching { TextLookup.find(texts, query) }.exceptionOrNull()
                assertTrue(e is TextNotFoundException, "query '$query' should not be found")
            }
        }
        TestInputs.report("fixture_text_cases", cases.length() + forms.length())
    }

    @Test
    fun `resize plans follow the fixture, odd sizes and exact halves included`() {
        val cases = load("resize_plans").getJSONArray("cases")
        for (i in 0 until cases.length()) {
            val c = cases.getJSONArray(i)
            val want = List(4) { c.getInt(3 + it) }
            assertEquals(want, Preprocessor.plan(c.getInt(0), c.getInt(1), c.getInt(2)), c.toString())
        }
        TestInputs.report("fixture_resize_plans", cases.length())
    }

    @Test
    fun `WordPiece tokenizer gives the kit's ids for every text`() {
        val vocabPath = System.getProperty("ammkd.vocab")?.takeIf { it.isNotBlank() && !it.startsWith("\${") }
        assumeTrue(vocabPath != null, "-Dammkd.vocab (the kit's vocab.txt) is not set")
        val kit = load("tokenizer_kit")
        val vocab = File(vocabPath!!)
        assertTrue(vocab.isFile, "-Dammkd.vocab=$vocab is not a file")
        assertEquals(kit.getString("vocab_sha256"), Bundle.sha256Hex(vocab.readBytes()), "$vocab is not the vocabulary the kit was made with")
        val tokenizer = WordPieceTokenizer.fromFiles(vocab, kit.getJSONObject("settings"), "tokenizer_kit.json#settings")
        val cases = kit.getJSONArray("cases")
        val mismatches = mutableListOf<String>()
        for (i in 0 until cases.length()) {
            val c = cases.getJSONObject(i)
            val text = c.getString("text")
            val want = c.getJSONArray("ids").let { a -> List(a.length()) { a.getInt(it) } }
            val got = tokenizer.encode(text).toList()
            if (got != want) mismatches += "case $i ${escaped(text)}:\n    want $want\n    got  $got"
        }
        assertTrue(
            mismatches.isEmpty(),
            "${mismatches.size} of ${cases.length()} tokenizer cases differ; the first ones:\n" + mismatches.take(5).joinToString("\n"),
        )
        TestInputs.report("fixture_tokenizer_cases", cases.length())
    }

    /** [s] quoted, with every code point outside printable ASCII written as \u{hex}, so failures show what was tokenized. */
    private fun escaped(s: String): String = s.codePoints().toArray().joinToString("", "\"", "\"") { cp ->
        if (cp in 0x20..0x7E && cp != '\\'.code && cp != '"'.code) String(Character.toChars(cp)) else "\\u{%X}".format(cp)
    }
}
