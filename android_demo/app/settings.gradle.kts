// The ammkd Android demo: one app module (this folder) that compiles the Kotlin core
// (../core/src/main/kotlin) unchanged, against onnxruntime-android instead of the JVM jar.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "ammkd-demo"
