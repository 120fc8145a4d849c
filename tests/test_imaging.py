"""Tests for mura_core.imaging: one radiograph in every form agrees, every odd file gets one clear error."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image, ImageFile
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from mura_core.imaging import MAX_PIXELS, MIN_SIDE, ImageLoadError, load_image, load_image_info
from tests.corpus import (
    BAD,
    COMPRESSED_DICOM,
    GOOD,
    MISLABELLED_DICOM,
    base_radiograph,
    dicom_dataset,
    write_corpus,
)

MODEL_SIZE = 64
# Real-world DICOM files that ship inside the pydicom wheel (nothing is downloaded).
PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
MR_SMALL_FORMS = [
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
    "MR_small_padded.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
]
# Words that show a message is a Python dump rather than a reason written for people.
INTERNAL_MARKERS = ("Traceback", "Error:", "Exception", "object has no attribute", "<class", "NoneType")


@pytest.fixture(scope="module")
def base() -> np.ndarray:
    return base_radiograph()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def model_input(gray: np.ndarray, size: int = MODEL_SIZE) -> np.ndarray:
    """The gray channel of `preprocessing.resize_square(gray, size)` (that module imports Keras)."""
    shrink = gray.shape[0] >= size and gray.shape[1] >= size
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def assert_agrees(pixels: np.ndarray, base: np.ndarray, tolerance: str) -> None:
    """`pixels` is the base radiograph within `tolerance` ("lossless", "jpeg" or "large")."""
    assert pixels.dtype == np.uint8 and pixels.ndim == 2
    diff = np.abs(model_input(pixels).astype(int) - model_input(base).astype(int))
    if tolerance == "large":
        assert pixels.shape == (base.shape[0] * 5000 // 512, base.shape[1] * 4000 // 410)
        assert diff.mean() <= 1.0 and diff.max() <= 8
        return
    assert pixels.shape == base.shape
    full = np.abs(pixels.astype(int) - base.astype(int))
    if tolerance == "lossless":
        assert full.max() <= 1 and diff.max() <= 1
    else:
        assert full.mean() <= 3 and diff.mean() <= 3


def assert_clear_error(error: ImageLoadError, name: str, keywords: tuple[str, ...] = ()) -> None:
    """One error naming the file, with a reason in plain words containing one of `keywords`."""
    message = str(error)
    assert message.startswith(f"{name}: ") and error.name == name
    assert error.reason and not any(marker in error.reason for marker in INTERNAL_MARKERS), message
    if keywords:
        assert any(word.lower() in error.reason.lower() for word in keywords), message


def decoder_available(syntax: UID) -> bool:
    try:
        return get_decoder(syntax).is_available
    except NotImplementedError:
        return False


@pytest.mark.parametrize("case", sorted(GOOD))
def test_every_form_agrees_with_the_base(case, corpus, base):
    assert_agrees(load_image(corpus[case]), base, GOOD[case].tolerance)


@pytest.mark.parametrize("case", sorted(GOOD))
def test_bytes_give_the_same_pixels_as_the_path(case, corpus):
    path = corpus[case]
    from_path = load_image(path)
    np.testing.assert_array_equal(load_image(path.read_bytes(), name=path.name), from_path)
    np.testing.assert_array_equal(load_image(bytearray(path.read_bytes())), from_path)


@pytest.mark.parametrize("case", sorted(COMPRESSED_DICOM))
def test_compressed_dicom_agrees_or_says_what_to_install(case, corpus, base):
    path = corpus[case]
    syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if decoder_available(syntax):
        assert_agrees(load_image(path), base, COMPRESSED_DICOM[case][2])
    else:
        with pytest.raises(ImageLoadError) as caught:
            load_image(path)
        assert_clear_error(caught.value, str(path), (syntax.name,))
        assert "pylibjpeg" in caught.value.reason or "gdcm" in caught.value.reason


@pytest.mark.parametrize("case", sorted(MISLABELLED_DICOM))
def test_other_compressed_dicom_loads_or_names_the_transfer_syntax(case, corpus, base):
    path, syntax = corpus[case], MISLABELLED_DICOM[case][2]
    if not decoder_available(syntax):
        with pytest.raises(ImageLoadError) as caught:
            load_image(path)
        assert_clear_error(caught.value, str(path), (syntax.name,))
        assert "pydicom cannot decode" in caught.value.reason or "pylibjpeg" in caught.value.reason
        return
    try:
        pixels = load_image(path)
    except ImageLoadError as error:  # the decoder finds the frame is not of its syntax
        assert_clear_error(error, str(path), ("corrupt",))
    else:
        assert_agrees(pixels, base, "jpeg")


def test_missing_decoder_message_says_what_to_install(corpus):
    if decoder_available(MISLABELLED_DICOM["dcm_jpeg_ls"][2]):
        pytest.skip("a JPEG-LS decoder is installed")
    with pytest.raises(ImageLoadError) as caught:
        load_image(corpus["dcm_jpeg_ls"])
    assert "JPEG-LS Lossless" in caught.value.reason
    assert "pylibjpeg pylibjpeg-libjpeg" in caught.value.reason and "python-gdcm" in caught.value.reason


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_file_gets_one_clear_error(case, corpus):
    path = corpus[case]
    with pytest.raises(ImageLoadError) as caught:
        load_image(path)
    assert_clear_error(caught.value, str(path), BAD[case].keywords)


@pytest.mark.parametrize("case", sorted(set(BAD) - {"empty"}))
def test_bad_bytes_get_the_same_error(case, corpus):
    path = corpus[case]
    with pytest.raises(ImageLoadError) as caught:
        load_image(path.read_bytes(), name=path.name)
    assert_clear_error(caught.value, path.name, BAD[case].keywords)


def test_empty_bytes_and_unnamed_inputs():
    with pytest.raises(ImageLoadError, match=r"^<bytes>: the file is empty"):
        load_image(b"")
    with pytest.raises(ImageLoadError, match=r"^upload\.png: .*PDF"):
        load_image(b"%PDF-1.7\n...", name="upload.png")


@pytest.mark.parametrize("case", ["bomb_png", "bomb_png_64mp", "bomb_jpeg", "bomb_dcm"])
def test_bombs_are_refused_fast(case, corpus):
    data = corpus[case].read_bytes()
    assert len(data) < 8192  # a few kB that claim gigapixels
    start = time.perf_counter()
    with pytest.raises(ImageLoadError, match="more than the 60,000,000 allowed"):
        load_image(data, name=corpus[case].name)
    assert time.perf_counter() - start < 0.2


def test_large_image_within_the_limit_loads(corpus):
    pixels = load_image(corpus["png_large"])
    assert pixels.size == 20_000_000 < MAX_PIXELS


def test_truncated_images_are_not_allowed_globally():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_missing_paths_folders_and_other_inputs(tmp_path):
    with pytest.raises(ImageLoadError, match="file not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(tmp_path)
    with pytest.raises(ImageLoadError, match="unsupported input type int"):
        load_image(42)  # type: ignore[arg-type]
    with pytest.raises(ImageLoadError, match="cannot read the file"):
        load_image("bad\0name.png")


def test_load_image_info_reports_format_and_body_part(corpus):
    dicom = load_image_info(corpus["dcm16"])
    assert (dicom.source_format, dicom.body_part, dicom.name) == ("DICOM", "HAND", str(corpus["dcm16"]))
    png = load_image_info(corpus["png8"].read_bytes(), name="x.png")
    assert (png.source_format, png.body_part, png.name) == ("PNG", "", "x.png")
    assert load_image_info(corpus["jpeg_exif6"]).source_format == "JPEG"


def test_dicom_window_is_applied_not_min_max(base, tmp_path):
    # Linear window c=2048, w=1024 (PS3.3 C.11.2.1.2.1): x <= 1536 black, x > 2559 white, linear between.
    stored = base.astype(np.uint16) * 16
    dicom_dataset(stored, 12, WindowCenter=2048, WindowWidth=1024).save_as(
        tmp_path / "narrow.dcm", enforce_file_format=True
    )
    expected = np.clip((stored - 1536.0) / 1023 * 255, 0, 255)
    assert np.abs(load_image(tmp_path / "narrow.dcm") - expected).max() <= 0.5 + 1e-9


def test_dicom_sigmoid_window(base, tmp_path):
    stored = base.astype(np.uint16) * 16
    ds = dicom_dataset(stored, 12, WindowCenter=2048, WindowWidth=4096, VOILUTFunction="SIGMOID")
    ds.save_as(tmp_path / "sigmoid.dcm", enforce_file_format=True)
    expected = 255 / (1 + np.exp(-4 * (stored - 2048.0) / 4096))
    assert np.abs(load_image(tmp_path / "sigmoid.dcm") - expected).max() <= 0.5 + 1e-9


def test_dicom_window_that_hides_everything_falls_back_to_the_full_range(base, tmp_path):
    ds = dicom_dataset(base, 8, WindowCenter=60000, WindowWidth=10)
    ds.save_as(tmp_path / "offscale.dcm", enforce_file_format=True)
    np.testing.assert_array_equal(load_image(tmp_path / "offscale.dcm"), base)


def test_alpha_is_composited_on_black_in_files_and_arrays(base, tmp_path):
    rgba = np.stack([base] * 3 + [np.full_like(base, 128)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half.png")
    expected = base * (128 / 255)
    assert np.abs(load_image(tmp_path / "half.png") - expected).max() <= 1
    assert np.abs(load_image(rgba) - expected).max() <= 1


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda b: b, id="uint8"),
        pytest.param(lambda b: b[..., None], id="uint8-hw1"),
        pytest.param(lambda b: b.astype(np.uint16) * 257, id="uint16"),
        pytest.param(lambda b: b.astype(np.float32), id="float32"),
        pytest.param(lambda b: b.astype(np.float64), id="float64"),
        pytest.param(lambda b: np.stack([b] * 3, axis=-1), id="rgb"),
        pytest.param(lambda b: np.stack([b] * 3 + [np.full_like(b, 255)], axis=-1), id="rgba"),
        pytest.param(lambda b: np.stack([b] * 3, axis=-1).astype(np.float64), id="rgb-float"),
        pytest.param(lambda b: np.stack([b] * 3, axis=-1).astype(np.uint16) * 257, id="rgb-uint16"),
        pytest.param(
            lambda b: np.stack([b] * 3 + [np.full_like(b, 255)], axis=-1).astype(np.uint16) * 257,
            id="rgba-uint16",
        ),
    ],
)
def test_arrays_are_accepted(convert, base):
    pixels = load_image(convert(base))
    assert pixels.dtype == np.uint8 and pixels.shape == base.shape
    assert np.abs(pixels.astype(int) - base).max() <= 1


@pytest.mark.parametrize(
    "array, words",
    [
        pytest.param(np.zeros((4, 64, 64, 3), np.uint8), "shape", id="4d"),
        pytest.param(np.zeros((64, 64, 2), np.uint8), "shape", id="two-channels"),
        pytest.param(np.ones((64, 64), bool), "dtype", id="bool"),
        pytest.param(np.ones((64, 64), complex), "dtype", id="complex"),
        pytest.param(np.full((64, 64), np.nan), "NaN", id="nan"),
        pytest.param(np.zeros((0, 0), np.uint8), "too small", id="empty"),
        pytest.param(np.full((64, 64), 7, np.uint8), "blank", id="blank"),
        pytest.param(np.arange(MIN_SIDE * 8, dtype=np.uint8).reshape(8, MIN_SIDE), "too small", id="thin"),
    ],
)
def test_bad_arrays_get_a_clear_error(array, words):
    with pytest.raises(ImageLoadError) as caught:
        load_image(array)
    assert_clear_error(caught.value, "<array>", (words,))


@pytest.mark.parametrize("file_name", MR_SMALL_FORMS)
def test_pydicom_samples_of_one_image_agree(file_name):
    path, reference = PYDICOM_FILES / file_name, PYDICOM_FILES / "MR_small.dcm"
    if not (path.is_file() and reference.is_file()):
        pytest.skip("pydicom's bundled test files are not installed")
    syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if decoder_available(syntax):
        np.testing.assert_array_equal(load_image(path), load_image(reference))
    else:
        with pytest.raises(ImageLoadError) as caught:
            load_image(path)
        assert_clear_error(caught.value, str(path), (syntax.name,))


def test_every_pydicom_sample_loads_or_gets_a_clear_error():
    paths = sorted(PYDICOM_FILES.glob("*.dcm"))
    if not paths:
        pytest.skip("pydicom's bundled test files are not installed")
    loaded = 0
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing but the result or the error comes out
            try:
                pixels = load_image(path)
            except ImageLoadError as error:
                assert_clear_error(error, str(path))
                continue
        assert pixels.dtype == np.uint8 and pixels.ndim == 2 and min(pixels.shape) >= MIN_SIDE
        loaded += 1
    assert loaded >= 20
