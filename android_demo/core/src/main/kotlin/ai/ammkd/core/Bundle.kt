package ai.ammkd.core

import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject
import org.json.JSONTokener
import java.io.EOFException
import java.io.File
import java.io.RandomAccessFile
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.security.MessageDigest

/**
 * A bundle folder made by `ammkd export`, opened read-only. `manifest.json` is checked
 * (format "ammkd-bundle", format_version 1, the fields this reader uses, and every number that
 * sizes an allocation against [Limits]); every other file is checked (inside the folder, size on
 * disk against the manifest before it is read, then SHA-256) each time its bytes are read, before
 * they are used. Every failure is a [BundleException] naming the file.
 */
class Bundle private constructor(val root: File, val manifest: JSONObject) {
    /** Path of the manifest, as used in error messages. */
    val manifestPath: String = File(root, MANIFEST).path

    val inputSpec: InputSpec = InputSpec.fromJson(obj(manifest, "input"), manifestPath)

    /** Encoder output dimension D (embeddings are (D,) unit vectors). */
    val outputDim: Int = intOf(obj(manifest, "output"), "dim", "output/dim", Limits.MAX_DIM.toLong())

    /** Every target the manifest lists, unquantized ones first as exported. */
    val targets: List<Target> = arr(manifest, "targets").let { a ->
        List(a.length()) { Target.fromJson(a.getJSONObject(it), manifestPath, "targets/$it") }
    }

    /** The text index: [count] texts, fp16 vectors (count, dim), texts JSON list. */
    val index: IndexInfo = obj(manifest, "index").let { o ->
        IndexInfo(
            intOf(o, "count", "index/count", Limits.MAX_COUNT.toLong()),
            intOf(o, "dim", "index/dim", Limits.MAX_DIM.toLong()),
            entry(o, "vectors", "index/vectors"),
            entry(o, "texts", "index/texts"),
        )
    }

    /** Golden pairs: source PNG, preprocessed input (1, 3, S, S) f32, embedding (D,) f32, expected top-k ids. */
    val golden: List<Golden> = (manifest.optJSONArray("golden") ?: JSONArray()).let { a ->
        List(a.length()) { i ->
            val g = a.getJSONObject(i)
            val ids = g.optJSONArray("topk_ids") ?: JSONArray()
            Golden(
                entry(g, "image", "golden/$i/image"),
                entry(g, "input", "golden/$i/input"),
                entry(g, "embedding", "golden/$i/embedding"),
                List(ids.length()) { ids.getInt(it) },
            )
        }
    }

    /**
     * The optional text side (manifest `text_encoder`: tokenizer, kit, ONNX text encoders), or null
     * when the bundle has none; opened with [TextSide.open].
     */
    val textEncoder: TextEncoderSpec? = manifest.opt(TextEncoderSpec.KEY)?.let { o ->
        TextEncoderSpec.fromJson(
            o as? JSONObject ?: throw BundleException.Invalid(manifestPath, "invalid manifest: '${TextEncoderSpec.KEY}' is not an object"),
            manifestPath,
        )
    }

    init {
        val shape = index.vectors.shape
        if (shape != listOf(index.count.toLong(), index.dim.toLong()) || index.dim != outputDim || index.vectors.dtype != "float16") {
            throw BundleException.Invalid(
                manifestPath,
                "index vectors ${index.vectors.dtype} $shape do not match count ${index.count} x dim ${index.dim} " +
                    "float16 (encoder output dim $outputDim)",
            )
        }
    }

    data class IndexInfo(val count: Int, val dim: Int, val vectors: FileEntry, val texts: FileEntry)
    data class Golden(val image: FileEntry, val input: FileEntry, val embedding: FileEntry, val topkIds: List<Int>)

    /** Path of an entry inside the bundle, as used in error messages. */
    fun where(entry: FileEntry): String = File(root, entry.path).path

    /** The file of an entry, refused if its path leaves the bundle or it does not exist. */
    fun resolve(entry: FileEntry): File {
        val rel = entry.path
        val f = File(root, rel)
        val canonicalRoot = root.canonicalFile
        if (rel.isEmpty() || File(rel).isAbsolute || rel.startsWith("/") || rel.startsWith("\\") ||
            rel.split('/', '\\').contains("..") || !f.canonicalFile.startsWith(canonicalRoot) ||
            f.canonicalFile == canonicalRoot
        ) {
            throw BundleException.Invalid(manifestPath, "file path '$rel' points outside the bundle")
        }
        if (!f.isFile) throw BundleException.Missing(f.path)
        return f
    }

    /**
     * A file's bytes, read once and checked before they are returned: its size on disk must be the
     * manifest's `bytes` (and fit in a ByteArray) before anything is allocated or read, so a file
     * bigger than the manifest says is never loaded; then exactly that many bytes are read and
     * their SHA-256 checked.
     */
    fun readBytes(entry: FileEntry): ByteArray {
        val f = resolve(entry)
        val size = f.length()
        if (size != entry.bytes) throw BundleException.Truncated(f.path, size, entry.bytes)
        if (size > Limits.MAX_FILE_BYTES) {
            throw BundleException.Invalid(f.path, "$size bytes, more than this reader can hold in memory (${Limits.MAX_FILE_BYTES})")
        }
        val data = ByteArray(size.toInt())
        RandomAccessFile(f, "r").use { raf ->
            try {
                raf.readFully(data)
            } catch (e: EOFException) {
                throw BundleException.Truncated(f.path, raf.length(), entry.bytes) // cut short while it was read
            }
            if (raf.read() >= 0) throw BundleException.Truncated(f.path, raf.length(), entry.bytes) // grew meanwhile
        }
        if (sha256Hex(data) != entry.sha256.lowercase()) throw BundleException.HashMismatch(f.path)
        return data
    }

    /** A checked file decoded as UTF-8 JSON (a JSONObject, JSONArray, string or number). */
    fun readJson(entry: FileEntry): Any {
        val text = String(readBytes(entry), Charsets.UTF_8)
        return try {
            JSONTokener(text).nextValue()
        } catch (e: JSONException) {
            throw BundleException.Invalid(where(entry), "not UTF-8 JSON (${e.message})")
        }
    }

    /** A checked raw array entry as float32 values (dtype float32 or float16, decoded), row-major. */
    fun readFloats(entry: FileEntry): FloatArray {
        val data = readBytes(entry)
        val width = when (entry.dtype) {
            "float32" -> 4
            "float16" -> 2
            else -> throw BundleException.Invalid(where(entry), "dtype ${entry.dtype} is not float32 or float16")
        }
        val count = entry.shape?.let { Limits.product(it) }
        if (count == null || count > Long.MAX_VALUE / width || data.size.toLong() != count * width) {
            throw BundleException.Invalid(where(entry), "${data.size / width} values, shape ${entry.shape} needs ${count ?: "too many"}")
        }
        val buf = ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN)
        return if (width == 4) {
            FloatArray(data.size / 4).also { buf.asFloatBuffer().get(it) }
        } else {
            val halves = buf.asShortBuffer()
            FloatArray(data.size / 2) { Half.toFloat(halves.get(it)) }
        }
    }

    /**
     * The first target with this [role], [format] and [quantization] (null = any), in manifest
     * order; a [BundleException.Invalid] listing the targets the bundle has when none matches.
     */
    fun target(format: String? = null, quantization: String? = null, role: String = "image_encoder"): Target =
        targets.firstOrNull { it.role == role && (format == null || it.format == format) && (quantization == null || it.quantization == quantization) }
            ?: throw BundleException.Invalid(
                manifestPath,
                "no $role target in format ${format ?: "any"} with quantization ${quantization ?: "any"} " +
                    "(the bundle has: ${targets.joinToString(", ") { it.label }.ifEmpty { "none" }})",
            )

    private fun obj(o: JSONObject, key: String): JSONObject =
        o.optJSONObject(key) ?: throw BundleException.Invalid(manifestPath, "invalid manifest: '$key' is missing or not an object")

    private fun arr(o: JSONObject, key: String): JSONArray =
        o.optJSONArray(key) ?: throw BundleException.Invalid(manifestPath, "invalid manifest: '$key' is missing or not a list")

    /** An integer at [key] of [o] in 1..[max]; [at] is its place in the manifest, for messages. */
    private fun intOf(o: JSONObject, key: String, at: String, max: Long): Int {
        if (!o.has(key)) throw BundleException.Invalid(manifestPath, "invalid manifest: '$at' is missing")
        return Limits.int(manifestPath, at, o.opt(key), 1, max)
    }

    private fun entry(o: JSONObject, key: String, at: String): FileEntry = FileEntry.fromJson(obj(o, key), manifestPath, at)

    companion object {
        const val FORMAT_NAME = "ammkd-bundle"
        const val FORMAT_VERSION = 1
        const val MANIFEST = "manifest.json"

        /** Open and check a bundle folder's manifest (no other file is read yet). */
        fun open(dir: File): Bundle {
            val mpath = File(dir, MANIFEST)
            if (!dir.isDirectory) throw BundleException.Missing(dir.path, "not a bundle folder (it does not exist or is not a directory)")
            if (!mpath.isFile) throw BundleException.Missing(mpath.path, "missing; a bundle folder must contain $MANIFEST")
            val manifest = try {
                JSONTokener(String(mpath.readBytes(), Charsets.UTF_8)).nextValue() as? JSONObject
            } catch (e: JSONException) {
                throw BundleException.Invalid(mpath.path, "not valid JSON (${e.message}); the file is truncated or corrupt")
            } ?: throw BundleException.Invalid(mpath.path, "not an $FORMAT_NAME manifest (not a JSON object)")
            if (manifest.opt("format") != FORMAT_NAME) throw BundleException.Invalid(mpath.path, "not an $FORMAT_NAME manifest")
            val version = manifest.opt("format_version")
            if (version !is Int || version != FORMAT_VERSION) {
                throw BundleException.UnsupportedVersion(mpath.path, version, FORMAT_VERSION)
            }
            return Bundle(dir, manifest)
        }

        fun open(dir: String): Bundle = open(File(dir))

        /** Lower-case hex SHA-256 of [data]. */
        fun sha256Hex(data: ByteArray): String =
            MessageDigest.getInstance("SHA-256").digest(data).joinToString("") { "%02x".format(it) }
    }
}
