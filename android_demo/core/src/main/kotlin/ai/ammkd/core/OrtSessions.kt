package ai.ammkd.core

import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtException
import ai.onnxruntime.OrtLoggingLevel
import ai.onnxruntime.OrtSession

/** ONNX Runtime CPU sessions, opened the same way for every encoder of a bundle. */
internal object OrtSessions {
    /**
     * A session over a model's [bytes] (already hash-checked) with the target's [sessionConfig]
     * entries, [threads] intra-op threads and one inter-op thread. A model ONNX Runtime refuses
     * is a [BundleException.Invalid] naming the file [where] and [what] it is.
     */
    fun create(
        env: OrtEnvironment,
        bytes: ByteArray,
        sessionConfig: Map<String, String>,
        threads: Int,
        where: String,
        what: String,
    ): OrtSession = try {
        OrtSession.SessionOptions().use { opts ->
            for ((k, v) in sessionConfig) opts.addConfigEntry(k, v)
            opts.setIntraOpNumThreads(threads)
            opts.setInterOpNumThreads(1)
            opts.setSessionLogLevel(OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR)
            env.createSession(bytes, opts)
        }
    } catch (e: OrtException) {
        throw BundleException.Invalid(where, "ONNX Runtime cannot load this $what (${e.message})")
    }
}
