package ai.ammkd.core

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assertions.fail

/** Top-k agreement up to near-ties: a position may differ only where Python's two scores are within [eps]. */
object Agreement {
    data class Result(val exact: Int, val nearTieSwaps: Int)

    fun check(
        kotlinIds: List<Int>, kotlinScores: List<Float>, pythonIds: List<Int>, pythonScores: List<Double>,
        k: Int, what: String, eps: Double = 1e-5,
    ): Result {
        assertEquals(minOf(k, pythonIds.size), kotlinIds.size, "$what: number of hits")
        val pyScore = pythonIds.zip(pythonScores).toMap()
        var exact = 0
        var swaps = 0
        for (i in kotlinIds.indices) {
            if (kotlinIds[i] == pythonIds[i]) {
                exact++
                assertTrue(Math.abs(kotlinScores[i] - pythonScores[i]) <= 1e-3, "$what: score of id ${kotlinIds[i]} ${kotlinScores[i]} vs Python ${pythonScores[i]}")
                continue
            }
            val mine = pyScore[kotlinIds[i]]
            if (mine == null || Math.abs(mine - pythonScores[i]) > eps) {
                fail<Unit>(
                    "$what: top-$k ids differ at rank $i: kotlin $kotlinIds (scores $kotlinScores), " +
                        "python ${pythonIds.take(k)} (scores ${pythonScores.take(k)}); not a near-tie (eps $eps)",
                )
            }
            swaps++
        }
        return Result(exact, swaps)
    }
}
