package ai.ammkd.core

import org.json.JSONObject
import org.junit.jupiter.api.Assertions.fail
import java.awt.image.BufferedImage
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import javax.imageio.ImageIO

/**
 * What the bundle tests run against: the bundle folder (-Dammkd.bundle) and the expectations
 * the Python runtime wrote for it (-Dammkd.expected). Missing properties fail the tests with
 * the command to run, so that a run without a bundle can never pass silently.
 * Figures the tests measure are written to -Dammkd.report (JSON) when given.
 */
object TestInputs {
    private const val HOW = "run the Kotlin core tests against a bundle: " +
        "`.venv/bin/pytest -q tests/android` (exports a bundle, writes the expectations and runs Maven), or " +
        "`mvn -B -f android_demo/core/pom.xml test -Dammkd.bundle=BUNDLE_DIR -Dammkd.expected=EXPECTED_JSON`"

    private fun property(name: String): String {
        val v = System.getProperty(name)?.trim().orEmpty()
        if (v.isEmpty() || v.startsWith("\${")) fail<Unit>("system property $name is not set; $HOW")
        return v
    }

    val bundleDir: File by lazy {
        File(property("ammkd.bundle")).also { if (!File(it, "manifest.json").isFile) fail<Unit>("-Dammkd.bundle=$it is not a bundle folder; $HOW") }
    }

    val expected: JSONObject by lazy {
        val f = File(property("ammkd.expected"))
        if (!f.isFile) fail<Unit>("-Dammkd.expected=$f does not exist; $HOW")
        JSONObject(f.readText())
    }

    private val figures = JSONObject()

    /** Record a measured figure (and print it); the report file is rewritten each time. */
    @Synchronized
    fun report(key: String, value: Any) {
        println("[ammkd-core] $key = $value")
        figures.put(key, value)
        System.getProperty("ammkd.report")?.takeIf { it.isNotBlank() && !it.startsWith("\${") }?.let {
            File(it).writeText(figures.toString(2))
        }
    }

    /** A PNG decoded with javax.imageio to ARGB ints (grey PNGs read from the raster, not colour-managed). */
    fun decodePng(file: File): Triple<IntArray, Int, Int> =
        toArgb(ImageIO.read(file) ?: fail("${file.path}: javax.imageio cannot decode it"))

    /** A decoded image as ARGB ints, row-major. */
    fun toArgb(img: BufferedImage): Triple<IntArray, Int, Int> {
        val w = img.width
        val h = img.height
        val raster = img.raster
        val argb = when (raster.numBands) {
            1, 2 -> IntArray(w * h) { i ->
                val g = raster.getSample(i % w, i / w, 0)
                val a = if (raster.numBands == 2) raster.getSample(i % w, i / w, 1) else 255
                (a shl 24) or (g shl 16) or (g shl 8) or g
            }
            else -> img.getRGB(0, 0, w, h, null, 0, w)
        }
        return Triple(argb, w, h)
    }

    fun readF32(file: File): FloatArray {
        val bytes = file.readBytes()
        return FloatArray(bytes.size / 4).also { ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(it) }
    }

    fun cosine(a: FloatArray, b: FloatArray): Double {
        var ab = 0.0
        var aa = 0.0
        var bb = 0.0
        for (i in a.indices) {
            ab += a[i].toDouble() * b[i]
            aa += a[i].toDouble() * a[i]
            bb += b[i].toDouble() * b[i]
        }
        return ab / Math.sqrt(aa * bb)
    }

    fun maxAbsDiff(a: FloatArray, b: FloatArray): Double {
        require(a.size == b.size) { "sizes differ: ${a.size} vs ${b.size}" }
        var m = 0.0
        for (i in a.indices) m = maxOf(m, Math.abs(a[i].toDouble() - b[i]))
        return m
    }
}
