package ai.ammkd.core

/** IEEE 754 binary16 -> binary32, exact (Java 17 has no Float.float16ToFloat). */
object Half {
    /** The float value of the half-precision bit pattern in the low 16 bits of [bits]. */
    fun toFloat(bits: Short): Float {
        val h = bits.toInt() and 0xFFFF
        val sign = (h and 0x8000) shl 16
        val exp = (h ushr 10) and 0x1F
        val mant = h and 0x3FF
        val out = when (exp) {
            0 -> if (mant == 0) {
                sign // +-0
            } else { // subnormal half: normalise into a float
                var m = mant
                var e = -14
                while (m and 0x400 == 0) {
                    m = m shl 1
                    e -= 1
                }
                sign or ((e + 127) shl 23) or ((m and 0x3FF) shl 13)
            }
            0x1F -> sign or 0x7F800000 or (mant shl 13) // inf / NaN (payload kept)
            else -> sign or ((exp - 15 + 127) shl 23) or (mant shl 13)
        }
        return java.lang.Float.intBitsToFloat(out)
    }
}
