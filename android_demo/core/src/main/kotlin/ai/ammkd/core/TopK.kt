package ai.ammkd.core

/** One search result: row [id] of the searched matrix and its dot-product [score] (cosine for unit vectors). */
data class Scored(val id: Int, val score: Float)

/**
 * Exact top-k selection, the order every ammkd runtime returns: descending score, ties towards
 * the lower id (`ammkd.bundle.search._select`). A bounded heap of k: O(N log k).
 */
object TopK {
    /** The min(k, N) best of [scores] (N,), best first. */
    fun select(scores: FloatArray, k: Int): List<Scored> {
        require(k >= 0) { "k must be >= 0; got $k" }
        val n = scores.size
        val kk = minOf(k, n)
        if (kk == 0) return emptyList()
        // heap[0] is the worst kept candidate: lowest score, and among equal scores the highest id
        val heap = IntArray(kk)
        var size = 0
        fun worse(a: Int, b: Int): Boolean = scores[a] < scores[b] || (scores[a] == scores[b] && a > b)
        fun siftDown(start: Int) {
            var i = start
            while (true) {
                val l = 2 * i + 1
                if (l >= size) return
                val r = l + 1
                val c = if (r < size && worse(heap[r], heap[l])) r else l
                if (!worse(heap[c], heap[i])) return
                val t = heap[c]; heap[c] = heap[i]; heap[i] = t
                i = c
            }
        }
        for (id in 0 until kk) {
            heap[size] = id
            var i = size++
            while (i > 0) {
                val p = (i - 1) / 2
                if (!worse(heap[i], heap[p])) break
                val t = heap[p]; heap[p] = heap[i]; heap[i] = t
                i = p
            }
        }
        // Every later id is higher than all kept ones, so on an equal score it is the worse one:
        // it enters only with a strictly higher score than the worst kept (worse(heap[0], id)).
        var worst = scores[heap[0]]
        for (id in kk until n) {
            if (scores[id] > worst) {
                heap[0] = id
                siftDown(0)
                worst = scores[heap[0]]
            }
        }
        return heap.sortedWith { a, b -> if (worse(a, b)) 1 else if (worse(b, a)) -1 else 0 }
            .map { Scored(it, scores[it]) }
    }
}
