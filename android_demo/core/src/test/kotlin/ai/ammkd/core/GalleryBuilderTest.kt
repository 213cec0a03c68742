package ai.ammkd.core

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assumptions.assumeTrue
import org.junit.jupiter.api.Test
import java.io.File
import javax.imageio.ImageIO

/**
 * A gallery embedded on the device (the JVM here) from a folder of photos with unreadable files
 * among them, checked against the gallery the Python runtime made from the same folder; then
 * re-run (nothing added), interrupted (a dangling append is cut off), and refused for another
 * source. The Python test then reads and extends the gallery written here.
 */
class GalleryBuilderTest {
    /** javax.imageio as the app's photo decoder; an unreadable file throws (and is skipped). */
    private val decoder: (File) -> Pixels = { file ->
        val img = ImageIO.read(file) ?: throw IllegalArgumentException("not a readable image (no javax.imageio decoder takes it)")
        TestInputs.toArgb(img).let { (argb, w, h) -> Pixels(argb, w, h) }
    }

    @Test
    fun `photos embedded on the device match the Python gallery, unreadable ones are skipped and listed`() {
        val spec = TestInputs.expected.optJSONObject("device_gallery")
        assumeTrue(spec != null, "the expectations hold no device gallery")
        val bundleDir = File(spec!!.getString("bundle"))
        val photos = File(spec.getString("photos"))
        val pyImages = spec.getJSONArray("python_images").let { a -> List(a.length()) { a.getString(it) } }
        val pySkipped = spec.getJSONArray("python_skipped").let { a -> List(a.length()) { a.getString(it) } }
        val pyRows = TestInputs.readF32(File(spec.getString("python_embeddings")))

        Retriever.open(bundleDir, threads = 1).use { r ->
            assertNull(r.gallery, "$bundleDir should start without a gallery")
            val first = r.updateGallery(photos, decoder)
            assertEquals(pyImages, first.gallery.images)
            assertEquals(pySkipped, first.skipped.map { it.path })
            assertTrue(first.skipped.all { it.reason.isNotBlank() }, "${first.skipped}")
            assertEquals(pyImages.size, first.added)
            val dim = r.bundle.outputDim
            var minCos = 1.0
            for (i in pyImages.indices) {
                val cos = TestInputs.cosine(first.gallery.row(i), pyRows.copyOfRange(i * dim, (i + 1) * dim))
                minCos = minOf(minCos, cos)
            }
            assertTrue(minCos >= TestInputs.expected.getDouble("cosine_bound"), "min cosine to Python's rows $minCos")
            TestInputs.report("device_gallery_photos", pyImages.size)
            TestInputs.report("device_gallery_skipped", first.skipped.joinToString("; ") { "${it.path}: ${it.reason}" })
            TestInputs.report("device_gallery_min_cosine_vs_python", minCos)

            // the text -> photo search runs over the new gallery at once
            val hits = r.topImages(0, k = 3).hits
            assertEquals(minOf(3, pyImages.size), hits.size)

            // again: nothing new, the unreadable files are tried again and listed again
            val second = r.updateGallery(photos, decoder)
            assertEquals(0, second.added)
            assertEquals(pySkipped, second.skipped.map { it.path })

            // another source is refused (the gallery would mix two folders)
            val e = assertThrows(IllegalStateException::class.java) { r.updateGallery("/elsewhere", emptyList()) }
            assertTrue(e.message!!.contains("rebuild") && e.message!!.contains(photos.canonicalPath), e.message)
        }

        // an append interrupted before gallery.json was replaced: ignored on open, cut off by the next update
        val emb = File(bundleDir, "${Gallery.DIR}/${Gallery.EMBEDDINGS}")
        val recorded = emb.length()
        emb.appendBytes(ByteArray(Bundle.open(bundleDir).outputDim * 2) { 7 }) // half a row
        Retriever.open(bundleDir, threads = 1).use { r ->
            assertEquals(pyImages, r.gallery!!.images)
            assertEquals(pySkipped, r.gallery!!.skipped.map { it.path })
            assertEquals(0, r.updateGallery(photos, decoder).added)
        }
        assertEquals(recorded, emb.length())
        TestInputs.report("device_gallery_resumed", true)
    }

}
