package ai.ammkd.core

import org.json.JSONObject
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.io.TempDir
import java.io.File
import java.io.RandomAccessFile

/**
 * A damaged copy of the bundle is refused with a typed error naming the file: truncated,
 * modified, missing, unknown format version, a path leaving the bundle, no ONNX target.
 */
class TamperTest {
    @TempDir
    lateinit var tmp: File

    private fun copy(): File = File(tmp, "bundle").also { TestInputs.bundleDir.copyRecursively(it) }

    private fun manifest(dir: File) = JSONObject(File(dir, "manifest.json").readText())
    private fun save(dir: File, m: JSONObject) = File(dir, "manifest.json").writeText(m.toString(1))

    private inline fun <reified E : BundleException> refused(dir: File, vararg needles: String): E {
        val e = assertThrows(E::class.java) { Retriever.open(dir, threads = 1).close() }
        for (n in needles) assertTrue(e.message!!.contains(n), "message lacks '$n': ${e.message}")
        println("[ammkd-core] refused (${E::class.simpleName}): ${e.message}")
        count++
        TestInputs.report("tamper_cases_refused", count)
        return e
    }

    @Test
    fun `a truncated file is refused`() {
        val dir = copy()
        val f = File(dir, "index/class_vectors.f16.bin")
        RandomAccessFile(f, "rw").use { it.setLength(it.length() - 10) }
        val e = refused<BundleException.Truncated>(dir, "class_vectors.f16.bin", "truncated")
        assertTrue(e.file.endsWith("class_vectors.f16.bin"))
    }

    @Test
    fun `a modified file is refused by its hash`() {
        val dir = copy()
        val model = manifest(dir).getJSONArray("targets").getJSONObject(0).getJSONObject("file").getString("path")
        RandomAccessFile(File(dir, model), "rw").use { raf ->
            raf.seek(raf.length() / 2)
            val b = raf.read()
            raf.seek(raf.length() / 2)
            raf.write(b xor 0x40)
        }
        refused<BundleException.HashMismatch>(dir, model, "SHA-256")
    }

    @Test
    fun `a missing file is refused`() {
        val dir = copy()
        assertTrue(File(dir, "index/texts.json").delete())
        refused<BundleException.Missing>(dir, "texts.json", "missing")
    }

    @Test
    fun `an unknown format version is refused`() {
        val dir = copy()
        save(dir, manifest(dir).put("format_version", 2))
        refused<BundleException.UnsupportedVersion>(dir, "manifest.json", "format_version 2")
    }

    @Test
    fun `a file path leaving the bundle is refused`() {
        val dir = copy()
        File(tmp, "outside.json").writeText("[]") // exists, so only the path itself can be the reason
        val m = manifest(dir)
        m.getJSONObject("index").getJSONObject("texts").put("path", "../outside.json")
        save(dir, m)
        refused<BundleException.Invalid>(dir, "manifest.json", "outside the bundle")
    }

    @Test
    fun `a bundle without an ONNX target says which targets it has`() {
        val dir = copy()
        val m = manifest(dir)
        val targets = m.getJSONArray("targets")
        val kept = org.json.JSONArray()
        for (i in 0 until targets.length()) targets.getJSONObject(i).let { if (it.getString("format") != "onnx") kept.put(it) }
        save(dir, m.put("targets", kept))
        val e = refused<BundleException.Invalid>(dir, "manifest.json", "no ONNX Runtime image encoder onnx/none", "it has:")
        assertTrue(kept.length() == 0 || e.message!!.contains(kept.getJSONObject(0).getString("format")), e.message)
    }

    @Test
    fun `a modified gallery is refused`() {
        val dir = copy()
        val emb = File(dir, "gallery/embeddings.f32.bin")
        org.junit.jupiter.api.Assumptions.assumeTrue(emb.isFile && emb.length() > 8, "the bundle has no gallery")
        RandomAccessFile(emb, "rw").use { it.seek(4); it.write(0x7f) }
        refused<BundleException.HashMismatch>(dir, "embeddings.f32.bin")
    }

    companion object {
        @Volatile
        var count = 0
    }
}
