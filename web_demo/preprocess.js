// Photo -> the encoder's input tensor, from the manifest's input spec (bundle/preprocess.py):
// RGB (transparency over white), shorter side resized to `size` (aspect kept), centre crop,
// value range, mean/std only when normalization_in_graph is false; NCHW float32.
// The resize is the browser's high-quality resampler, not PIL's bicubic: close, not bit-exact.

export const MAX_IMAGE_PIXELS = 16000 * 16000; // the Python runtime's decompression-bomb limit

export class ImageInputError extends Error {
  constructor(message) {
    super(message);
    this.name = "ImageInputError";
  }
}

/**
 * Shorter side to `size`, as in Python (resize_plan): (nw, nh) and the crop's top-left corner, by
 * the manifest's geometry (input.resize_rounding "half_even", input.crop_offset "floor"):
 * scale = S / min(w, h) and nw = max(S, roundHalfEven(w * scale)) in float64, nh likewise;
 * left = floor((nw - S) / 2), top = floor((nh - S) / 2).
 */
export function resizePlan(w, h, size) {
  if (w === size && h === size) return { nw: w, nh: h, left: 0, top: 0 };
  const scale = size / Math.min(w, h);
  // Python's round() is round-half-even (Math.round rounds halves up); x is positive here.
  const roundHalfEven = (x) => {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  };
  const nw = Math.max(size, roundHalfEven(w * scale));
  const nh = Math.max(size, roundHalfEven(h * scale));
  return { nw, nh, left: Math.floor((nw - size) / 2), top: Math.floor((nh - size) / 2) };
}

/** A File/Blob -> ImageBitmap already resized (shorter side = size), EXIF orientation applied. */
export async function decodeResized(file, size) {
  const name = file.name || "the file";
  if (file.type && !file.type.startsWith("image/")) {
    throw new ImageInputError(`${name}: not an image (${file.type}); choose a photo (JPEG, PNG, WebP...)`);
  }
  let full;
  try {
    full = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch (e) {
    throw new ImageInputError(`${name}: not an image this browser can decode (unknown format or corrupt)`);
  }
  try {
    const { width: w, height: h } = full;
    if (w * h > MAX_IMAGE_PIXELS) throw new ImageInputError(`${name}: ${w}x${h} exceeds ${MAX_IMAGE_PIXELS} pixels`);
    const { nw, nh } = resizePlan(w, h, size);
    if (nw === w && nh === h) return { bitmap: full, width: w, height: h };
    // Huge photos are downscaled here, once, by the browser's best resampler.
    const small = await createImageBitmap(full, { resizeWidth: nw, resizeHeight: nh, resizeQuality: "high" });
    full.close();
    return { bitmap: small, width: w, height: h };
  } catch (e) {
    full.close();
    throw e;
  }
}

/** Draw a (resized) bitmap onto a size x size canvas: white background, centre crop. */
export function cropToCanvas(bitmap, size, canvas) {
  const { nw, nh, left, top } = resizePlan(bitmap.width, bitmap.height, size);
  canvas.width = size;
  canvas.height = size;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, size, size);
  ctx.drawImage(bitmap, -left, -top, nw, nh);
  return ctx.getImageData(0, 0, size, size);
}

/** RGBA ImageData (size x size) -> Float32Array (1*3*size*size), NCHW, per the input spec. */
export function imageDataToTensor(imageData, spec) {
  const s = spec.size;
  const [lo, hi] = spec.value_range;
  const scale = (hi - lo) / 255;
  const out = new Float32Array(3 * s * s);
  const px = imageData.data;
  for (let c = 0; c < 3; c++) {
    const mean = spec.normalization_in_graph ? 0 : spec.mean[c];
    const std = spec.normalization_in_graph ? 1 : spec.std[c];
    const plane = c * s * s;
    for (let i = 0; i < s * s; i++) {
      const x = Math.fround(Math.fround(px[4 * i + c] * scale) + lo);
      out[plane + i] = spec.normalization_in_graph ? x : (x - mean) / std;
    }
  }
  return out;
}

/** File -> { tensor, width, height } (the original size), drawing the model's view on `canvas`. */
export async function preprocessFile(file, spec, canvas) {
  const { bitmap, width, height } = await decodeResized(file, spec.size);
  try {
    const data = cropToCanvas(bitmap, spec.size, canvas);
    return { tensor: imageDataToTensor(data, spec), width, height };
  } finally {
    bitmap.close();
  }
}
