"""The ensemble bundled in weights/: intact, small, documented with the numbers train.evaluate measured.

These tests read the committed files; the CLI test runs the real models on the bundled samples and
checks that they reproduce the probabilities the evaluation report recorded for the same images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mura_core import cli, get_spec
from mura_core.ensemble import load_ensemble, read_manifest
from train.model_card import model_card

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"
REPORT = WEIGHTS / "report" / "report.json"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return read_manifest(WEIGHTS)


@pytest.fixture(scope="module")
def report() -> dict:
    return json.loads(REPORT.read_text())


def test_weights_folder_stays_under_45_mb():
    """Both formats of every member: the ONNX graphs (float32, they serve predictions) and the .keras
    weights (float16 where needed: gradients and training only)."""
    size = sum(p.stat().st_size for p in WEIGHTS.rglob("*") if p.is_file())
    assert size <= 45e6, f"weights/ holds {size / 1e6:.1f} MB"
    keras_size = sum(p.stat().st_size for p in WEIGHTS.glob("*.keras"))
    assert keras_size <= 30e6, f"the Keras members hold {keras_size / 1e6:.1f} MB"


def test_bundled_ensemble_loads_verified(manifest):
    ensemble = load_ensemble()  # checks every member's sha256 against the manifest
    # The demo's member(s) were chosen on validation (docs/bundled-model.md); every one is a registered architecture.
    assert ensemble.names == [m["name"] for m in manifest["members"]]
    assert all(get_spec(m["architecture"]) for m in manifest["members"])
    assert ensemble.threshold == pytest.approx(manifest["threshold"])


def test_threshold_was_chosen_on_validation_for_sensitivity(manifest, report):
    validation = manifest["info"]["validation"]
    assert validation["recall"] >= 0.8
    assert validation["threshold"] == pytest.approx(manifest["threshold"])
    assert report["threshold"] == pytest.approx(manifest["threshold"])
    assert report["data"]["split"] == "test"


def test_samples_cover_both_classes_with_attribution():
    samples = pd.read_csv(WEIGHTS / "samples" / "samples.csv")
    assert 2 <= len(samples) <= 12
    assert set(samples["label"]) == {0, 1}
    assert samples["attribution"].str.contains("FracAtlas").all()
    assert all((WEIGHTS / "samples" / name).is_file() for name in samples["file"])


def test_model_card_and_readme_carry_the_measured_numbers(manifest, report):
    card = (WEIGHTS / "MODEL_CARD.md").read_text()
    assert card.strip() == model_card(manifest, report).strip(), "regenerate with python -m train.model_card"
    ensemble_row = next(line for line in card.splitlines() if line.startswith("| ensemble |"))
    assert ensemble_row in (ROOT / "README.md").read_text()


def test_cli_default_weights_reproduce_the_report(tmp_path, report):
    out = tmp_path / "samples.csv"
    assert cli.main(["predict", "--out", str(out), str(WEIGHTS / "samples")]) == 0
    rows = pd.read_csv(out)
    assert rows["error"].isna().all()
    recorded = pd.read_csv(WEIGHTS / "report" / "predictions.csv")
    recorded = recorded.set_index(recorded["path"].map(lambda p: Path(p).name))
    names = rows["path"].map(lambda p: Path(p).name)
    assert names.isin(recorded.index).all(), "the samples come from the evaluated test split"
    np.testing.assert_allclose(rows["ensemble"], recorded.loc[names, "ensemble"], atol=1e-4)


def _derived_training_data(folder, info, root):
    import yaml

    from train.build_ensemble import training_data

    config = dict(next(iter(info["members"].values())))
    config["data"] = [{**source, "root": str(root)} for source in config["data"]]
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return training_data(folder, info["coverage"]["notes"])


def test_manifest_records_the_coverage_build_ensemble_derives(tmp_path, manifest, fracatlas):
    """On the fixture, build_ensemble's derivation is a part of the recorded one; on the full copy
    (when it is beside the repository) it is the recorded one."""
    from mura_core.coverage import Coverage, training_data_frame
    from tests.data import FRACATLAS_FULL

    info = manifest["info"]
    derived = _derived_training_data(tmp_path, info, fracatlas)
    recorded = training_data_frame(info).set_index(["split", "body_part", "label"])["images"]
    part = training_data_frame(derived).set_index(["split", "body_part", "label"])["images"]
    assert len(part) and (part <= recorded.reindex(part.index)).all()
    same = ("dataset", "positive_label", "notes")
    assert {k: derived["coverage"][k] for k in same} == {k: info["coverage"][k] for k in same}
    assert set(derived["coverage"]["body_parts"]) <= set(info["coverage"]["body_parts"])
    assert derived["coverage"]["n_images"] == part.xs("train", level="split").sum()
    if FRACATLAS_FULL.is_dir():
        derived = _derived_training_data(tmp_path, info, FRACATLAS_FULL)
        assert derived["coverage"] == info["coverage"]
        assert training_data_frame(derived).equals(training_data_frame(info))
    coverage = Coverage.from_info(info)
    assert coverage.body_parts == ("XR_HAND", "XR_SHOULDER", "LEG", "HIP")
    assert (coverage.positive_label, coverage.n_images) == ("fracture", 2429)
    assert "hand and shoulder are covered" in coverage.notes


def test_cli_warns_outside_the_coverage(tmp_path):
    from PIL import Image

    hand = WEIGHTS / "samples" / "IMG0000019.jpg"  # a FracAtlas hand radiograph
    for folder, name in (("a", "XR_HUMERUS.png"), ("b", "XR_HAND.png"), ("c", "image.png")):
        (tmp_path / folder).mkdir()
        Image.open(hand).save(tmp_path / folder / name)
    photo = np.zeros((96, 128, 3), np.uint8)
    photo[:, :64], photo[:, 64:] = (224, 172, 140), (60, 140, 60)
    (tmp_path / "d").mkdir()
    Image.fromarray(photo).save(tmp_path / "d" / "XR_HAND_photo.png")
    out = tmp_path / "out.csv"
    assert cli.main(["predict", "--out", str(out), str(tmp_path)]) == 0
    rows = pd.read_csv(out, keep_default_na=False)
    warning = dict(zip(rows["path"].map(lambda p: Path(p).name), rows["warning"]))
    assert warning["XR_HUMERUS.png"].startswith("Humerus is outside the installed model's training data")
    assert "hand, shoulder, leg and hip radiographs of FracAtlas" in warning["XR_HUMERUS.png"]
    assert warning["XR_HAND.png"] == ""
    assert warning["image.png"].startswith("Body part unknown")
    assert "strong colour" in warning["XR_HAND_photo.png"]
    assert list(rows.columns[-2:]) == ["warning", "error"]
