"""Decoding any image a user may hand us into one 8-bit grayscale radiograph.

Every entry point (training, evaluation, the CLI, the dashboard) goes through `load_image`, so a
radiograph gets the same pixels whether it arrives as an 8- or 16-bit PNG, an RGB JPEG with an EXIF
orientation, a TIFF, a BMP or a DICOM file. Anything else gets an `ImageLoadError` that names the
file and says why, and nothing but that error type comes out of the loader.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]

MAX_PIXELS = 60_000_000
"""Refuse images with more pixels than this before decoding them (decompression bombs)."""
MIN_SIDE = 32
"""Refuse images whose shorter side is below this many pixels: too small to be a radiograph."""
MAX_FILE_BYTES = 256 * 1024 * 1024

_DICOM_SUFFIXES = {".dcm", ".dicom"}


class ImageLoadError(ValueError):
    """An input that cannot be read as a radiograph. `str()` names the file and the reason."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True)
class LoadedImage:
    """A decoded radiograph and the non-identifying facts we keep about it."""

    pixels: np.ndarray  # (H, W) uint8, bright = dense (bone), as displayed
    name: str
    source_format: str  # "PNG", "JPEG", "DICOM", ...
    body_part: str = ""  # from DICOM BodyPartExamined, when present


def source_name(source: ImageSource, name: str | None = None) -> str:
    """The name used for `source` in messages: `name`, else the file name, else a placeholder."""
    if name:
        return str(name)
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, np.ndarray):
        return "<array>"
    return "<bytes>"


def load_image(source: ImageSource, name: str | None = None) -> np.ndarray:
    """Decode `source` into an (H, W) uint8 grayscale radiograph.

    Args:
        source: a path, the file's bytes, or an array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)
            of uint8, uint16 or floats in [0, 255].
        name: how to call the input in error messages (defaults to the path).

    Returns:
        The image as a 2-D uint8 array.

    Raises:
        ImageLoadError: the input is not a readable radiograph; the message says why.
    """
    return load_image_info(source, name).pixels


def load_image_info(source: ImageSource, name: str | None = None) -> LoadedImage:
    """Like `load_image`, but also returns the format and DICOM body part."""
    label = source_name(source, name)
    try:
        if isinstance(source, np.ndarray):
            return LoadedImage(_check_size(_array_to_gray(source, label), label), label, "array")
        data = _read_bytes(source, label)
        if _looks_like_dicom(data, label):
            pixels, body_part = _decode_dicom(data, label)
            return LoadedImage(_check_size(pixels, label), label, "DICOM", body_part)
        pixels, fmt = _decode_raster(data, label)
        return LoadedImage(_check_size(pixels, label), label, fmt)
    except ImageLoadError:
        raise
    except MemoryError:
        raise ImageLoadError(label, "the image is too large to decode in memory") from None
    except Exception as exc:  # any decoder failure becomes our one, clear error type
        raise ImageLoadError(label, f"cannot decode the image ({type(exc).__name__}: {exc})") from None


def _read_bytes(source: ImageSource, label: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageLoadError(label, "file not found")
        if not path.is_file():
            raise ImageLoadError(label, "not a regular file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageLoadError(label, f"file is larger than {MAX_FILE_BYTES // 2**20} MiB")
        data = path.read_bytes()
    else:
        raise ImageLoadError(label, f"unsupported input type {type(source).__name__}")
    if not data:
        raise ImageLoadError(label, "the file is empty (0 bytes)")
    return data


def _looks_like_dicom(data: bytes, label: str) -> bool:
    if len(data) >= 132 and data[128:132] == b"DICM":
        return True
    if Path(label).suffix.lower() in _DICOM_SUFFIXES:
        # Some DICOM files have no preamble; the rest of the bytes decide (pydicom checks).
        return not _is_known_raster(data)
    return False


def _is_known_raster(data: bytes) -> bool:
    signatures = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")
    return data.startswith(signatures)


def _decode_raster(data: bytes, label: str) -> tuple[np.ndarray, str]:
    kind = _describe_non_image(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageLoadError(
                    label,
                    f"{width}x{height} pixels is more than the {MAX_PIXELS:,} allowed "
                    "(refused before decoding)",
                )
            fmt = image.format or "image"
            if getattr(image, "n_frames", 1) > 1 and fmt not in {"GIF", "PNG", "WEBP"}:
                raise ImageLoadError(label, f"{fmt} with {image.n_frames} frames: save one image per file")
            image.load()
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageLoadError(label, "too many pixels (possible decompression bomb); refused") from None
    except UnidentifiedImageError:
        reason = f"not an image: the content looks like {kind}" if kind else "not a readable image file"
        raise ImageLoadError(label, reason) from None
    except OSError as exc:
        raise ImageLoadError(label, f"truncated or corrupt {_format_hint(data)} file ({exc})") from None
    image = ImageOps.exif_transpose(image)
    return _pil_to_gray(image), fmt


def _format_hint(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "PNG"
    if data.startswith(b"\xff\xd8"):
        return "JPEG"
    return "image"


def _describe_non_image(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith(b"%pdf"):
        return "a PDF document"
    if head.startswith(b"pk\x03\x04"):
        return "a ZIP archive"
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "an HTML page"
    if head.startswith((b"<?xml", b"<svg")):
        return "XML/SVG text"
    try:
        data[:512].decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return ""


def _pil_to_gray(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to 8-bit grayscale (16-bit scaled by 1/257, alpha composited on black)."""
    mode = image.mode
    if mode in {"I;16", "I;16B", "I;16L", "I;16N", "I"}:
        arr = np.asarray(image)
        return _scale_integer(arr, 65535 if mode != "I" or arr.max(initial=0) > 255 else 255)
    if mode == "F":
        return _array_to_gray(np.asarray(image, dtype=np.float32), "<float image>")
    if mode in {"RGBA", "LA", "PA"} or (mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        rgb = np.asarray(image, dtype=np.float32)
        alpha = rgb[..., 3:4] / 255.0
        image = Image.fromarray(np.round(rgb[..., :3] * alpha).astype(np.uint8), "RGB")
    if image.mode != "L":
        image = image.convert("RGB").convert("L")
    return np.asarray(image, dtype=np.uint8).copy()


def _scale_integer(arr: np.ndarray, full_scale: int) -> np.ndarray:
    arr = arr.astype(np.float64)
    return np.clip(np.round(arr * (255.0 / full_scale)), 0, 255).astype(np.uint8)


def _array_to_gray(arr: np.ndarray, label: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[-1] == 3:
        if arr.dtype == np.uint8:
            return np.asarray(Image.fromarray(arr, "RGB").convert("L"))
        arr = arr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if arr.ndim != 2:
        raise ImageLoadError(label, f"expected a 2-D or RGB image array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.copy()
    if arr.dtype == np.uint16:
        return _scale_integer(arr, 65535)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ImageLoadError(label, f"unsupported array dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ImageLoadError(label, "the array holds NaN or infinite values")
    return np.clip(np.round(arr), 0, 255).astype(np.uint8)


def _check_size(pixels: np.ndarray, label: str) -> np.ndarray:
    height, width = pixels.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageLoadError(
            label, f"{width}x{height} pixels is too small for a radiograph (at least {MIN_SIDE} px a side)"
        )
    if pixels.max(initial=0) == pixels.min(initial=0):
        raise ImageLoadError(label, "the image is blank (every pixel has the same value)")
    return pixels


def _decode_dicom(data: bytes, label: str) -> tuple[np.ndarray, str]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=Path(label).suffix.lower() in _DICOM_SUFFIXES)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ImageLoadError(label, f"not a readable DICOM file ({exc})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise ImageLoadError(label, "the DICOM file holds no image (no PixelData)")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if rows * cols * frames > MAX_PIXELS:
        raise ImageLoadError(label, f"{cols}x{rows}x{frames} pixels is more than allowed (refused)")
    if frames > 1:
        raise ImageLoadError(
            label, f"multi-frame DICOM ({frames} frames) is not supported: export one frame per file"
        )
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for missing codecs / broken data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        syntax_name = getattr(syntax, "name", str(syntax)) if syntax else "unknown transfer syntax"
        raise ImageLoadError(
            label, f"cannot decode DICOM pixel data ({syntax_name}): {exc}"
        ) from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3 and arr.shape[-1] == 3:
        arr = _array_to_gray(arr if arr.dtype == np.uint8 else arr.astype(np.float64), label)
        return arr, str(ds.get("BodyPartExamined", "") or "")
    if arr.ndim != 2:
        raise ImageLoadError(label, f"unsupported DICOM pixel array of shape {arr.shape}")
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    gray = _dicom_display(values, ds, label)
    if photometric == "MONOCHROME1":
        gray = 255.0 - gray
    return np.clip(np.round(gray), 0, 255).astype(np.uint8), str(ds.get("BodyPartExamined", "") or "")


def _dicom_display(values: np.ndarray, ds, label: str) -> np.ndarray:
    """Map modality values to [0, 255]: the VOI LUT or the window when the file has one, else min-max.

    The window follows DICOM PS3.3 C.11.2.1.2 (linear): centre c and width w map
    [c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2] onto the display range.
    """
    from pydicom.pixels import apply_voi_lut

    if "VOILUTSequence" in ds:
        values = np.asarray(apply_voi_lut(values, ds, prefer_lut=True), dtype=np.float64)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        if width >= 1:
            lower = center - 0.5 - (width - 1) / 2
            return np.clip((values - lower) / max(width - 1, 1e-6), 0.0, 1.0) * 255.0
    low, high = float(values.min()), float(values.max())
    if not np.isfinite(low) or not np.isfinite(high) or high <= low:
        raise ImageLoadError(label, "the DICOM image is blank (every pixel has the same value)")
    return (values - low) * (255.0 / (high - low))


def _first(value) -> float:
    try:
        return float(value[0])
    except TypeError:
        return float(value)
