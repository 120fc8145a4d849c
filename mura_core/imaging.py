"""Decoding any image a user may hand us into one 8-bit grayscale radiograph.

Every entry point (training, evaluation, the CLI, the dashboard) goes through `load_image`, so a
radiograph gets the same pixels whether it arrives as an 8- or 16-bit PNG, an RGB JPEG with an EXIF
orientation, a TIFF, a BMP or a DICOM file. Anything else gets an `ImageLoadError` that names the
file and says why, and nothing but that error type comes out of the loader. `load_image_info` also
records, while the file is open, what later steps need: its size, format, DICOM body part and how
colourful it is (`colourfulness`), so nothing reopens the file.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import cv2
import numpy as np
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]

MAX_PIXELS = 60_000_000
"""Refuse images with more pixels than this before decoding them (decompression bombs)."""
MIN_SIDE = 32
"""Refuse images whose shorter side is below this many pixels: too small to be a radiograph."""
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_STUDY_FILES = 16
"""Files one study may hold in the dashboard (MURA's studies have 1 to 11 views)."""
MAX_STUDY_BYTES = 200 * 1024 * 1024
"""Bytes one study may hold in the dashboard, all files together (each file is also limited by
Streamlit's `server.maxUploadSize`)."""

_DICOM_SUFFIXES = {".dcm", ".dicom"}
SUPPORTED_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".jp2",
                                  ".dcm", ".dicom"})
"""The image file endings of the product: what the loader reads, the indexers and the CLI's folder
search pick up, and the dashboard's uploader accepts (DICOM files without an ending are found by content)."""
COLOUR_SIDE = 256
"""Colourfulness is measured on a copy at most this many pixels a side."""


def study_limit_problem(sizes: list[int]) -> str:
    """Why a study of files with these byte `sizes` is too large to process; '' when it is not.

    Bounds the work and memory of one request: at most `MAX_STUDY_FILES` files and `MAX_STUDY_BYTES`
    in all (each image is also refused beyond `MAX_PIXELS` pixels when it is decoded).
    """
    if len(sizes) > MAX_STUDY_FILES:
        return (f"This study has {len(sizes)} files; at most {MAX_STUDY_FILES} are read at a time. "
                "A study is the views of one body part from one examination: upload them study by study.")
    total = sum(sizes)
    if total > MAX_STUDY_BYTES:
        return (f"This study holds {total / 2**20:.0f} MiB; at most {MAX_STUDY_BYTES // 2**20} MiB are read "
                "at a time. Upload fewer or smaller files.")
    return ""


def is_image_name(name: str | os.PathLike) -> bool:
    """Whether a file name has one of `SUPPORTED_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(os.fspath(name))[1].lower() in SUPPORTED_EXTENSIONS


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether a file starts like DICOM Part 10 (128-byte preamble, then 'DICM')."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False
# Pillow may only open these (JPEG includes MPO): its other plugins (TGA, PCX, ...) have weak
# signatures and would turn random bytes into "images".
_RASTER_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "DIB", "GIF", "WEBP", "JPEG2000")
_RASTER_SIGNATURES = {
    b"\x89PNG": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"II+\x00": "TIFF",
    b"MM\x00+": "TIFF",
    b"BM": "BMP",
    b"GIF8": "GIF",
    b"\x00\x00\x00\x0cjP  ": "JPEG 2000",
    b"\xff\x4f\xff\x51": "JPEG 2000",
}
# Formats whose extra frames are not separate radiographs (animation, MPO depth maps): use frame one.
_FIRST_FRAME_FORMATS = {"GIF", "PNG", "WEBP", "MPO"}
# Messages of these exception types are written for people; others (TypeError, KeyError, ...) are not.
_READABLE_ERRORS = (OSError, ValueError, RuntimeError, EOFError, SyntaxError, NotImplementedError)
_INTERNAL_TEXT = re.compile(
    r"object has no attribute|NoneType|object is not|positional argument|keyword argument|Traceback|"
    r"\w+(Error|Exception):|<class "
)


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
    # `colourfulness` of the stored colours (0.0 for single-channel images; None for DICOM, not measured)
    colourfulness: float | None = 0.0

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.pixels.shape[0], self.pixels.shape[1]


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
            of uint8, uint16 or floats in [0, 255] (alpha is composited on black).
        name: how to call the input in error messages (defaults to the path).

    Returns:
        The image as a 2-D uint8 array.

    Raises:
        ImageLoadError: the input is not a readable radiograph; the message says why.
    """
    return load_image_info(source, name).pixels


def load_image_info(source: ImageSource, name: str | None = None) -> LoadedImage:
    """Like `load_image`, but also returns what later steps need, so nothing reopens the file.

    Args:
        source: as for `load_image`.
        name: as for `load_image`.

    Returns:
        The pixels with the input's name, its format ("PNG", "DICOM", "array", ...), for DICOM the
        body part examined, and the stored colours' `colourfulness`.

    Raises:
        ImageLoadError: the input is not a readable radiograph; the message says why.
    """
    label = source_name(source, name)
    try:
        if isinstance(source, np.ndarray):
            return LoadedImage(_check_size(_array_to_gray(source, label), label), label, "array",
                               colourfulness=_array_colourfulness(source))
        data = _read_bytes(source, label)
        if _looks_like_dicom(data, label):
            pixels, body_part = _decode_dicom(data, label)
            return LoadedImage(_check_size(pixels, label), label, "DICOM", body_part, colourfulness=None)
        pixels, fmt, colour = _decode_raster(data, label)
        return LoadedImage(_check_size(pixels, label), label, fmt, colourfulness=colour)
    except ImageLoadError:
        raise
    except MemoryError:
        raise ImageLoadError(label, "the image is too large to decode in memory") from None
    except Exception as exc:  # any other decoder failure becomes our one, clear error type
        reason = f"cannot decode the image: the file is corrupt or not a supported image{_detail(exc)}"
        raise ImageLoadError(label, reason) from exc


def _detail(exc: BaseException, limit: int = 240) -> str:
    """' (what the decoder said)' when its message is meant for people, else ''.

    pydicom lists one line per decoder plugin; lines that read like a Python dump are left out.
    """
    if not isinstance(exc, _READABLE_ERRORS):
        return ""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = "; ".join(line for line in lines if not _INTERNAL_TEXT.search(line)).replace(":;", ":")
    if not text:
        return ""
    return f" ({text[: limit - 3]}...)" if len(text) > limit else f" ({text})"


def _read_bytes(source: ImageSource, label: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        try:
            path = Path(source)
            if not path.exists():
                raise ImageLoadError(label, "file not found")
            if not path.is_file():
                raise ImageLoadError(label, "not a regular file")
            if path.stat().st_size > MAX_FILE_BYTES:
                raise ImageLoadError(label, f"the file is larger than {MAX_FILE_BYTES // 2**20} MiB")
            data = path.read_bytes()
        except (OSError, ValueError) as exc:  # permissions, a NUL in the path, ...
            raise ImageLoadError(label, f"cannot read the file{_detail(exc)}") from None
    else:
        raise ImageLoadError(label, f"unsupported input type {type(source).__name__}")
    if not data:
        raise ImageLoadError(label, "the file is empty (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise ImageLoadError(label, f"the file is larger than {MAX_FILE_BYTES // 2**20} MiB")
    return data


def _raster_kind(data: bytes) -> str:
    """The raster format `data` starts like ("PNG", ...), or "" when it has no known signature."""
    for signature, kind in _RASTER_SIGNATURES.items():
        if data.startswith(signature):
            return kind
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    return ""


def _looks_like_dicom(data: bytes, label: str) -> bool:
    if data[128:132] == b"DICM":
        return True
    if _raster_kind(data):
        return False
    if Path(label).suffix.lower() in _DICOM_SUFFIXES:
        return True
    # Old files without the preamble start with a group 0002 or 0008 element (little endian).
    return data[:2] in (b"\x02\x00", b"\x08\x00")


# --- PNG, JPEG, TIFF, BMP, ... -----------------------------------------------------------------------


def _decode_raster(data: bytes, label: str) -> tuple[np.ndarray, str, float]:
    hint = _raster_kind(data) or "image"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # corrupt EXIF, odd chunks: we load the image or raise
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=_raster_formats())
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise _too_many_pixels(label, f"{width}x{height}")
            fmt = image.format or "image"
            frames = getattr(image, "n_frames", 1)
            if frames > 1 and fmt not in _FIRST_FRAME_FORMATS:
                raise ImageLoadError(
                    label, f"a {fmt} with {frames} pages or frames is not supported: save one image per file"
                )
            image.load()  # Pillow's default refuses truncated data (ImageFile.LOAD_TRUNCATED_IMAGES)
        except ImageLoadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_many_pixels(label) from None
        except UnidentifiedImageError:
            raise ImageLoadError(label, _unidentified_reason(data, hint)) from None
        except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, struct.error, ...
            raise ImageLoadError(label, f"the {hint} file is truncated or corrupt{_detail(exc)}") from None
        _apply_orientation(image)
        return _pil_to_gray(image, label), fmt, _image_colourfulness(image)


# --- colour ------------------------------------------------------------------------------------------


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness of an RGB image (0 for gray; 33 is 'moderately colourful').

    Hasler D, Suesstrunk S. Measuring colourfulness in natural images. Proc. SPIE 5007 (2003).

    Args:
        rgb: (H, W, 3) array of 0-255 values.

    Returns:
        The colourfulness, >= 0.
    """
    values = np.asarray(rgb, dtype=np.float64)
    red, green, blue = values[..., 0], values[..., 1], values[..., 2]
    rg, yb = red - green, 0.5 * (red + green) - blue
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def _image_colourfulness(image: Image.Image) -> float:
    """`colourfulness` of a decoded Pillow image at most `COLOUR_SIDE` a side; 0.0 for single-channel modes."""
    if image.mode in {"1", "L", "LA", "I", "F"} or image.mode.startswith("I;16"):
        return 0.0
    small = image.convert("RGB")
    small.thumbnail((COLOUR_SIDE, COLOUR_SIDE))
    return colourfulness(np.asarray(small))


def _array_colourfulness(arr: np.ndarray) -> float:
    if arr.ndim != 3 or arr.shape[-1] < 3:
        return 0.0
    step = max(1, max(arr.shape[:2]) // COLOUR_SIDE)
    return colourfulness(arr[::step, ::step, :3])


def _raster_formats() -> list[str]:
    Image.init()  # registers every plugin once; Pillow fails on a format it does not know
    return [fmt for fmt in _RASTER_FORMATS if fmt in Image.OPEN]


def _too_many_pixels(label: str, size: str = "") -> ImageLoadError:
    size_text = f" ({size})" if size else ""
    return ImageLoadError(
        label,
        f"too many pixels{size_text}: more than the {MAX_PIXELS:,} allowed "
        "(refused before decoding; possibly a decompression bomb)",
    )


def _unidentified_reason(data: bytes, hint: str) -> str:
    if hint != "image":
        return f"the {hint} file is truncated or corrupt (its header cannot be read)"
    kind = _describe_non_image(data)
    if kind:
        return f"not an image: the content is {kind}"
    return "not a readable image: the format is unknown (expected PNG, JPEG, TIFF, BMP or DICOM)"


def _describe_non_image(data: bytes) -> str:
    head = data[:1024].lstrip()
    lower = head.lower()
    if lower.startswith(b"%pdf"):
        return "a PDF document"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "a ZIP archive"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip archive"
    if lower.startswith((b"<!doctype html", b"<html")) or b"<html" in lower:
        return "an HTML page"
    if lower.startswith(b"<svg") or b"<svg" in lower:
        return "an SVG drawing (XML text)"
    if lower.startswith(b"<?xml"):
        return "XML text"
    sample = data[:1024]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 3:  # not just a character cut at the end of the sample
            return ""
        text = sample[: exc.start].decode("utf-8")
    if text and all(char.isprintable() or char in "\t\n\r\f" for char in text):
        return "text"
    return ""


def _apply_orientation(image: Image.Image) -> None:
    """Turn `image` upright as its EXIF orientation tag says (in place)."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # unreadable EXIF: there is no orientation to apply, keep the stored one
        pass


def _pil_to_gray(image: Image.Image, label: str) -> np.ndarray:
    """Convert any Pillow mode to 8-bit grayscale (16-bit scaled by 1/257, alpha composited on black)."""
    mode = image.mode
    if mode.startswith("I;16"):
        return _scale_integer(np.asarray(image), 65535)
    if mode == "I":
        arr = np.asarray(image)
        return _scale_integer(arr, 65535 if arr.max(initial=0) > 255 else 255)
    if mode == "F":
        return _array_to_gray(np.asarray(image, dtype=np.float32), label)
    if "transparency" in image.info and mode in {"P", "L", "RGB"}:
        image = image.convert("RGBA")
    if image.mode in {"RGBA", "LA", "PA"}:
        alpha = image.getchannel("A")
        gray = image.convert("RGBA").convert("L") if image.mode == "PA" else image.convert("L")
        image = ImageChops.multiply(gray, alpha)  # composite on black: gray * alpha / 255
    elif image.mode not in {"L", "1", "P"}:
        image = image.convert("RGB")
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8).copy()


def _scale_integer(arr: np.ndarray, full_scale: float) -> np.ndarray:
    arr = arr.astype(np.float64)
    return np.clip(np.round(arr * (255.0 / full_scale)), 0, 255).astype(np.uint8)


# --- arrays ------------------------------------------------------------------------------------------


def _array_to_gray(arr: np.ndarray, label: str) -> np.ndarray:
    """uint8 as is, uint16 scaled by 1/257, other numbers taken as [0, 255]; RGB(A) to luminance."""
    arr = np.asarray(arr)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ImageLoadError(label, f"unsupported array dtype {arr.dtype} (expected uint8, uint16 or float)")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype == np.uint8 and arr.ndim == 2:
        return arr.copy()
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[-1] == 3:  # as Pillow converts RGB files
        return np.asarray(Image.fromarray(np.ascontiguousarray(arr), "RGB").convert("L"))
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        raise ImageLoadError(label, f"expected a 2-D, RGB or RGBA image array, got shape {arr.shape}")
    full_scale = 65535.0 if arr.dtype == np.uint16 else 255.0
    values = arr.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ImageLoadError(label, "the array holds NaN or infinite values")
    if values.ndim == 3:
        gray = values[..., :3] @ np.array([0.299, 0.587, 0.114])
        if values.shape[-1] == 4:  # composite on black, like RGBA files
            gray *= np.clip(values[..., 3] / full_scale, 0.0, 1.0)
        values = gray
    return np.clip(np.round(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)


def _check_size(pixels: np.ndarray, label: str) -> np.ndarray:
    height, width = pixels.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageLoadError(
            label, f"{width}x{height} pixels is too small for a radiograph (at least {MIN_SIDE} px a side)"
        )
    if pixels.max() == pixels.min():
        raise ImageLoadError(label, "the image is blank (every pixel has the same value)")
    return pixels


# --- DICOM -------------------------------------------------------------------------------------------


def _decode_dicom(data: bytes, label: str) -> tuple[np.ndarray, str]:
    """Decode a single-frame DICOM as displayed: modality LUT, VOI LUT or window, MONOCHROME1 inverted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about every odd value; we decode or raise
        ds = _read_dicom(data, label)
        _check_dicom_geometry(ds, label)
        arr = _dicom_pixel_array(ds, label)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            arr = apply_color_lut(arr, ds)
        if arr.ndim == 3 and arr.shape[-1] == 3:
            luminance = arr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
            gray = _scale_integer(luminance, _dicom_full_scale(arr, ds))
        elif arr.ndim == 2:
            gray = _dicom_monochrome(arr, ds, photometric, label)
        else:
            raise ImageLoadError(label, f"unsupported DICOM pixel array of shape {arr.shape}")
        return gray, str(ds.get("BodyPartExamined", "") or "")


def _read_dicom(data: bytes, label: str):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    has_header = data[128:132] == b"DICM"
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        has_pixels = any(key in ds for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    except Exception as exc:  # pydicom raises many types on broken headers
        raise ImageLoadError(label, f"not a readable DICOM file{_detail(exc)}") from None
    if not has_pixels:
        if has_header or any(key in ds for key in ("SOPClassUID", "Modality", "StudyInstanceUID")):
            raise ImageLoadError(label, "the DICOM file holds no image (it has no PixelData element)")
        raise ImageLoadError(label, "not a readable DICOM file: no DICOM header and no image (PixelData)")
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is None or "TransferSyntaxUID" not in file_meta:
        # Files without the preamble have no file meta: the syntax is the one pydicom read them with.
        implicit, little = ds.original_encoding
        ds.file_meta = file_meta if file_meta is not None else FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return ds


def _dicom_int(ds, keyword: str, default: int, label: str) -> int:
    value = ds.get(keyword, default)
    try:
        return int(default if value is None or value == "" else value)
    except (TypeError, ValueError):
        raise ImageLoadError(
            label, f"the DICOM {keyword} value {str(value)[:40]!r} is not a number"
        ) from None


def _check_dicom_geometry(ds, label: str) -> None:
    """Refuse too many pixels (before decoding) and multi-frame files."""
    rows, cols = _dicom_int(ds, "Rows", 0, label), _dicom_int(ds, "Columns", 0, label)
    frames = _dicom_int(ds, "NumberOfFrames", 1, label)
    samples = _dicom_int(ds, "SamplesPerPixel", 1, label)
    if rows <= 0 or cols <= 0:
        raise ImageLoadError(
            label, "the DICOM file has pixel data but no image size (Rows/Columns missing or 0)"
        )
    if rows * cols * max(frames, 1) > MAX_PIXELS:
        frame_text = f" x {frames} frames" if frames > 1 else ""
        raise _too_many_pixels(label, f"{cols}x{rows}{frame_text}")
    if frames > 1:
        raise ImageLoadError(
            label, f"multi-frame DICOM ({frames} frames) is not supported: export one frame per file"
        )
    if samples not in (1, 3):
        raise ImageLoadError(label, f"DICOM with {samples} samples per pixel is not supported")


def _dicom_pixel_array(ds, label: str) -> np.ndarray:
    from pydicom.pixels import get_decoder

    syntax = ds.file_meta.TransferSyntaxUID
    syntax_name = syntax.name or str(syntax) or "an unknown transfer syntax"
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise ImageLoadError(
            label,
            f"the pixel data is stored as {syntax_name}, which pydicom cannot decode: "
            "convert the file to uncompressed DICOM or PNG",
        ) from None
    if not decoder.is_available:
        raise ImageLoadError(
            label,
            f"the pixel data is compressed as {syntax_name} and no installed decoder can read it: "
            f"installing {_decoder_packages(syntax)} would let pydicom decode it",
        )
    try:
        return np.asarray(ds.pixel_array)
    except MemoryError:
        raise
    except Exception as exc:  # truncated data, a broken codestream, inconsistent group 0028 values
        reason = f"the DICOM pixel data ({syntax_name}) is truncated or corrupt{_detail(exc)}"
        if syntax.is_compressed and decoder.missing_dependencies:
            # e.g. 12-bit JPEG, which Pillow cannot decode but pylibjpeg and GDCM can
            reason += f"; if the file opens elsewhere, installing {_decoder_packages(syntax)} may help"
        raise ImageLoadError(label, reason) from None


def _decoder_packages(syntax) -> str:
    """The pip packages that give pydicom a decoder for `syntax`, for the error message."""
    from pydicom.uid import JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes, RLETransferSyntaxes

    if syntax in JPEG2000TransferSyntaxes:
        return "`pylibjpeg pylibjpeg-openjpeg` or `python-gdcm`"
    if syntax in JPEGLSTransferSyntaxes:
        return "`pylibjpeg pylibjpeg-libjpeg`, `pyjpegls` or `python-gdcm`"
    if syntax in RLETransferSyntaxes:
        return "`pylibjpeg pylibjpeg-rle`"
    return "`pylibjpeg pylibjpeg-libjpeg` or `python-gdcm`"


def _dicom_full_scale(arr: np.ndarray, ds) -> float:
    if arr.dtype == np.uint8:
        return 255.0
    try:
        return float(2 ** int(ds.BitsStored) - 1)
    except (AttributeError, TypeError, ValueError):
        return 65535.0


def _dicom_monochrome(arr: np.ndarray, ds, photometric: str, label: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    try:
        values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    except Exception:  # a malformed rescale slope/intercept or modality LUT
        raise ImageLoadError(label, "the DICOM rescale values (modality LUT) are invalid") from None
    if not np.all(np.isfinite(values)):
        raise ImageLoadError(label, "the DICOM pixel values hold NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if high <= low:
        raise ImageLoadError(label, "the image is blank (every pixel has the same value)")
    display = _dicom_voi(values, ds)
    if display is None or display.max() <= display.min():  # no VOI, or one that hides the whole image
        display = (values - low) / (high - low)
    gray = np.clip(display, 0.0, 1.0) * 255.0
    if photometric == "MONOCHROME1":
        gray = 255.0 - gray
    return np.round(gray).astype(np.uint8)


def _dicom_voi(values: np.ndarray, ds) -> np.ndarray | None:
    """`values` through the file's VOI LUT (preferred) or window, scaled to [0, 1]; None if it has none.

    pydicom applies the LUT or window (LINEAR, LINEAR_EXACT or SIGMOID, PS3.3 C.11.2); the output
    range it maps onto is found by passing values beyond both ends through the same function. A
    malformed VOI (bad descriptor, zero width) is skipped, like no VOI at all.

    Why not `pydicom.pixels.apply_voi_lut(prefer_lut=True)`, which makes the same LUT-before-window
    choice: its LUT path writes `value - first_map` into an array of the LUT's own unsigned dtype
    before clipping, so a (modality-LUT) value beyond the LUT wraps around and lands on a wrong
    entry; and neither path says what output range it maps onto, which the scaling to [0, 1] needs.
    Both need the branch below: the inputs are clipped for the LUT, and the probes differ.
    """
    from pydicom.pixels import apply_voi, apply_windowing

    try:
        if ds.get("VOILUTSequence"):
            entries, first, _ = (int(v) for v in ds.VOILUTSequence[0].LUTDescriptor)
            last = first + (entries or 65536) - 1
            # pydicom indexes the LUT with integers; clip so that no index can wrap around
            mapped = apply_voi(np.clip(np.rint(values), first - 1, last).astype(np.int64), ds)
            ends = apply_voi(np.array([first - 1, last], dtype=np.int64), ds)
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            center, width = _first(ds.WindowCenter), abs(_first(ds.WindowWidth))
            mapped = apply_windowing(values, ds)
            ends = apply_windowing(np.array([center - 20 * width - 1, center + 20 * width + 1]), ds)
        else:
            return None
    except Exception:
        return None
    low, high = float(ends[0]), float(ends[-1])
    if not np.isfinite(low) or not np.isfinite(high) or high == low:
        return None
    return (np.asarray(mapped, dtype=np.float64) - low) / (high - low)


def _first(value) -> float:
    try:
        return float(value[0])
    except (TypeError, IndexError):
        return float(value)


# ----------------------------------------------------------------------- headers and thumbnails


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) of an image file from its header only (Pillow, else the DICOM header), or None."""
    try:
        with Image.open(path) as image:
            width, height = image.size
        return int(width), int(height)
    except Exception:  # DICOM or unreadable: try the DICOM header, else None
        return _dicom_size(os.fspath(path))


def _dicom_size(path: str) -> tuple[int, int] | None:
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Columns), int(ds.Rows)
    except Exception:
        return None


def thumbnail(path: str | bytes, side: int = 160) -> np.ndarray | None:
    """A small grayscale copy of an image (longest side `side`), or None when it cannot be read.

    Args:
        path: the file, or its bytes (already read, e.g. to hash them).
        side: the longest side of the copy, in pixels.
    """
    try:
        with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as image:
            image.draft("L", (side, side))  # JPEG: decode at reduced size
            image = image.convert("L")
            image.thumbnail((side, side))
            return np.asarray(image)
    except Exception:
        pass
    try:
        gray = load_image(path)
    except ImageLoadError:
        return None
    image = Image.fromarray(gray)
    image.thumbnail((side, side))
    return np.asarray(image)


def resize_square(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D uint8 radiograph to (size, size, 3) uint8, the models' raw input.

    Like the MURA method, the image is stretched to the square (no padding). Shrinking uses area
    interpolation (no aliasing), enlarging bilinear.

    Args:
        gray: (H, W) uint8 image from `load_image`.
        size: the model's input side in pixels.

    Returns:
        (size, size, 3) uint8 array, the gray channel repeated.
    """
    height, width = gray.shape[:2]
    shrink = height >= size and width >= size
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    resized = cv2.resize(gray, (size, size), interpolation=interpolation)
    return np.repeat(resized[..., None], 3, axis=-1)
