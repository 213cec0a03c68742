// App module. Versions are pinned; they could not be resolved on the machine this was written
// on (no Google Maven, no Android SDK there), see ../README.md.
plugins {
    id("com.android.application") version "8.7.3"
    id("org.jetbrains.kotlin.android") version "2.4.21"
}

// ./gradlew assembleDebug -Pammkd.executorch=true also links the ExecuTorch runtime and
// compiles src/executorch (an ExecuTorch image encoder for bundles exported with --target executorch).
val withExecuTorch = (findProperty("ammkd.executorch") as String?)?.toBoolean() ?: false

android {
    namespace = "ai.ammkd.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "ai.ammkd.demo"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        buildConfigField("boolean", "WITH_EXECUTORCH", withExecuTorch.toString())
    }

    buildFeatures {
        buildConfig = true
    }

    sourceSets {
        getByName("main") {
            // the core, unchanged: pure Kotlin, org.json (part of Android) and ai.onnxruntime
            java.srcDirs("src/main/kotlin", "../core/src/main/kotlin")
            if (withExecuTorch) java.srcDir("src/executorch/kotlin")
        }
    }

    // Models, vectors and JSON are read as they are: no compression in the APK, so assets copy
    // (and could be memory-mapped) without inflating.
    androidResources {
        noCompress += listOf("onnx", "ort", "pte", "bin", "json", "png")
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    buildTypes {
        getByName("release") {
            isMinifyEnabled = false
        }
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    implementation("com.microsoft.onnxruntime:onnxruntime-android:1.29.0") // same API and version as the core's JVM jar
    implementation("androidx.activity:activity-ktx:1.9.3")
    implementation("androidx.exifinterface:exifinterface:1.3.7")
    if (withExecuTorch) implementation("org.pytorch:executorch-android:1.0.0")
}
