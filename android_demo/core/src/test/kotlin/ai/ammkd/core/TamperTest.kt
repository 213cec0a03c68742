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
 * modified, missing, unknown format version, a path leaving the bundle, no ONNX target; and a
 * manifest whose numbers would size a huge allocation (input size, index count, dims, shapes,
 * batch, a file bigger than the manifest says) is refused before anything is allocated or read.
 */
class TamperTest {
    @TempDir
    lateinit var tmp: File

    private fun copy(): File = File(tmp, "bundle").also { TestInputs.bundleDir.copyRecursively(it) }

    private fun manifest(dir: File) = JSONObject(File(dir, "manifest.json").readText())
    private fun save(dir: File, m: JSONObject) = File(dir, "manifest.json").writeText(m.toString(1))

    private inline fun <reified E : BundleException> refused(dir: File, vararg needles: String): E {
        val t0 = System.nanoTime()
        val e = assertThrows(E::class.java) { Retriever.open(dir, threads = 1).close() }
        val seconds = (System.nanoTime() - t0) / 1e9
        assertTrue(seconds < 20, "refused after $seconds s: ${e.message}") // refused before reading or allocating
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

    // Numbers in the manifest that size an allocation: bounded as in bundle/manifest.schema.json.

    private fun tampered(edit: (JSONObject) -> Unit): File = copy().also { dir -> save(dir, manifest(dir).also(edit)) }

    @Test
    fun `an input size past the maximum is refused before a tensor is allocated`() {
        // 100000 px: a (1, 3, 100000, 100000) float32 input would be 120 GB
        val dir = tampered { it.getJSONObject("input").put("size", 100_000) }
        refused<BundleException.Invalid>(dir, "manifest.json", "input/size: 100000 is greater than the maximum of 4096")
    }

    @Test
    fun `an index count past the maximum is refused`() {
        val dir = tampered { m ->
            val index = m.getJSONObject("index")
            index.put("count", 1_000_000_000)
            index.getJSONObject("vectors").put("shape", org.json.JSONArray(listOf(1_000_000_000, index.getInt("dim"))))
        }
        refused<BundleException.Invalid>(dir, "manifest.json", "index/count: 1000000000 is greater than the maximum of 50000000")
    }

    @Test
    fun `a dimension past the maximum is refused`() {
        val dir = tampered { it.getJSONObject("output").put("dim", 10_000_000_000L) } // not truncated to an Int
        refused<BundleException.Invalid>(dir, "manifest.json", "output/dim: 10000000000 is greater than the maximum of 65536")
    }

    @Test
    fun `a shape with a huge extent is refused`() {
        val dir = tampered { m ->
            m.getJSONArray("golden").getJSONObject(0).getJSONObject("input").put("shape", org.json.JSONArray(listOf(1L shl 40, 1L shl 40)))
        }
        refused<BundleException.Invalid>(dir, "manifest.json", "golden/0/input/shape/0: 1099511627776 is greater than the maximum of 2147483647")
    }

    @Test
    fun `a shape whose product overflows is refused`() {
        val dir = tampered { m ->
            m.getJSONArray("golden").getJSONObject(0).getJSONObject("input").put("shape", org.json.JSONArray(List(8) { Int.MAX_VALUE }))
        }
        refused<BundleException.Invalid>(dir, "manifest.json", "golden/0/input/shape", "holds more values")
    }

    @Test
    fun `a shape with too many dimensions is refused`() {
        val dir = tampered { m -> m.getJSONObject("index").getJSONObject("vectors").put("shape", org.json.JSONArray(List(9) { 1 })) }
        refused<BundleException.Invalid>(dir, "manifest.json", "index/vectors/shape: 9 dimensions, more than the maximum of 8")
    }

    @Test
    fun `a batch past the maximum is refused`() {
        val dir = tampered { m -> m.getJSONArray("targets").getJSONObject(0).put("batch", 100_000) }
        refused<BundleException.Invalid>(dir, "manifest.json", "targets/0/batch: 100000 is greater than the maximum of 4096")
    }

    @Test
    fun `a file bigger than the manifest says is refused before it is read`() {
        val dir = copy()
        val f = File(dir, "index/texts.json")
        RandomAccessFile(f, "rw").use { it.setLength(it.length() + (1L shl 30)) } // a sparse gigabyte: never read
        refused<BundleException.Truncated>(dir, "texts.json", "manifest says", "truncated or replaced")
    }

    @Test
    fun `a file too big to hold in memory is refused before it is read`() {
        val dir = copy()
        val f = File(dir, "index/texts.json")
        val big = 3L shl 30 // 3 GiB, sparse, and the manifest agrees: more than a ByteArray holds
        RandomAccessFile(f, "rw").use { it.setLength(big) }
        save(dir, manifest(dir).also { it.getJSONObject("index").getJSONObject("texts").put("bytes", big) })
        refused<BundleException.Invalid>(dir, "texts.json", "$big bytes, more than this reader can hold in memory")
    }

    @Test
    fun `a gallery manifest asking for more bytes than its images need is refused`() {
        val dir = copy()
        val mfile = File(dir, "gallery/gallery.json")
        org.junit.jupiter.api.Assumptions.assumeTrue(mfile.isFile, "the bundle has no gallery")
        val g = JSONObject(mfile.readText())
        g.getJSONObject("embeddings").put("bytes", 1L shl 40)
        mfile.writeText(g.toString(1))
        refused<BundleException.Invalid>(dir, "gallery.json", "embeddings/bytes: 1099511627776 is greater than the maximum")
    }

    companion object {
        @Volatile
        var count = 0
    }
}
