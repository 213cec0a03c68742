package ai.ammkd.core

/**
 * Upper bounds on every number of `manifest.json` (and `gallery.json`) that sizes something this
 * reader allocates, checked before anything is allocated or read: a manifest saying input size
 * 100000 would otherwise ask for a 30 GB tensor. The values are the maxima of
 * `bundle/manifest.schema.json` (the Python reader's schema); a Python test reads them from this
 * file and fails if they drift apart.
 */
object Limits {
    /** `input.size`: side of the square input image, pixels. */
    const val MAX_INPUT_SIZE = 4096

    /** `output.dim`, `index.dim` (and a gallery's `dim`): embedding dimension. */
    const val MAX_DIM = 65536

    /** `index.count` (and a gallery's rows): vectors in an index. */
    const val MAX_COUNT = 50_000_000

    /** A file entry's `shape`: at most this many dimensions ... */
    const val MAX_RANK = 8

    /** ... each at most this extent. */
    const val MAX_EXTENT = 2_147_483_647L

    /** A target's static `batch`. */
    const val MAX_BATCH = 4096

    /** Largest file this reader reads into memory: a ByteArray's limit (JVM and ART), a little under 2 GiB. */
    const val MAX_FILE_BYTES = Int.MAX_VALUE - 8L

    /** [value] (a manifest number at [key]) as an Int in [min]..[max]; otherwise a [BundleException.Invalid] naming [file]. */
    fun int(file: String, key: String, value: Any?, min: Long, max: Long): Int = long(file, key, value, min, max).toInt()

    /** [value] (a manifest number at [key]) as a Long in [min]..[max]; otherwise a [BundleException.Invalid] naming [file]. */
    fun long(file: String, key: String, value: Any?, min: Long, max: Long): Long {
        val v = when (value) {
            is Int, is Long, is Short, is Byte -> (value as Number).toLong()
            is java.math.BigInteger -> if (value.bitLength() < 64) value.toLong() else null
            is java.math.BigDecimal -> try {
                value.longValueExact()
            } catch (e: ArithmeticException) {
                null
            }
            is Double, is Float -> (value as Number).toDouble().let { d -> if (d == Math.rint(d) && Math.abs(d) < 9.0e18) d.toLong() else null }
            else -> null
        } ?: throw BundleException.Invalid(file, "invalid manifest at $key: ${value ?: "nothing"} is not an integer")
        if (v < min) throw BundleException.Invalid(file, "invalid manifest at $key: $v is less than the minimum of $min")
        if (v > max) throw BundleException.Invalid(file, "invalid manifest at $key: $v is greater than the maximum of $max")
        return v
    }

    /** Product of [extents] with overflow detected; null when it does not fit in a Long. */
    fun product(extents: List<Long>): Long? = try {
        extents.fold(1L) { a, b -> Math.multiplyExact(a, b) }
    } catch (e: ArithmeticException) {
        null
    }
}
