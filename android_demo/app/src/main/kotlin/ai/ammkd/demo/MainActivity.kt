package ai.ammkd.demo

import ai.ammkd.core.BundleException
import ai.ammkd.core.Retriever
import ai.ammkd.core.TextNotFoundException
import android.net.Uri
import android.os.Bundle
import android.os.Handler
import android.os.Looper
import android.view.ViewGroup.LayoutParams.MATCH_PARENT
import android.view.ViewGroup.LayoutParams.WRAP_CONTENT
import android.widget.Button
import android.widget.EditText
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.TextView
import androidx.activity.ComponentActivity
import androidx.activity.result.contract.ActivityResultContracts
import java.io.File
import java.util.concurrent.Executors

/**
 * The demo: pick a photo -> the bundle's top-k texts with scores and the time of each stage;
 * pick a folder of photos -> they are embedded into the bundle's gallery on the phone
 * (unreadable ones skipped and listed); type a query -> the closest photos of the gallery: any
 * free text when the bundle has a text encoder (embedded on the phone), else one of the bundle's
 * texts. The bundle comes from the APK's assets (copied to the files folder)
 * or a picked folder; its encoder runs on ONNX Runtime, or ExecuTorch when the bundle and the
 * build have it ([Encoders]). All work runs on one background thread; the views are built in
 * code (no layouts).
 */
class MainActivity : ComponentActivity() {
    private val worker = Executors.newSingleThreadExecutor()
    private val ui = Handler(Looper.getMainLooper())
    private var retriever: Retriever? = null

    private lateinit var status: TextView
    private lateinit var output: TextView
    private lateinit var query: EditText

    private val pickPhoto = registerForActivityResult(ActivityResultContracts.GetContent()) { uri: Uri? ->
        if (uri != null) searchPhoto(uri)
    }
    private val pickGallery = registerForActivityResult(ActivityResultContracts.OpenDocumentTree()) { tree: Uri? ->
        if (tree != null) embedGallery(tree)
    }
    private val pickFolder = registerForActivityResult(ActivityResultContracts.OpenDocumentTree()) { tree: Uri? ->
        if (tree != null) openBundle { BundleInstaller.fromTree(this, tree) }
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        status = TextView(this)
        output = TextView(this).apply { setTextIsSelectable(true) }
        query = EditText(this).apply { hint = "a text of the bundle, e.g. a red circle" }
        val column = LinearLayout(this).apply {
            orientation = LinearLayout.VERTICAL
            setPadding(32, 32, 32, 32)
            addView(status)
            addView(Button(context).apply { text = "Pick a photo: top texts"; setOnClickListener { pickPhoto.launch("image/*") } })
            addView(query, LinearLayout.LayoutParams(MATCH_PARENT, WRAP_CONTENT))
            addView(Button(context).apply { text = "Text: top gallery photos"; setOnClickListener { searchText(query.text.toString()) } })
            addView(Button(context).apply { text = "Add a photo folder to the gallery"; setOnClickListener { pickGallery.launch(null) } })
            addView(Button(context).apply { text = "Open another bundle folder"; setOnClickListener { pickFolder.launch(null) } })
            addView(output)
        }
        setContentView(ScrollView(this).apply { addView(column) })
        openBundle { BundleInstaller.fromAssets(this) }
    }

    private fun openBundle(locate: () -> File?) {
        status.text = "Loading the bundle..."
        worker.execute {
            val message = try {
                val dir = locate() ?: throw IllegalStateException(
                    "no bundle: copy one to app/src/main/assets/bundle/ before building, or open a folder",
                )
                retriever?.close()
                val r = Retriever.open(dir, textThreads = 2) { bundle -> Encoders.open(bundle, threads = 2) }
                retriever = r
                ui.post {
                    query.hint = if (r.hasTextEncoder) "any text, e.g. my dog on the beach" else "a text of the bundle, e.g. a red circle"
                }
                val textSide = if (r.hasTextEncoder) "free text (${r.bundle.textEncoder!!.quantizations.joinToString("/")})" else "index texts only"
                "Bundle ${dir.name}: ${r.index.count} texts, encoder ${r.encoder.target.label}, text queries: $textSide, " +
                    "input ${r.preprocessor.size} px, gallery ${r.gallery?.count ?: 0} photos; " +
                    "loaded (hashes checked) in %.0f ms".format(r.loadMs)
            } catch (e: BundleException) {
                "Bundle refused: ${e.message}"
            } catch (e: Exception) {
                "Cannot open the bundle: ${e.message}"
            }
            ui.post { status.text = message }
        }
    }

    private fun searchPhoto(uri: Uri) {
        val r = retriever ?: return show("Open a bundle first.")
        show("Searching...")
        worker.execute {
            val text = try {
                val px = Photos.load(this, uri, r.preprocessor.size)
                val res = r.topTexts(px.argb, px.width, px.height, k = 5)
                val t = res.timings
                buildString {
                    append("Photo ${px.width}x${px.height}\n\n")
                    res.hits.forEachIndexed { i, h -> append("${i + 1}. %.3f  %s\n".format(h.score, h.text)) }
                    append("\npreprocess %.1f ms, encode %.1f ms, search %.1f ms; bundle load %.0f ms".format(
                        t.preprocessMs, t.encodeMs, t.searchMs, t.loadMs,
                    ))
                }
            } catch (e: Exception) {
                "Cannot search this photo: ${e.message}"
            }
            ui.post { output.text = text }
        }
    }

    private fun searchText(text: String) {
        val r = retriever ?: return show("Open a bundle first.")
        worker.execute {
            val out = try {
                // the first free-text query opens the text encoder (tens of MB, hash-checked): about a second
                val res = r.topImages(if (r.hasTextEncoder) text else text.trim(), k = 5)
                buildString {
                    if (res.byTextEncoder) {
                        append("\"${res.query}\" (text encoder ${r.textSide().target.quantization})\n\n")
                    } else {
                        append("\"${res.query}\" (text ${res.textId})\n\n")
                    }
                    res.hits.forEachIndexed { i, h -> append("${i + 1}. %.3f  %s\n".format(h.score, h.image)) }
                    append("\n")
                    if (res.byTextEncoder) append("tokenize + encode %.1f ms, ".format(res.encodeMs))
                    append("search %.2f ms".format(res.searchMs))
                }
            } catch (e: TextNotFoundException) {
                e.message
            } catch (e: IllegalArgumentException) { // an empty or too long query
                e.message
            } catch (e: IllegalStateException) { // no gallery yet
                e.message
            } catch (e: BundleException) { // a damaged text side
                "Text encoder refused: ${e.message}"
            }
            ui.post { output.text = out }
        }
    }

    private fun embedGallery(tree: Uri) {
        val r = retriever ?: return show("Open a bundle first.")
        show("Listing the photos...")
        worker.execute {
            val text = try {
                val photos = PhotoFolder.list(this, tree, r.preprocessor.size)
                val t0 = System.nanoTime()
                val replaces = r.gallery?.sourceDir?.takeIf { it != tree.toString() } // one folder per gallery
                val update = r.updateGallery(tree.toString(), photos, rebuild = replaces != null) { done, total ->
                    ui.post { output.text = "Embedding photos: $done / $total" }
                }
                val s = (System.nanoTime() - t0) / 1e9
                buildString {
                    if (replaces != null) append("Replaced the gallery of $replaces\n")
                    append("Gallery: ${update.gallery.count} photos (${update.added} added in %.1f s)\n".format(s))
                    if (update.skipped.isNotEmpty()) {
                        append("\nSkipped ${update.skipped.size} (tried again next time):\n")
                        update.skipped.forEach { append("  ${it.path}: ${it.reason}\n") }
                    }
                }
            } catch (e: Exception) {
                "Cannot embed this folder: ${e.message}"
            }
            ui.post { output.text = text }
        }
    }

    private fun show(message: String) {
        output.text = message
    }

    override fun onDestroy() {
        worker.execute { retriever?.close() }
        worker.shutdown()
        super.onDestroy()
    }
}
