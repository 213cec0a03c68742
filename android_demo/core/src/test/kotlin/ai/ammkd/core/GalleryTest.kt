package ai.ammkd.core

import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assumptions.assumeTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance

/** Text -> photos over the gallery the Python runtime embedded into the bundle. */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class GalleryTest {
    private lateinit var retriever: Retriever

    @BeforeAll
    fun open() {
        retriever = Retriever.open(TestInputs.bundleDir, threads = 1)
    }

    @AfterAll
    fun close() {
        if (::retriever.isInitialized) retriever.close()
    }

    @Test
    fun `top gallery photos for a text equal the Python runtime's`() {
        val spec = TestInputs.expected.optJSONObject("gallery")
        assumeTrue(spec != null, "the expectations hold no gallery")
        val g = retriever.gallery ?: error("${TestInputs.bundleDir}/gallery: expected a gallery")
        assertEquals(spec!!.getInt("count"), g.count)
        val k = TestInputs.expected.getInt("k")
        val queries = spec.getJSONArray("queries")
        var exact = 0
        for (i in 0 until queries.length()) {
            val q = queries.getJSONObject(i)
            val res = retriever.topImages(q.getString("text"), k)
            assertEquals(q.getInt("text_id"), res.textId)
            val pyIds = q.getJSONArray("python_ids").let { a -> List(a.length()) { a.getInt(it) } }
            val pyScores = q.getJSONArray("python_scores").let { a -> List(a.length()) { a.getDouble(it) } }
            val a = Agreement.check(res.hits.map { it.id }, res.hits.map { it.score }, pyIds, pyScores, k, "gallery '${q.getString("text")}'")
            assertEquals(res.hits.map { g.images[it.id] }, res.hits.map { it.image })
            exact += a.exact
            println("[ammkd-core] gallery '${q.getString("text")}': ${res.hits.map { it.image }} (${"%.3f".format(res.searchMs)} ms)")
        }
        TestInputs.report("gallery_queries", queries.length())
        TestInputs.report("gallery_positions_identical", "$exact/${queries.length() * k}")
    }

    @Test
    fun `a text outside the bundle gets the nearest known texts, spacing and case are forgiven`() {
        val spec = TestInputs.expected.optJSONObject("gallery")
        assumeTrue(spec != null && retriever.gallery != null, "the expectations hold no gallery")
        val known = spec!!.getString("misspelt_of")
        val e = assertThrows(TextNotFoundException::class.java) { retriever.topImages(spec.getString("misspelt_text"), 3) }
        assertTrue(e.nearest.contains(known), "nearest of '${e.query}': ${e.nearest}")
        assertTrue(e.message!!.contains("Nearest known texts") && e.message!!.contains(known), e.message)
        assertEquals(retriever.index.texts.indexOf(known), retriever.topImages(spec.getString("respaced_text"), 3).textId)
    }
}
