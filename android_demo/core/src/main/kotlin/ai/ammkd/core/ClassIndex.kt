package ai.ammkd.core

import org.json.JSONArray

/**
 * The bundle's text index: [texts] (N) and their class vectors (N, D), stored as float16
 * (`index/class_vectors.f16.bin`) and decoded to float32 once at load.
 */
class ClassIndex(vectors: FloatArray, val texts: List<String>, dim: Int) : VectorIndex(vectors, texts.size, dim) {
    companion object {
        /** Read and check (size, SHA-256, shape) the index files of [bundle]. */
        fun load(bundle: Bundle): ClassIndex {
            val info = bundle.index
            val vectors = bundle.readFloats(info.vectors)
            val json = bundle.readJson(info.texts)
            val texts = (json as? JSONArray)?.let { a -> List(a.length()) { a.optString(it) } }
            if (texts == null || texts.size != info.count) {
                throw BundleException.Invalid(bundle.where(info.texts), "expected a list of ${info.count} texts")
            }
            return ClassIndex(vectors, texts, info.dim)
        }
    }
}
