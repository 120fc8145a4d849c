"""Fuzzing `load_image`: random bytes and mutated valid files, under any name, give a radiograph or one
`ImageLoadError`, and never another exception, a warning, or an image that breaks the loader's promises.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mura_core.imaging import MIN_SIDE, ImageLoadError, load_image
from tests.corpus import fuzz_seeds

FUZZ_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples on every run, so CI is reproducible
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NAMES = ("scan.png", "scan.jpg", "scan.dcm", "scan.tif", "scan", "SCAN.DCM")
SEEDS: dict[str, bytes] = {}


@pytest.fixture(scope="module", autouse=True)
def seeds(tmp_path_factory) -> dict[str, bytes]:
    SEEDS.update(fuzz_seeds(tmp_path_factory.mktemp("seeds")))
    return SEEDS


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@st.composite
def mutated_files(draw) -> bytes:
    """A seed file with a few bit flips, overwritten runs, truncations, deletions or splices."""
    seed = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[seed])
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "overwrite", "truncate", "delete", "splice", "header"]))
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "overwrite":
            patch = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(patch)] = patch
        elif op == "truncate":
            del data[at:]
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "splice":  # a run of another seed, e.g. a DICOM header on PNG data
            other = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
            start = draw(st.integers(0, len(other) - 1))
            data[at:at] = other[start : start + draw(st.integers(1, 512))]
        else:  # the headers hold sizes, lengths and tags: hit them more often than the pixels
            at = draw(st.integers(0, min(len(data), 400) - 1))
            data[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF, data[at] ^ 0xFF]))
    return bytes(data)


def check_loader(data: bytes, name: str, as_path: bool, folder: Path) -> None:
    """`load_image` returns a valid radiograph or raises one ImageLoadError naming the input."""
    if as_path:
        path = folder / name
        path.write_bytes(data)
        source, label, display_name = path, str(path), None
    else:
        source, label, display_name = data, name, name
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the loader decodes or raises; it does not warn
        try:
            pixels = load_image(source, name=display_name)
        except ImageLoadError as error:
            assert str(error).startswith(f"{label}: ") and error.reason
            return
    assert isinstance(pixels, np.ndarray) and pixels.ndim == 2 and pixels.dtype == np.uint8
    assert min(pixels.shape) >= MIN_SIDE
    assert pixels.max() > pixels.min()


@FUZZ_SETTINGS
@given(data=st.binary(max_size=2048), name=st.sampled_from(NAMES), as_path=st.booleans())
def test_random_bytes(data, name, as_path, fuzz_dir):
    check_loader(data, name, as_path, fuzz_dir)


@FUZZ_SETTINGS
@given(data=st.data(), name=st.sampled_from(NAMES), as_path=st.booleans())
def test_mutated_files(data, name, as_path, fuzz_dir):
    check_loader(data.draw(mutated_files()), name, as_path, fuzz_dir)


@FUZZ_SETTINGS
@given(
    prefix=st.sampled_from([b"DICM", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"BM"]),
    body=st.binary(max_size=1024),
    name=st.sampled_from(NAMES),
)
def test_random_bytes_behind_a_signature(prefix, body, name, fuzz_dir):
    data = b"\x00" * 128 + prefix + body if prefix == b"DICM" else prefix + body
    check_loader(data, name, False, fuzz_dir)
