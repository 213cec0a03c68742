package ai.ammkd.demo

import android.content.Context
import android.net.Uri
import android.provider.DocumentsContract

/** A folder the user picked with the Storage Access Framework (OpenDocumentTree). */
object DocumentTree {
    /** An entry of a picked folder: its document [id], file [name], whether it is a folder, and its [uri]. */
    class Entry(val id: String, val name: String, val isDir: Boolean, val uri: Uri)

    /** The entries of document [docId] of [tree] (the tree's root: `DocumentsContract.getTreeDocumentId(tree)`). */
    fun children(context: Context, tree: Uri, docId: String): List<Entry> {
        val children = DocumentsContract.buildChildDocumentsUriUsingTree(tree, docId)
        val cols = arrayOf(
            DocumentsContract.Document.COLUMN_DOCUMENT_ID,
            DocumentsContract.Document.COLUMN_DISPLAY_NAME,
            DocumentsContract.Document.COLUMN_MIME_TYPE,
        )
        val out = ArrayList<Entry>()
        context.contentResolver.query(children, cols, null, null, null)?.use { c ->
            while (c.moveToNext()) {
                val id = c.getString(0)
                val isDir = c.getString(2) == DocumentsContract.Document.MIME_TYPE_DIR
                out.add(Entry(id, c.getString(1), isDir, DocumentsContract.buildDocumentUriUsingTree(tree, id)))
            }
        }
        return out
    }
}
