package ai.ammkd.demo

import ai.ammkd.core.GalleryBuilder
import android.content.Context
import android.net.Uri
import android.provider.DocumentsContract

/**
 * The photos of a folder the user picked (Storage Access Framework tree), as the core's
 * gallery photos: path relative to the folder ('/'-separated, hidden names left out, by file
 * suffix as [GalleryBuilder.IMAGE_SUFFIXES]), decoded on demand by [Photos.load].
 */
object PhotoFolder {
    fun list(context: Context, tree: Uri, minSide: Int): List<GalleryBuilder.Photo> {
        val found = ArrayList<Pair<String, Uri>>()
        walk(context, tree, DocumentsContract.getTreeDocumentId(tree), "", found)
        return found.sortedBy { it.first }.map { (path, uri) ->
            // subsampled decode: phone photos are 12 to 50 megapixels; a gallery needs no exact pixels
            GalleryBuilder.Photo(path) { Photos.load(context, uri, minSide, exact = false) }
        }
    }

    private fun walk(context: Context, tree: Uri, docId: String, prefix: String, out: MutableList<Pair<String, Uri>>) {
        for (e in DocumentTree.children(context, tree, docId)) {
            if (e.name.contains('/') || e.name.startsWith(".")) continue
            if (e.isDir) {
                walk(context, tree, e.id, "$prefix${e.name}/", out)
            } else if (e.name.substringAfterLast('.', "").lowercase() in GalleryBuilder.IMAGE_SUFFIXES) {
                out.add("$prefix${e.name}" to e.uri)
            }
        }
    }
}
