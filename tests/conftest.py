"""Shared fixtures.

- `fracatlas`: the committed FracAtlas fixture (tests/data/fracatlas: real radiographs with boxes).
- `fake_report`: a report.json dict built by `mura_core.reports` from random predictions.
- `tiny_weights`: a weights folder like the one the app installs: a two-member ensemble of tiny
  untrained models (32-64 px), `samples/` with a few real radiographs, and `report.json`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.data import FRACATLAS, FRACATLAS_ATTRIBUTION

# tests/backend_smoke runs in an environment without TensorFlow (KERAS_BACKEND=jax, `.ci/run`); the rest needs it.
collect_ignore = ["backend_smoke"] if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow" else []

TINY_MEMBERS = {"mobilenetv2_a": ("mobilenetv2", 64), "densenet121_b": ("densenet121", 32)}
TINY_THRESHOLD = 0.45


@pytest.fixture(scope="session")
def fracatlas() -> Path:
    """The committed FracAtlas fixture folder (dataset.csv, images/, annotations.json)."""
    return FRACATLAS


def build_report(members: list[str], threshold: float = 0.5, seed: int = 0, n_studies: int = 48) -> dict:
    """A report.json dict with every section, built by `mura_core.reports` from random but informative
    predictions (plus made-up localization, sanity check and training history, which need a real run)."""
    from mura_core.body_parts import MURA_BODY_PARTS
    from mura_core.localization import localization_summary, map_reliability, reliability_counts
    from mura_core.reports import build_report as report_from_predictions

    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_studies):
        label = int(rng.random() < 0.4)
        part = MURA_BODY_PARTS[s % len(MURA_BODY_PARTS)]
        for k in range(int(rng.integers(1, 4))):
            rows.append({"path": f"s{s}/image{k}.png", "study": f"s{s}", "patient": f"p{s // 2}",
                         "body_part": part, "label": label})
    table = pd.DataFrame(rows)
    for i, member in enumerate(members):
        noise = rng.normal(0, 0.18 + 0.04 * i, len(table))
        table[member] = np.clip(0.3 + 0.35 * table["label"] + noise, 0, 1)
    models = [*members, "ensemble"]
    table["ensemble"] = table[members].mean(axis=1)
    hits = rng.random((len(models), 30))
    localization = {m: localization_summary(
        [{"hit": h < 0.6, "mass": h * 0.5, "box_area_fraction": 0.12} for h in hits[i]], n_boot=50)
        for i, m in enumerate(models)}
    history = {m: {"epoch": [1, 2, 3, 4], "loss": [0.7, 0.6, 0.55, 0.5],
                   "val_loss": [0.72, 0.65, 0.62, 0.63], "accuracy": [0.55, 0.62, 0.66, 0.7],
                   "val_accuracy": [0.52, 0.6, 0.63, 0.62], "auc": [0.58, 0.66, 0.71, 0.75],
                   "val_auc": [0.55, 0.63, 0.67, 0.66]} for m in members}
    report = report_from_predictions(table, members, threshold,
                                     data={"root": "/data/test", "format": "mura", "split": "valid"},
                                     n_boot=50, localization=localization, history=history)
    report["sanity"] = {"method": "gradcam", "images": 8, "members": {
        m: [{"stage": "head", "layers": 3, "spearman": 0.8 - 0.1 * i, "spearman_abs": 0.8 - 0.1 * i, "undefined": 0},
            {"stage": "head + top 10% of the backbone (5 layers)", "layers": 8, "spearman": 0.2,
             "spearman_abs": 0.25, "undefined": 1}] for i, m in enumerate(members)}}
    report["detection"] = _fake_detection(rng)
    report["map_reliability"] = map_reliability([reliability_counts(rng.random((16, 16)), [(8, 8, 12, 12)], (32, 32))])
    report["created"] = "2024-01-01T00:00:00"
    return report


def _fake_detection(rng) -> dict:
    """`regions.detection_metrics` of made-up regions: 20 images, half with one box, each image with a region
    near its box (or anywhere) of random score, as `train.evaluate` records them."""
    from mura_core.regions import Region, detection_metrics

    found, truths = [], []
    for k in range(20):
        truths.append([(10, 10, 50, 50)] if k % 2 else [])
        shift = int(rng.integers(0, 30))
        found.append([Region(10 + shift, 10, 50 + shift, 50, float(rng.random()))])
    return {**detection_metrics(found, truths), "threshold": 0.5, "method": "lesion_map"}


@pytest.fixture(scope="session")
def fake_report() -> dict:
    """A schema-valid report for the tiny ensemble's member names (do not mutate; copy it)."""
    return build_report(list(TINY_MEMBERS), TINY_THRESHOLD)


def _sample_sources() -> list[tuple[str, int, Path]]:
    """(study, label, FracAtlas image) for the sample studies."""
    plan = [("demo-fractured-hand", 1), ("demo-fractured-hand", 1), ("demo-normal-hand", 0),
            ("demo-one-unreadable-file", 0)]
    table = pd.read_csv(FRACATLAS / "dataset.csv")
    hands = table[(table["hand"] == 1) & (table["mixed"] == 0)]
    fractured = list(hands.loc[hands["fractured"] == 1, "image_id"][:2])
    normal = list(hands.loc[hands["fractured"] == 0, "image_id"][:2])
    images = [*fractured, *normal]
    return [(study, label, FRACATLAS / "images" / image) for (study, label), image in zip(plan, images)]


def write_samples(folder: Path) -> None:
    """Write `samples/` (images + samples.csv) into a weights folder; one study has a truncated file."""
    samples = folder / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (study, label, source) in enumerate(_sample_sources()):
        name = f"sample{i + 1}.jpg"
        shutil.copyfile(source, samples / name)
        rows.append({"file": name, "study": study, "label": label, "body_part": "XR_HAND",
                     "attribution": FRACATLAS_ATTRIBUTION})
    good = samples / rows[-1]["file"]
    (samples / "truncated.jpg").write_bytes(good.read_bytes()[:600])
    rows.append({**rows[-1], "file": "truncated.jpg"})
    pd.DataFrame(rows).to_csv(samples / "samples.csv", index=False)


def _with_sample_statistics(model, size: int):
    """`model` (random weights) with its BatchNormalization statistics set from the sample radiographs
    (one forward pass in training mode, at momentum 0). With the initial statistics (mean 0, variance
    1) an untrained MobileNetV2's activations shrink to about 1e-11 by its last block at inference, and
    its Grad-CAMs are flat: the dashboard's tests need maps with a peak."""
    from PIL import Image

    from mura_core.preprocessing import resize_square

    grays = [np.asarray(Image.open(source).convert("L")) for _, _, source in _sample_sources()]
    model(np.stack([resize_square(gray, size) for gray in grays]).astype(np.float32), training=True)
    return model


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory, fake_report) -> Path:
    """A weights folder: tiny two-member ensemble (threshold 0.45), samples/ and report.json."""
    import keras

    from mura_core.ensemble import Ensemble
    from mura_core.registry import create_model

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("weights") / "tiny"
    members = {name: _with_sample_statistics(create_model(arch, input_size=size, bn_momentum=0.0), size)
               for name, (arch, size) in TINY_MEMBERS.items()}
    info = {
        "title": "Tiny test ensemble",
        "trained_on": "nothing (random weights, for tests)",
        "license": "CC BY 4.0 (sample images)",
        "attribution": FRACATLAS_ATTRIBUTION,
        "intended_use": "Software tests only.",
        "limitations": "Untrained: its outputs mean nothing.",
    }
    Ensemble(members, threshold=TINY_THRESHOLD, info=info,
             architectures={name: arch for name, (arch, _) in TINY_MEMBERS.items()}).save(folder)
    write_samples(folder)
    (folder / "report.json").write_text(json.dumps(fake_report, allow_nan=False))
    return folder
