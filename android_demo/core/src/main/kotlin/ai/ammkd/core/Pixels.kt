package ai.ammkd.core

/**
 * A decoded photo as the core takes it: [argb] pixels (`0xAARRGGBB`, not premultiplied,
 * row-major, upright; [width] x [height]), as Android's `Bitmap.getPixels` gives them.
 */
class Pixels(val argb: IntArray, val width: Int, val height: Int) {
    init {
        require(width > 0 && height > 0 && argb.size.toLong() == width.toLong() * height) {
            "pixels: ${argb.size} values for a $width x $height image"
        }
    }
}
