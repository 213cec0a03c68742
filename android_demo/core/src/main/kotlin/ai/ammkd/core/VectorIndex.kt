package ai.ammkd.core

/**
 * A matrix of [count] row vectors of [dim] float32 values (unit-norm), searched exactly: one
 * matrix-vector product and [TopK.select] (`ammkd.bundle.search.topk`). The text index
 * ([ClassIndex]) and the photo gallery ([Gallery]) are both one of these.
 *
 * [vectors] is given row-major (count, dim), as the bundle stores it, and held by column: one
 * (count,) array per dimension, so that the scores are [dim] passes of `out[i] += column[i] * q[j]`,
 * a loop the JIT (HotSpot C2, ART) turns into SIMD instructions; a row-by-row dot product stays
 * scalar. Same memory as the row-major matrix; [vectors] itself is not kept.
 */
open class VectorIndex(vectors: FloatArray, val count: Int, val dim: Int) {
    init {
        require(count >= 0 && dim > 0 && vectors.size.toLong() == count.toLong() * dim) {
            "vectors hold ${vectors.size} values, not $count x $dim"
        }
    }

    /** columns[j][i] = value j of row i. */
    private val columns: Array<FloatArray> = Array(dim) { FloatArray(count) }.also { cols ->
        for (row in 0 until count) {
            val base = row * dim
            for (j in 0 until dim) cols[j][row] = vectors[base + j]
        }
    }

    /**
     * Dot product of every row with [query] (D,) -> (N,) float32. Each score is summed in
     * dimension order, ((v0 q0 + v1 q1) + v2 q2) + ..., in float32.
     */
    fun scores(query: FloatArray): FloatArray {
        require(query.size == dim) { "query has ${query.size} values; the index has dim $dim" }
        val out = FloatArray(count)
        for (j in 0 until dim) {
            val col = columns[j]
            val x = query[j]
            for (i in 0 until count) out[i] += col[i] * x
        }
        return out
    }

    /** The min(k, N) rows most similar to [query] (D,), best first, ties towards the lower id. */
    fun topK(query: FloatArray, k: Int): List<Scored> = TopK.select(scores(query), k)

    /** Row [id] as a new (D,) array. */
    fun row(id: Int): FloatArray {
        require(id in 0 until count) { "row $id is outside 0..${count - 1}" }
        return FloatArray(dim) { columns[it][id] }
    }
}
