package ai.ammkd.core

/** A text that is not in the bundle's text set; [nearest] are the closest known texts by spelling. */
class TextNotFoundException(val query: String, val nearest: List<String>, count: Int) : IllegalArgumentException(
    "text \"$query\" is not in the bundle's text set ($count texts; the device has no text encoder, " +
        "so only these can be searched). Nearest known texts:\n" + nearest.joinToString("\n") { "  $it" },
)

/**
 * Finds a text among the bundle's texts with the algorithm of `ammkd.bundle.texts` (docs/design.md
 * §5.9), pinned by tests/fixtures/nearest_texts.json: exact match, else the normal form (lower-case,
 * ASCII whitespace runs collapsed, trailing full stops removed); otherwise a [TextNotFoundException]
 * listing the texts nearest by edit distance over code points divided by the longer length.
 */
object TextLookup {
    private val ASCII_SPACE = Regex("[ \\t\\n\\u000B\\u000C\\r]+")

    /** The id of [query] in [texts]. */
    fun find(texts: List<String>, query: String, suggestions: Int = 5): Int {
        val exact = texts.indexOf(query)
        if (exact >= 0) return exact
        val q = normalise(query)
        texts.forEachIndexed { i, t -> if (normalise(t) == q) return i }
        throw TextNotFoundException(query, nearest(texts, query, suggestions).map { texts[it] }, texts.size)
    }

    /** Lower-cased (no locale), ASCII whitespace runs collapsed to one space, trailing full stops removed. */
    fun normalise(s: String): String =
        s.lowercase().split(ASCII_SPACE).filter { it.isNotEmpty() }.joinToString(" ").trimEnd('.')

    /** Ids of the [n] texts nearest to [query], best first: d / L ascending (float64), ties by id. */
    fun nearest(texts: List<String>, query: String, n: Int): List<Int> {
        val q = normalise(query).codePoints().toArray()
        val ratio = DoubleArray(texts.size) { i ->
            val t = normalise(texts[i]).codePoints().toArray()
            val longer = maxOf(q.size, t.size)
            if (longer == 0) 0.0 else editDistance(q, t).toDouble() / longer
        }
        return texts.indices.sortedWith(compareBy<Int> { ratio[it] }.thenBy { it }).take(maxOf(n, 0))
    }

    /** Levenshtein distance (insert, delete, substitute: cost 1) between two strings, in code points. */
    fun editDistance(a: String, b: String): Int = editDistance(a.codePoints().toArray(), b.codePoints().toArray())

    private fun editDistance(a: IntArray, b: IntArray): Int {
        var prev = IntArray(b.size + 1) { it }
        var cur = IntArray(b.size + 1)
        for (i in 1..a.size) {
            cur[0] = i
            for (j in 1..b.size) {
                val sub = prev[j - 1] + if (a[i - 1] == b[j - 1]) 0 else 1
                cur[j] = minOf(sub, prev[j] + 1, cur[j - 1] + 1)
            }
            val t = prev; prev = cur; cur = t
        }
        return prev[b.size]
    }
}
