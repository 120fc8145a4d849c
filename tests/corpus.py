"""The odd-file corpus for the image loader, written into a folder at test time (nothing binary is committed).

`GOOD` holds one radiograph in every form the loader must read: each must decode to the base pixels within
its tolerance. `BAD` holds files the loader must refuse with one clear `ImageLoadError`; each lists words
of which at least one must appear in the reason. `COMPRESSED_DICOM` and `MISLABELLED_DICOM` hold
DICOM files whose outcome depends on the installed pydicom decoders. `fuzz_seeds` gives small valid
files for the fuzzer to mutate.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, features
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    MPEG2MPML,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from tests.data import FRACATLAS

BASE_SOURCE = FRACATLAS / "images" / "IMG0000019.jpg"
BASE_SHAPE = (512, 410)  # (height, width) of the base radiograph
LARGE_SIZE = (4000, 5000)  # (width, height) of the upscaled copy: 20 MP, within MAX_PIXELS

Writer = Callable[[np.ndarray, Path], None]


@dataclass(frozen=True)
class GoodCase:
    """A form of the base radiograph: `tolerance` is "lossless", "jpeg" or "large"."""

    file_name: str
    write: Writer
    tolerance: str


@dataclass(frozen=True)
class BadCase:
    """A file to refuse: the reason must contain one of `keywords` (case-insensitive)."""

    file_name: str
    write: Writer
    keywords: tuple[str, ...]


def base_radiograph() -> np.ndarray:
    """The (512, 410) uint8 radiograph every good form stores: FracAtlas IMG0000019 from the fixture.

    Stretched to the full 0..255 range, so it holds pure black and pure white pixels, which the DICOM
    cases use as out-of-window outliers.
    """
    with Image.open(BASE_SOURCE) as image:
        gray = np.asarray(image.convert("L"), dtype=np.float64)
    gray = (gray - gray.min()) * (255.0 / (gray.max() - gray.min()))
    return np.round(gray).astype(np.uint8)


# --- raster forms ------------------------------------------------------------------------------------


def _png8(base: np.ndarray, path: Path) -> None:
    Image.fromarray(base, "L").save(path)


def _png16(base: np.ndarray, path: Path) -> None:
    Image.fromarray(base.astype(np.uint16) * 257).save(path)


def _rgb_png(base: np.ndarray, path: Path) -> None:
    Image.fromarray(np.stack([base] * 3, axis=-1), "RGB").save(path)


def _rgba_png(base: np.ndarray, path: Path) -> None:
    alpha = np.full_like(base, 255)
    Image.fromarray(np.stack([base, base, base, alpha], axis=-1), "RGBA").save(path)


def _la_png(base: np.ndarray, path: Path) -> None:
    Image.fromarray(np.stack([base, np.full_like(base, 255)], axis=-1), "LA").save(path)


def _palette_png(base: np.ndarray, path: Path) -> None:
    image = Image.frombytes("P", (base.shape[1], base.shape[0]), base.tobytes())
    image.putpalette([level for gray in range(256) for level in (gray, gray, gray)])
    image.save(path)


def _cmyk(base: np.ndarray, path: Path) -> None:
    options = {"quality": 95} if path.suffix == ".jpg" else {}
    Image.fromarray(base, "L").convert("CMYK").save(path, **options)


def _tiff(base: np.ndarray, path: Path) -> None:
    Image.fromarray(base, "L").save(path, compression="tiff_lzw")


def _tiff16(base: np.ndarray, path: Path) -> None:
    Image.fromarray(base.astype(np.uint16) * 257).save(path)


def _bmp(base: np.ndarray, path: Path) -> None:
    Image.fromarray(base, "L").save(path)


def _gif(base: np.ndarray, path: Path) -> None:
    Image.fromarray(base, "L").save(path)


def _webp(base: np.ndarray, path: Path) -> None:
    Image.fromarray(base, "L").save(path, lossless=True)


def _jpeg(base: np.ndarray, path: Path) -> None:
    Image.fromarray(base, "L").save(path, quality=95)


def _jpeg_exif6(base: np.ndarray, path: Path) -> None:
    # Orientation 6 says "turn 90 degrees clockwise to display": store the base turned counter-clockwise.
    image = Image.fromarray(np.ascontiguousarray(np.rot90(base, 1)), "L")
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, quality=95, exif=exif)


def _large_png(base: np.ndarray, path: Path) -> None:
    Image.fromarray(base, "L").resize(LARGE_SIZE, Image.Resampling.BILINEAR).save(path, compress_level=1)


# --- DICOM forms -------------------------------------------------------------------------------------


def dicom_dataset(
    pixels: np.ndarray,
    bits_stored: int,
    photometric: str = "MONOCHROME2",
    syntax: UID = ExplicitVRLittleEndian,
    **elements,
) -> Dataset:
    """A minimal secondary-capture DICOM dataset holding `pixels` uncompressed, plus extra `elements`."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.BodyPartExamined = "HAND"
    ds.set_pixel_data(pixels, photometric, bits_stored, generate_instance_uid=False)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def _save_dicom(ds: Dataset, path: Path) -> None:
    ds.save_as(path, enforce_file_format=True)


def _with_outliers(base: np.ndarray, stored: np.ndarray, low, high) -> np.ndarray:
    """Move the black and white pixels of `stored` far outside the window; windowing clips them back."""
    stored = stored.copy()
    stored[base == 0] = low
    stored[base == 255] = high
    return stored


def _dcm8(base: np.ndarray, path: Path) -> None:
    _save_dicom(dicom_dataset(base, 8), path)


def _dcm16(base: np.ndarray, path: Path) -> None:
    _save_dicom(dicom_dataset(base.astype(np.uint16) * 257, 16), path)


def _dcm12(base: np.ndarray, path: Path) -> None:
    stored = np.round(base * (4095 / 255)).astype(np.uint16)
    _save_dicom(dicom_dataset(stored, 12), path)


def _dcm_mono1(base: np.ndarray, path: Path) -> None:
    stored = 4095 - (base.astype(np.uint16) * 16)
    _save_dicom(dicom_dataset(stored, 12, "MONOCHROME1"), path)


def _dcm_window(base: np.ndarray, path: Path) -> None:
    # Values 1000..3040; the linear window [c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2] is that range.
    stored = _with_outliers(base, 1000 + base.astype(np.uint16) * 8, 0, 4095)
    _save_dicom(dicom_dataset(stored, 12, WindowCenter=2020.5, WindowWidth=2041), path)


def _dcm_rescale(base: np.ndarray, path: Path) -> None:
    # Modality values 2 * stored - 1024 = 16 * base; the window is in modality units, so it only
    # lands right once the rescale is applied.
    stored = _with_outliers(base, 512 + base.astype(np.uint16) * 8, 0, 4095)
    ds = dicom_dataset(stored, 12, RescaleSlope=2, RescaleIntercept=-1024, RescaleType="US")
    ds.WindowCenter, ds.WindowWidth = 2040.5, 4081
    _save_dicom(ds, path)


def _dcm_signed(base: np.ndarray, path: Path) -> None:
    stored = _with_outliers(base, base.astype(np.int16) * 8 - 1024, -2048, 2047)
    _save_dicom(dicom_dataset(stored, 12, WindowCenter=-3.5, WindowWidth=2041), path)


def _dcm_voi_lut(base: np.ndarray, path: Path) -> None:
    stored = _with_outliers(base, 1000 + base.astype(np.uint16) * 8, 0, 4095)
    lut = Dataset()
    lut.add_new("LUTDescriptor", "US", [2041, 1000, 16])
    lut.add_new("LUTData", "US", list(range(1000, 3041)))  # identity over 1000..3040; outside clamps
    _save_dicom(dicom_dataset(stored, 12, VOILUTSequence=Sequence([lut])), path)


def _dcm_rle(base: np.ndarray, path: Path) -> None:
    ds = dicom_dataset(base.astype(np.uint16) * 257, 16)
    ds.compress(RLELossless, generate_instance_uid=False)
    _save_dicom(ds, path)


def _dcm_rgb(base: np.ndarray, path: Path) -> None:
    _save_dicom(dicom_dataset(np.stack([base] * 3, axis=-1), 8, "RGB"), path)


def _dcm_no_preamble(base: np.ndarray, path: Path) -> None:
    # Old-style: implicit VR little endian, no 128-byte preamble, no "DICM", no file meta.
    ds = dicom_dataset(base.astype(np.uint16) * 16, 12)
    del ds.file_meta
    ds.save_as(path, implicit_vr=True, little_endian=True)


def encapsulated_dicom(base: np.ndarray, syntax: UID, frame: bytes, bits: int = 8) -> Dataset:
    """An 8-bit MONOCHROME2 DICOM dataset whose pixel data is `frame`, encapsulated as `syntax`."""
    ds = dicom_dataset(base, bits, syntax=ExplicitVRLittleEndian)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return ds


def _jpeg_frame(base: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(base, "L").save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _dcm_jpeg_baseline(base: np.ndarray, path: Path) -> None:
    _save_dicom(encapsulated_dicom(base, JPEGBaseline8Bit, _jpeg_frame(base)), path)


def _dcm_j2k_lossless(base: np.ndarray, path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(base, "L").save(buffer, "JPEG2000", irreversible=False, no_jp2=True)
    _save_dicom(encapsulated_dicom(base, JPEG2000Lossless, buffer.getvalue()), path)


def _dcm_jpeg_ls(base: np.ndarray, path: Path) -> None:
    # No JPEG-LS encoder here: the frame is a baseline JPEG (see MISLABELLED_DICOM).
    _save_dicom(encapsulated_dicom(base, JPEGLSLossless, _jpeg_frame(base)), path)


def _dcm_jpeg_lossless(base: np.ndarray, path: Path) -> None:
    _save_dicom(encapsulated_dicom(base, JPEGLosslessSV1, _jpeg_frame(base)), path)


def _dcm_mpeg2(base: np.ndarray, path: Path) -> None:
    _save_dicom(encapsulated_dicom(base, MPEG2MPML, _jpeg_frame(base)), path)


GOOD: dict[str, GoodCase] = {
    "png8": GoodCase("base8.png", _png8, "lossless"),
    "png16": GoodCase("base16.png", _png16, "lossless"),
    "png_rgb": GoodCase("rgb.png", _rgb_png, "lossless"),
    "png_rgba": GoodCase("rgba.png", _rgba_png, "lossless"),
    "png_la": GoodCase("gray_alpha.png", _la_png, "lossless"),
    "png_palette": GoodCase("palette.png", _palette_png, "lossless"),
    "jpeg_cmyk": GoodCase("cmyk.jpg", _cmyk, "jpeg"),
    "tiff_cmyk": GoodCase("cmyk.tif", _cmyk, "lossless"),
    "tiff": GoodCase("base.tif", _tiff, "lossless"),
    "tiff16": GoodCase("base16.tiff", _tiff16, "lossless"),
    "bmp": GoodCase("base.bmp", _bmp, "lossless"),
    "gif": GoodCase("base.gif", _gif, "lossless"),
    "jpeg": GoodCase("base.jpg", _jpeg, "jpeg"),
    "jpeg_exif6": GoodCase("exif_rotated.jpg", _jpeg_exif6, "jpeg"),
    "png_large": GoodCase("large.png", _large_png, "large"),
    "dcm8": GoodCase("mono2_8bit.dcm", _dcm8, "lossless"),
    "dcm16": GoodCase("mono2_16bit.dcm", _dcm16, "lossless"),
    "dcm12": GoodCase("mono2_12bit.dcm", _dcm12, "lossless"),
    "dcm_mono1": GoodCase("mono1.dcm", _dcm_mono1, "lossless"),
    "dcm_window": GoodCase("window.dcm", _dcm_window, "lossless"),
    "dcm_rescale": GoodCase("rescale.dcm", _dcm_rescale, "lossless"),
    "dcm_signed": GoodCase("signed.dcm", _dcm_signed, "lossless"),
    "dcm_voi_lut": GoodCase("voi_lut.dcm", _dcm_voi_lut, "lossless"),
    "dcm_rle": GoodCase("rle.dcm", _dcm_rle, "lossless"),
    "dcm_rgb": GoodCase("rgb.dcm", _dcm_rgb, "lossless"),
    "dcm_no_preamble": GoodCase("no_preamble.dcm", _dcm_no_preamble, "lossless"),
}

if features.check("webp"):
    GOOD["webp"] = GoodCase("base.webp", _webp, "lossless")

# Compressed DICOM the installed pydicom decoders may or may not read: (writer, tolerance).
COMPRESSED_DICOM: dict[str, tuple[str, Writer, str]] = {
    "dcm_jpeg_baseline": ("jpeg_baseline.dcm", _dcm_jpeg_baseline, "jpeg"),
    "dcm_j2k_lossless": ("j2k_lossless.dcm", _dcm_j2k_lossless, "lossless"),
}
# A baseline JPEG frame filed under another syntax, for want of an encoder: a decoder for that syntax
# may be missing (the loader must say what to install), find the frame corrupt, or read it (libjpeg
# reads every JPEG process). (file name, writer, syntax)
MISLABELLED_DICOM: dict[str, tuple[str, Writer, UID]] = {
    "dcm_jpeg_ls": ("jpeg_ls.dcm", _dcm_jpeg_ls, JPEGLSLossless),
    "dcm_jpeg_lossless": ("jpeg_lossless.dcm", _dcm_jpeg_lossless, JPEGLosslessSV1),
    "dcm_mpeg2": ("mpeg2.dcm", _dcm_mpeg2, MPEG2MPML),
}


# --- bad files ---------------------------------------------------------------------------------------


def _bytes_writer(content: bytes) -> Writer:
    def write(base: np.ndarray, path: Path) -> None:
        path.write_bytes(content)

    return write


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims `width` x `height` 8-bit gray pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _bomb_jpeg(base: np.ndarray, path: Path) -> None:
    data = bytearray(_jpeg_frame(base[:64, :64]))
    sof = data.index(b"\xff\xc0")  # SOF0: length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    path.write_bytes(bytes(data))


def _truncated(writer: Writer) -> Writer:
    def write(base: np.ndarray, path: Path) -> None:
        writer(base, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return write


def _zip(base: np.ndarray, path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("readme.txt", "not a radiograph\n" * 20)
    path.write_bytes(buffer.getvalue())


def _random_dcm(base: np.ndarray, path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _dcm_no_pixels(base: np.ndarray, path: Path) -> None:
    ds = dicom_dataset(base, 8)
    del ds.PixelData
    _save_dicom(ds, path)


def _dcm_bomb(base: np.ndarray, path: Path) -> None:
    ds = dicom_dataset(base[:64, :64], 8)
    ds.Rows = ds.Columns = 60000
    _save_dicom(ds, path)


def _dcm_multiframe(base: np.ndarray, path: Path) -> None:
    _save_dicom(dicom_dataset(np.stack([base, 255 - base]), 8, NumberOfFrames=2), path)


def _small_png(base: np.ndarray, path: Path) -> None:
    Image.fromarray(base[200:210, 200:210], "L").save(path)


def _blank_png(base: np.ndarray, path: Path) -> None:
    Image.fromarray(np.full((64, 64), 128, np.uint8), "L").save(path)


def _multipage_tiff(base: np.ndarray, path: Path) -> None:
    pages = [Image.fromarray(base, "L"), Image.fromarray(255 - base, "L")]
    pages[0].save(path, save_all=True, append_images=pages[1:])


_PDF = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
)
_HTML = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not found</body></html>\n"
_SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"></svg>\n'

BOMB_WORDS = ("too many pixels", "more than")
BAD: dict[str, BadCase] = {
    "empty": BadCase("empty.png", _bytes_writer(b""), ("empty",)),
    "text": BadCase("text.png", _bytes_writer(b"patient: 123\nthis is not an image\n" * 5), ("text",)),
    "html": BadCase("page.jpg", _bytes_writer(_HTML), ("HTML",)),
    "svg": BadCase("drawing.png", _bytes_writer(_SVG), ("SVG",)),
    "pdf": BadCase("report.png", _bytes_writer(_PDF), ("PDF",)),
    "zip": BadCase("archive.png", _zip, ("ZIP",)),
    "truncated_png": BadCase("truncated.png", _truncated(_png8), ("truncated", "corrupt")),
    "truncated_jpeg": BadCase("truncated.jpg", _truncated(_jpeg), ("truncated", "corrupt")),
    "truncated_dcm": BadCase("truncated.dcm", _truncated(_dcm16), ("truncated", "corrupt")),
    "random_dcm": BadCase("random.dcm", _random_dcm, ("not a readable DICOM",)),
    "dcm_no_pixels": BadCase("no_pixels.dcm", _dcm_no_pixels, ("no image", "PixelData")),
    "bomb_png": BadCase("bomb.png", _bytes_writer(bomb_png(100_000, 100_000)), BOMB_WORDS),
    "bomb_png_64mp": BadCase("bomb64.png", _bytes_writer(bomb_png(8000, 8000)), BOMB_WORDS),
    "bomb_jpeg": BadCase("bomb.jpg", _bomb_jpeg, BOMB_WORDS),
    "bomb_dcm": BadCase("bomb.dcm", _dcm_bomb, BOMB_WORDS),
    "small": BadCase("small.png", _small_png, ("too small",)),
    "multiframe_dcm": BadCase("multiframe.dcm", _dcm_multiframe, ("one frame per file",)),
    "multipage_tiff": BadCase("multipage.tif", _multipage_tiff, ("one image per file",)),
    "blank": BadCase("blank.png", _blank_png, ("blank",)),
}


def write_corpus(folder: Path) -> dict[str, Path]:
    """Write every good, compressed-DICOM and bad case into `folder`; returns {case id: path}."""
    base = base_radiograph()
    writers = {key: (case.file_name, case.write) for key, case in {**GOOD, **BAD}.items()}
    writers.update({key: (file_name, write) for key, (file_name, write, _) in COMPRESSED_DICOM.items()})
    writers.update({key: (file_name, write) for key, (file_name, write, _) in MISLABELLED_DICOM.items()})
    paths = {}
    for key, (file_name, write) in writers.items():
        paths[key] = folder / file_name
        write(base, paths[key])
    return paths


def fuzz_seeds(folder: Path) -> dict[str, bytes]:
    """Small valid files (a 96x80 copy of the base), written into `folder`: {file name: bytes}.

    The fuzzer mutates these; being small, most mutations land in headers rather than pixels.
    """
    small = np.asarray(Image.fromarray(base_radiograph(), "L").resize((80, 96), Image.Resampling.BOX))
    writers = {
        "seed.png": _png8,
        "seed16.png": _png16,
        "seed.jpg": _jpeg_exif6,
        "seed.tif": _tiff,
        "seed.bmp": _bmp,
        "seed.dcm": _dcm_window,
        "seed_rle.dcm": _dcm_rle,
        "seed_lut.dcm": _dcm_voi_lut,
        "seed_mono1.dcm": _dcm_mono1,
    }
    seeds = {}
    for file_name, write in writers.items():
        write(small, folder / file_name)
        seeds[file_name] = (folder / file_name).read_bytes()
    return seeds
