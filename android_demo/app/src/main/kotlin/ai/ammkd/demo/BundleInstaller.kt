package ai.ammkd.demo

import android.content.Context
import android.net.Uri
import android.provider.DocumentsContract
import java.io.File

/**
 * Puts a bundle where the core can open it with java.io.File: copied once from the APK's
 * assets (`assets/bundle/`) or from a folder the user picked (Storage Access Framework).
 * The core checks every file's size and SHA-256 when it opens the copy.
 */
object BundleInstaller {
    private const val ASSET_DIR = "bundle"

    /** The asset bundle, copied to filesDir/bundle unless the same manifest is already there; null if the APK has none. */
    fun fromAssets(context: Context): File? {
        val names = context.assets.list(ASSET_DIR) ?: return null
        if ("manifest.json" !in names) return null
        val dest = File(context.filesDir, ASSET_DIR)
        val manifest = context.assets.open("$ASSET_DIR/manifest.json").use { it.readBytes() }
        val current = File(dest, "manifest.json")
        if (current.isFile && current.readBytes().contentEquals(manifest)) return dest
        dest.deleteRecursively()
        copyAssets(context, ASSET_DIR, dest)
        return dest
    }

    private fun copyAssets(context: Context, path: String, dest: File) {
        val children = context.assets.list(path).orEmpty()
        if (children.isEmpty()) { // a file
            dest.parentFile?.mkdirs()
            context.assets.open(path).use { input -> dest.outputStream().use { input.copyTo(it) } }
            return
        }
        dest.mkdirs()
        for (child in children) copyAssets(context, "$path/$child", File(dest, child))
    }

    /** A picked folder (OpenDocumentTree) copied to filesDir/picked-bundle, replacing an earlier one. */
    fun fromTree(context: Context, tree: Uri): File {
        val dest = File(context.filesDir, "picked-bundle")
        dest.deleteRecursively()
        copyTree(context, tree, DocumentsContract.getTreeDocumentId(tree), dest)
        return dest
    }

    private fun copyTree(context: Context, tree: Uri, docId: String, dest: File) {
        dest.mkdirs()
        for (e in DocumentTree.children(context, tree, docId)) {
            if (e.name.contains('/') || e.name == ".." || e.name == ".") continue
            val target = File(dest, e.name)
            if (e.isDir) {
                copyTree(context, tree, e.id, target)
            } else {
                context.contentResolver.openInputStream(e.uri)?.use { input -> target.outputStream().use { input.copyTo(it) } }
            }
        }
    }
}
