package ai.ammkd.core

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import kotlin.random.Random

/** The pieces that need no bundle: half floats, top-k selection, text lookup. */
class CoreUnitTest {
    @Test
    fun `half to float is exact for every bit pattern`() {
        for (h in 0 until 65536) {
            val f = Half.toFloat(h.toShort())
            val want = halfReference(h)
            if (want.isNaN()) assertTrue(f.isNaN(), "0x%04x".format(h)) else assertEquals(want, f, "0x%04x".format(h))
        }
        assertEquals(1.0f, Half.toFloat(0x3C00.toShort()))
        assertEquals(-2.0f, Half.toFloat(0xC000.toShort()))
        assertEquals(65504.0f, Half.toFloat(0x7BFF.toShort()))
        assertEquals(5.9604645e-8f, Half.toFloat(0x0001.toShort()))
    }

    /** binary16 by its definition: (-1)^s * 2^(e-15) * (1 + m/1024), subnormals 2^-14 * m/1024. */
    private fun halfReference(h: Int): Float {
        val s = if (h and 0x8000 != 0) -1.0 else 1.0
        val e = (h ushr 10) and 0x1F
        val m = h and 0x3FF
        return when (e) {
            0 -> (s * Math.pow(2.0, -14.0) * (m / 1024.0)).toFloat()
            31 -> if (m == 0) (s * Double.POSITIVE_INFINITY).toFloat() else Float.NaN
            else -> (s * Math.pow(2.0, e - 15.0) * (1 + m / 1024.0)).toFloat()
        }
    }

    @Test
    fun `top-k equals a full sort, ties towards the lower id`() {
        val rnd = Random(3)
        for (trial in 0 until 50) {
            val n = rnd.nextInt(1, 300)
            // few distinct values, so there are many ties
            val scores = FloatArray(n) { rnd.nextInt(0, 7) / 7f }
            for (k in listOf(1, 3, 10, n, n + 5)) {
                val want = (0 until n).sortedWith(compareBy<Int>({ -scores[it] }, { it })).take(k)
                assertEquals(want, TopK.select(scores, k).map { it.id }, "n=$n k=$k")
            }
        }
        assertEquals(listOf(0, 1, 2), TopK.select(FloatArray(6) { 1f }, 3).map { it.id })
        assertEquals(emptyList<Scored>(), TopK.select(FloatArray(4), 0))
    }

    @Test
    fun `vector index scores are dot products`() {
        val idx = VectorIndex(floatArrayOf(1f, 0f, 0f, 1f, 0.6f, 0.8f), 3, 2)
        assertEquals(listOf(1, 2, 0), idx.topK(floatArrayOf(0f, 1f), 3).map { it.id })
        assertEquals(0.8f, idx.scores(floatArrayOf(0f, 1f))[2])
    }

    @Test
    fun `text lookup forgives case, spacing and a final full stop and suggests near texts`() {
        val texts = listOf("a red circle", "a blue square.", "two green triangles")
        assertEquals(1, TextLookup.find(texts, "A  Blue square"))
        val e = runCatching { TextLookup.find(texts, "two green triangels") }.exceptionOrNull() as TextNotFoundException
        assertEquals("two green triangles", e.nearest.first())
        assertEquals(3, TextLookup.editDistance("kitten", "sitting"))
    }
}
