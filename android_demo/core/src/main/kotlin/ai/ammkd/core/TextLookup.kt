package ai.ammkd.core

/** A text that is not in the bundle's text set; [nearest] are the closest known texts by spelling. */
class TextNotFoundException(val query: String, val nearest: List<String>, count: Int) : IllegalArgumentException(
    "text \"$query\" is not in the bundle's text set ($count texts; the device has no text encoder, " +
        "so only these can be searched). Nearest known texts:\n" + nearest.joinToString("\n") { "  $it" },
)

/**
 * Finds a text among the bundle's texts as `ammkd.mobile_runtime.gallery.find_text` does:
 * exact match, else ignoring case, runs of spaces and a final full stop; otherwise a
 * [TextNotFoundException] listing the nearest texts (normalised edit distance).
 */
object TextLookup {
    /** The id of [query] in [texts]. */
    fun find(texts: List<String>, query: String, suggestions: Int = 5): Int {
        val exact = texts.indexOf(query)
        if (exact >= 0) return exact
        val q = normalise(query)
        texts.forEachIndexed { i, t -> if (normalise(t) == q) return i }
        throw TextNotFoundException(query, nearest(texts, query, suggestions), texts.size)
    }

    /** Casefolded, whitespace runs collapsed, trailing full stops removed. */
    fun normalise(s: String): String = s.lowercase().split(Regex("\\s+")).filter { it.isNotEmpty() }.joinToString(" ").trimEnd('.')

    /** The [n] texts most similar to [query]: 1 - edit distance / longer length, best first, ties by id. */
    fun nearest(texts: List<String>, query: String, n: Int): List<String> {
        val q = normalise(query)
        val sims = FloatArray(texts.size) { i ->
            val t = normalise(texts[i])
            val longer = maxOf(q.length, t.length)
            if (longer == 0) 1f else 1f - editDistance(q, t).toFloat() / longer
        }
        return TopK.select(sims, n).map { texts[it.id] }
    }

    /** Levenshtein distance (insert, delete, substitute: cost 1). */
    fun editDistance(a: String, b: String): Int {
        var prev = IntArray(b.length + 1) { it }
        var cur = IntArray(b.length + 1)
        for (i in 1..a.length) {
            cur[0] = i
            for (j in 1..b.length) {
                val sub = prev[j - 1] + if (a[i - 1] == b[j - 1]) 0 else 1
                cur[j] = minOf(sub, prev[j] + 1, cur[j - 1] + 1)
            }
            val t = prev; prev = cur; cur = t
        }
        return prev[b.length]
    }
}
