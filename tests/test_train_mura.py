"""The one-command MURA pipeline end to end on a tiny MURA tree: interrupted, resumed, finished."""

from __future__ import annotations

import json

import keras
import pandas as pd
import pytest

from mura_core.mura_facts import (
    compare_with_published,
    comparison_summary,
    comparison_warnings,
    published_images,
    published_studies,
)
from tests.mura_tree import make_mura_tree
from train import train_mura
from train.progress import PlannedMember, RunState, format_seconds, seconds_left

# Tiny settings for all four members: the pipeline is under test, not the architectures (the method's
# DenseNet-169 / ResNet-101 configs are trained in tests/test_method_configs.py).
TINY = ["model=mobilenetv2", "weights=null", "input_size=32", "epochs=1", "steps_per_epoch=1",
        "batch_size=2", "dense_units=8", "run_eagerly=true", "val_fraction=0.25"]


class InterruptSecondMember(keras.callbacks.Callback):
    """Stops the run (like Ctrl-C) at the end of the first epoch of the second member trained."""

    trainings = 0

    def on_train_begin(self, logs=None):
        InterruptSecondMember.trainings += 1

    def on_epoch_end(self, epoch, logs=None):
        if InterruptSecondMember.trainings == 2:
            raise KeyboardInterrupt("simulated interruption")


@pytest.mark.slow
def test_pipeline_interrupted_then_resumed_to_the_end(tmp_path, capsys):
    data = make_mura_tree(tmp_path / "data", {"train": 12, "valid": 6}, images_per_study=2)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        train_mura.run_pipeline(data, out, TINY, n_boot=20, extra_callbacks=[InterruptSecondMember()])
    first = capsys.readouterr().out
    # the tiny tree differs, and says so in short: missing body parts in one line, then each differing cell
    assert "warning: a partial copy: no image of Elbow, Finger, Forearm, Humerus (of MURA's 7 body parts)" in first
    assert "warning: train XR_HAND: 8 images, MURA v1.1 has 5543" in first
    assert "[1/4 densenet169_m1] epoch 1/1" in first and "training time left at most" in first
    runs = out / "runs"
    assert (runs / "densenet169_m1" / "val_metrics.json").is_file()
    assert (runs / "densenet169_m2" / "backup").is_dir()  # interrupted after its epoch: resumable
    assert not (runs / "densenet169_m2" / "val_metrics.json").exists()
    finished_at = (runs / "densenet169_m1" / "best.keras").stat().st_mtime_ns

    result = train_mura.run_pipeline(data, out, TINY, n_boot=20)
    second = capsys.readouterr().out
    assert result["skipped"] == ["densenet169_m1"]
    assert result["trained"] == ["densenet169_m2", "resnet101_m1", "resnet101_m2"]
    assert (runs / "densenet169_m1" / "best.keras").stat().st_mtime_ns == finished_at  # not retrained
    assert "densenet169_m1: already trained" in second and "resuming" in second
    assert len(pd.read_csv(runs / "densenet169_m2" / "history.csv")) == 1  # resumed, not restarted

    weights = out / "weights"
    manifest = json.loads((weights / "manifest.json").read_text())
    assert [m["name"] for m in manifest["members"]] == list(train_mura.MEMBERS)
    assert "sensitivity >= 0.8" in manifest["info"]["threshold_rule"]
    report = result["report"]
    assert report["data"]["split"] == "valid" and report["data"]["n_images"] == 12
    assert {"auc", "kappa"} <= set(report["study_level"]["ensemble"]["ci"])
    assert (weights / "report" / "per_body_part_image.csv").is_file()
    card = (weights / "MODEL_CARD.md").read_text()
    assert "MURA method ensemble" in card and f"{report['threshold']:.4f}" in card
    assert f"MURA_WEIGHTS={weights.resolve()}" in second
    state = json.loads((out / "state.json").read_text())
    assert all(m["status"] == "done" for m in state["members"].values())
    assert set(state["steps"]) == {"ensemble", "evaluate", "model_card"}

    # A third start has nothing left to train or evaluate.
    again = train_mura.run_pipeline(data, out, TINY, n_boot=20)
    assert again["trained"] == [] and "already evaluated" in capsys.readouterr().out


def test_pipeline_rejects_overrides_it_sets(tmp_path):
    with pytest.raises(ValueError, match="the pipeline sets data"):
        train_mura.member_configs(tmp_path, tmp_path, ["data=/elsewhere"])
    with pytest.raises(ValueError, match="unknown config keys"):
        train_mura.member_configs(tmp_path, tmp_path, ["epoch=3"])
    with pytest.raises(ValueError, match="members: expected one of method, offline"):
        train_mura.run_pipeline(tmp_path, tmp_path / "out", members="lite")
    assert not (tmp_path / "out").exists()


def test_comparison_with_published_counts():
    rows = [{"path": f"p{i}", "split": "train", "body_part": "XR_HUMERUS", "study": f"s{i // 2}"}
            for i in range(1272)]
    comparison = compare_with_published(pd.DataFrame(rows)).set_index(["split", "body_part"])
    humerus = comparison.loc[("train", "XR_HUMERUS")]
    assert humerus["images_match"] and humerus["images_published"] == 1272
    assert humerus["studies"] == 636 and humerus["studies_published"] == 592 and not humerus["studies_close"]
    warnings = comparison_warnings(comparison.reset_index())
    assert "train XR_HUMERUS: 636 study folders, the MURA paper counts 592 studies" in warnings
    assert not any(w.startswith("train XR_HUMERUS: 1272 images") for w in warnings)
    summary = comparison_summary(comparison.reset_index())  # a humerus-only copy: a few lines, not 28
    assert summary[0] == ("a partial copy: no image of Elbow, Finger, Forearm, Hand, Shoulder, Wrist "
                          "(of MURA's 7 body parts)")
    assert summary[1:] == ["train XR_HUMERUS: 636 study folders, the MURA paper counts 592 studies",
                           "valid XR_HUMERUS: 0 images, MURA v1.1 has 288",
                           "valid XR_HUMERUS: 0 study folders, the MURA paper counts 135 studies"]
    studies = published_studies().groupby(["split", "body_part"])["studies"].sum()
    full = pd.DataFrame([{"path": f"{split}{part}{i}", "split": split, "body_part": part,
                          "study": f"{split}{part}{i % studies[(split, part)]}"}
                         for (split, part), n in published_images().set_index(["split", "body_part"])
                         ["images"].items() for i in range(n)])
    assert comparison_summary(compare_with_published(full)) == []


def test_time_left_uses_measured_epochs(tmp_path):
    plan = [PlannedMember("d1", "densenet169", 4), PlannedMember("r1", "resnet101", 2)]
    state = RunState(tmp_path / "state.json")
    assert seconds_left(plan, state) is None
    state.member("d1")["epoch_seconds"] = [10.0, 14.0]
    # d1: 2 epochs left at 12 s; r1: 2 epochs at 12 s scaled by 15.9 / 6.9 GFLOPs.
    assert seconds_left(plan, state) == pytest.approx(24 + 2 * 12 * 15.9 / 6.9)
    state.member("d1")["status"] = "done"
    state.member("r1")["epoch_seconds"] = [30.0]
    assert seconds_left(plan, state) == pytest.approx(30.0)
    assert format_seconds(3725) == "1 h 02 min" and format_seconds(75) == "1 min 15 s"


def test_missing_data_is_named_and_nothing_is_written(tmp_path, capsys):
    from mura_core.datasets import DatasetError

    with pytest.raises(DatasetError, match="nowhere: dataset root does not exist"):
        train_mura.run_pipeline(tmp_path / "nowhere", tmp_path / "out", TINY)
    assert not (tmp_path / "out").exists()
