"""Image decoding and preprocessing, implemented from the bundle's InputSpec alone.

Training, evaluation, export parity and the runtime all call these functions, so the pixels a
model was validated on are the pixels it sees on the device.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ammkd.bundle.format import InputSpec
from ammkd.common.errors import DataError

# Refuse images above this many pixels (a decompression bomb, or a photo far larger than any
# encoder input) instead of letting PIL allocate gigabytes.
MAX_IMAGE_PIXELS = 16_000 * 16_000
# Pillow's own bomb check (an error at twice its default 89.5 Mpx) would otherwise refuse images
# between 179 and 256 Mpx first, naming the wrong limit: ours is the one that applies.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

_INTERPOLATION = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def to_rgb(img: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """Any PIL mode to RGB; transparent pixels are composited over `background`."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and float greyscale: rescale the observed range to 8 bits, not clip at 255.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(arr.round().astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image file to an upright RGB PIL image, or raise DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise DataError(f"{path}: is a folder, not an image file")
        if path.is_symlink():
            raise DataError(f"{path}: a symbolic link that is broken or loops, not an image file")
        raise DataError(f"{path}: image file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below
            img = Image.open(path)
        with img:
            if img.width * img.height > MAX_IMAGE_PIXELS:  # checked from the header, before decoding
                raise DataError(
                    f"{path}: {img.width}x{img.height} exceeds {MAX_IMAGE_PIXELS} pixels (decompression-bomb limit)"
                )
            img.load()  # decode now so truncation surfaces here, inside the try
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (unknown format or corrupt header)") from None
    except Image.DecompressionBombError:
        raise DataError(f"{path}: image exceeds {MAX_IMAGE_PIXELS} pixels (decompression-bomb limit)") from None
    except PermissionError:
        raise DataError(f"{path}: cannot be read (permission denied)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: corrupt or truncated image ({e})") from None


def resize_plan(width: int, height: int, spec: InputSpec) -> tuple[int, int, int, int]:
    """(NW, NH, left, top): the resized size and the crop's top-left corner of a width x height
    image, by the rule InputSpec's docstring states (the manifest's `resize_rounding` and
    `crop_offset`): round half to even on `W * (S / min(W, H))` in binary64, floor of half the margin."""
    if spec.resize != "shortest_side" or spec.crop != "center":
        raise DataError(f"unsupported input spec: resize={spec.resize!r} crop={spec.crop!r}")
    if spec.resize_rounding != "half_even" or spec.crop_offset != "floor":
        raise DataError(
            f"unsupported input spec: resize_rounding={spec.resize_rounding!r} crop_offset={spec.crop_offset!r} "
            "(this reader implements 'half_even' and 'floor')"
        )
    s = spec.size
    if (width, height) == (s, s):
        return s, s, 0, 0
    scale = s / min(width, height)
    nw, nh = max(s, round(width * scale)), max(s, round(height * scale))  # round(): ties to even
    return nw, nh, (nw - s) // 2, (nh - s) // 2


def resize_and_crop(img: Image.Image, spec: InputSpec) -> Image.Image:
    """Shorter side to spec.size with spec.interpolation, then a centre crop to a square (resize_plan)."""
    s = spec.size
    nw, nh, left, top = resize_plan(img.width, img.height, spec)
    if img.size == (s, s):
        return img
    if (nw, nh) != img.size:
        img = img.resize((nw, nh), _INTERPOLATION[spec.interpolation])
    return img.crop((left, top, left + s, top + s))


def to_uint8_chw(img: Image.Image, spec: InputSpec) -> np.ndarray:
    """RGB image -> resized, cropped uint8 array (3, S, S)."""
    arr = np.asarray(resize_and_crop(to_rgb(img), spec), dtype=np.uint8)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def uint8_to_input(chw: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 (..., 3, S, S) -> float32 model input in spec.value_range (normalised if not in graph)."""
    lo, hi = spec.value_range
    x = chw.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)
    if not spec.normalization_in_graph:
        mean = np.asarray(spec.mean, np.float32).reshape(3, 1, 1)
        std = np.asarray(spec.std, np.float32).reshape(3, 1, 1)
        x = (x - mean) / std
    return x


def preprocess(image: str | Path | Image.Image | np.ndarray, spec: InputSpec) -> np.ndarray:
    """A file path, PIL image or HxWx3/HxWx4 uint8 buffer -> input tensor (1, 3, S, S) float32."""
    if isinstance(image, (str, Path)):
        image = load_rgb(image)
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise DataError(f"expected an HxWx3 or HxWx4 uint8 buffer, got {image.dtype} {image.shape}")
        image = Image.fromarray(image, "RGBA" if image.shape[2] == 4 else "RGB")
    return uint8_to_input(to_uint8_chw(image, spec), spec)[None]
