"""Coverage: what an ensemble was trained on, the one rule for inside/outside, and the colour check."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mura_core.coverage import (
    COLOURFULNESS_LIMIT,
    Coverage,
    colour_warning,
    coverage_warning,
    training_counts,
    training_coverage,
    training_data_frame,
    training_data_info,
)
from mura_core.imaging import ImageLoadError, colourfulness, load_image_info

DEMO = Coverage("FracAtlas", ("XR_HAND", "XR_SHOULDER", "LEG", "HIP"), "fracture", 2429)


def _index() -> pd.DataFrame:
    rows = [("train", "HAND", 1), ("train", "HAND", 0), ("train", "LEG", 0), ("train", "MIXED", 1),
            ("train", "SHOULDER", 0), ("val", "HIP", 0), ("test", "HIP", 1)]
    return pd.DataFrame(rows, columns=["split", "body_part", "label"])


def test_coverage_from_a_training_index():
    coverage = training_coverage(_index(), ["fracatlas"], notes="n")
    assert coverage.body_parts == ("XR_HAND", "XR_SHOULDER", "LEG")  # MURA's first; MIXED and val/test-only out
    assert (coverage.dataset, coverage.positive_label, coverage.n_images) == ("FracAtlas", "fracture", 5)
    assert Coverage.from_info({"coverage": coverage.to_info()}) == coverage
    assert training_coverage(_index(), ["mura"]).positive_label == "abnormal"


def test_training_counts_round_trip_through_the_manifest():
    info = {"training_data": training_data_info(_index(), "splits.csv")}
    frame = training_data_frame(info)
    assert frame["images"].sum() == 7
    row = frame[(frame["split"] == "train") & (frame["body_part"] == "XR_HAND") & (frame["label"] == "positive")]
    assert row["images"].tolist() == [1]
    assert frame.equals(training_counts(_index()))
    assert training_data_frame({}).empty


@pytest.mark.parametrize("part", ["XR_HAND", "hand", "HAND", "XR_SHOULDER", "LEG", "hip"])
def test_inside_the_coverage_no_warning(part):
    assert coverage_warning(DEMO, part) == ""
    assert DEMO.covers(part) is True


@pytest.mark.parametrize("part, name", [("XR_HUMERUS", "Humerus"), ("XR_WRIST", "Wrist"), ("ELBOW", "Elbow"),
                                        ("XR_FINGER", "Finger"), ("XR_FOREARM", "Forearm"), ("SKULL", "Skull")])
def test_outside_the_coverage_names_the_part_and_the_training_data(part, name):
    warning = coverage_warning(DEMO, part)
    assert warning.startswith(f"{name} is outside the installed model's training data")
    assert "hand, shoulder, leg and hip radiographs of FracAtlas (2,429 images)" in warning
    assert "fracture" in warning and "not meaningful" in warning
    assert DEMO.covers(part) is False


@pytest.mark.parametrize("part", ["", "OTHER", "MIXED"])
def test_unknown_body_part_is_unknown_not_covered(part):
    assert DEMO.covers(part) is None
    assert coverage_warning(DEMO, part).startswith("Body part unknown")


def test_no_recorded_coverage_is_unknown():
    assert Coverage.from_info({"title": "old ensemble"}) is None
    assert Coverage.from_info(None) is None
    assert "unknown" in coverage_warning(None, "XR_HAND")
    assert "unknown" in coverage_warning(None, "")


def _colour(source) -> float | None:
    """The colourfulness the decoder records (the colour check itself reads no file)."""
    return load_image_info(source).colourfulness


def test_colour_check(fracatlas):
    radiograph = next((fracatlas / "images").glob("*.jpg"))
    gray = np.asarray(Image.open(radiograph).convert("L"))
    as_rgb = io.BytesIO()
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(as_rgb, "JPEG")
    assert _colour(radiograph) == 0.0
    assert _colour(as_rgb.getvalue()) < 3  # gray stored as RGB JPEG
    assert colour_warning(_colour(as_rgb.getvalue())) == ""
    cast = np.clip(gray[..., None] * np.array([1.0, 0.95, 0.85]), 0, 255).astype(np.uint8)
    assert colour_warning(_colour(cast)) == ""  # a faint colour cast over a radiograph is still a radiograph
    assert colour_warning(None) == ""  # not measured (DICOM)

    photo = np.zeros((120, 160, 3), np.uint8)
    photo[:, :80] = (224, 172, 140)  # skin
    photo[:, 80:] = (60, 140, 60)  # green background
    assert colourfulness(photo) > COLOURFULNESS_LIMIT
    png = io.BytesIO()
    Image.fromarray(photo).save(png, "PNG")
    assert _colour(png.getvalue()) == pytest.approx(colourfulness(photo), rel=0.02)
    warning = colour_warning(_colour(png.getvalue()), "holiday.png")
    assert warning.startswith("holiday.png is in strong colour") and "not meaningful" in warning
    with pytest.raises(ImageLoadError):
        load_image_info(b"DICM not an image")
