"""End to end on real radiographs: MURA-layout tree -> index -> train -> ensemble -> evaluate -> CLI predict."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

from mura_core import cli
from mura_core.ensemble import load_ensemble
from tests.data import FRACATLAS
from tests.mura_tree import make_mura_tree
from train import build_ensemble, evaluate, select_epoch
from train import train as train_module
from train.config import load_config


@pytest.fixture(scope="module")
def mura_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mura")
    make_mura_tree(root, {"train": 12, "valid": 6}, images_per_study=2)
    return root


def test_index_cli_counts(mura_root, tmp_path, capsys):
    out = tmp_path / "index.csv"
    assert cli.main(["index", str(mura_root), "--out", str(out)]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 36
    assert table.groupby("split").size().to_dict() == {"train": 24, "valid": 12}
    assert table.groupby("split")["patient"].nunique().to_dict() == {"train": 12, "valid": 6}
    assert set(table["body_part"]) == {"XR_WRIST", "XR_HAND", "XR_SHOULDER"}
    printed = capsys.readouterr().out
    assert "mura layout" in printed and "MURA v1.1 found vs published" in printed
    assert "a partial copy: no image of Elbow, Finger, Forearm, Humerus (of MURA's 7 body parts)" in printed


def test_train_ensemble_evaluate_predict(mura_root, tmp_path):
    runs = []
    for name, model, size in [("mnv2", "mobilenetv2", 64), ("effb0", "efficientnetb0", 64)]:
        config = load_config(None, [
            f"name={name}", f"model={model}", "weights=", f"input_size={size}", f"data={mura_root}",
            "batch_size=4", "epochs=2", "dense_units=16", f"out_dir={tmp_path / 'runs'}",
            "oversample_abnormal=2", "threshold_sensitivity=0.8",
        ])
        result = train_module.run(config)
        run = config.run_dir
        for file in ("config.yaml", "best.keras", "history.csv", "history.html", "val_metrics.json",
                     "val_predictions.csv"):
            assert (run / file).exists(), file
        assert len(pd.read_csv(run / "history.csv")) == 2
        assert 0.0 <= result["threshold"] <= 1.0
        runs.append(run)

    weights = tmp_path / "weights"
    ensemble = build_ensemble.build(runs, weights, sensitivity=0.8, info={"title": "test"})
    assert ensemble.names == ["mnv2", "effb0"]
    manifest = json.loads((weights / "manifest.json").read_text())
    assert [m["architecture"] for m in manifest["members"]] == ["mobilenetv2", "efficientnetb0"]

    # Reloaded ensemble predicts exactly as the one in memory.
    image = next((mura_root / "MURA-v1.1" / "valid").rglob("*.png"))
    reloaded = load_ensemble(weights)
    first, second = ensemble.predict_study([image]), reloaded.predict_study([image])
    assert first.probability == pytest.approx(second.probability, abs=1e-6)

    report_dir = tmp_path / "report"
    report = evaluate.evaluate(str(weights), str(mura_root), str(report_dir), split="valid", n_boot=50)
    assert report["data"]["n_images"] == 12 and report["data"]["n_studies"] == 6
    assert set(report["image_level"]) == {"mnv2", "effb0", "ensemble"}
    assert set(report["study_level"]["ensemble"]["ci"]) >= {"auc", "kappa"}
    for file in ("report.json", "predictions.csv", "figures.html", "per_body_part_image.csv",
                 "comparison_study.csv"):
        assert (report_dir / file).exists(), file
    figures = (report_dir / "figures.html").read_text()
    assert "ROC curves (image level)" in figures and "ROC curves (study level)" in figures
    written = pd.read_csv(report_dir / "predictions.csv")
    assert len(written) == 12 and all((mura_root / p).is_file() for p in written["path"])  # relative to ROOT

    # CLI predict on a folder plus a broken file: one row per input, exit status 1, error named.
    study_dir = image.parent
    broken = tmp_path / "broken.png"
    broken.write_text("this is a text file that was given an image extension\n")
    out_csv = tmp_path / "pred.csv"
    status = cli.main(["predict", "--weights", str(weights), "--out", str(out_csv), str(study_dir), str(broken)])
    assert status == 1
    rows = pd.read_csv(out_csv, keep_default_na=False)
    assert len(rows) == 3
    assert {"path", "study", "body_part", "mnv2", "effb0", "ensemble", "verdict", "error"} <= set(rows.columns)
    good = rows[rows["error"] == ""]
    assert len(good) == 2 and set(good["body_part"]) == {image.parts[-4]}
    assert good["verdict"].isin(["normal", "abnormal"]).all()
    assert "text" in rows.loc[rows["path"] == str(broken), "error"].item()

    # Only good files: exit 0.
    assert cli.main(["predict", "--weights", str(weights), "--out", str(out_csv), str(image)]) == 0


def test_resume_after_interruption(mura_root, tmp_path):
    """A run stopped after epoch 1 continues at epoch 2 when started again with the same config, and
    keeps every epoch's model under the numbers of the uninterrupted run."""

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt("simulated interruption")

    config = load_config(None, ["name=resume", "model=mobilenetv2", "weights=", "input_size=32",
                                f"data={mura_root}", "batch_size=8", "epochs=2", "dense_units=8",
                                f"out_dir={tmp_path}", "keep_epochs=true"])
    with pytest.raises(KeyboardInterrupt):
        train_module.run(config, extra_callbacks=[Interrupt()])
    assert (config.run_dir / "backup").exists()
    assert len(pd.read_csv(config.run_dir / "history.csv")) == 1
    result = train_module.run(config)
    history = pd.read_csv(config.run_dir / "history.csv")
    assert history["epoch"].tolist() == [0, 1]
    assert result["epochs_run"] == 2
    assert not (config.run_dir / "backup").exists()
    kept = sorted(p.name for p in (config.run_dir / "epochs").iterdir())
    assert kept == ["epoch_01.keras", "epoch_02.keras"]
    assert keras.saving.load_model(config.run_dir / "epochs" / "epoch_02.keras", compile=False).name

    chosen = select_epoch.select_epoch(config.run_dir, 1)  # a choice made outside training
    assert chosen["chosen_epoch"] == 1 and 0.0 <= chosen["threshold"] <= 1.0
    assert (config.run_dir / "best.keras").read_bytes() == (config.run_dir / "epochs" / "epoch_01.keras").read_bytes()
    assert json.loads((config.run_dir / "val_metrics.json").read_text())["chosen_epoch"] == 1
    assert pd.read_csv(config.run_dir / "val_predictions.csv")["probability"].between(0, 1).all()
    with pytest.raises(FileNotFoundError, match="epoch_03.keras: no such kept epoch"):
        select_epoch.select_epoch(config.run_dir, 3)

    averaged = select_epoch.select_epoch(config.run_dir, [2, 1])  # their weight average
    assert averaged["chosen_epoch"] == [1, 2]
    best, first, second = (keras.saving.load_model(p, compile=False) for p in
                           [config.run_dir / "best.keras", *sorted((config.run_dir / "epochs").iterdir())])
    for mean, a, b in zip(best.get_weights(), first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_allclose(mean, (a + b) / 2, rtol=1e-5, atol=1e-7)
    assert not np.allclose(first.get_weights()[0], second.get_weights()[0])  # two different epochs

    # epoch 0: the model a run started from, for a later stage's soup with the stage it continued
    with pytest.raises(ValueError, match="epoch 0 is the model a run started from.*random weights"):
        select_epoch.select_epoch(config.run_dir, [0, 2])
    settings = yaml.safe_load((config.run_dir / "config.yaml").read_text())
    start = shutil.copy(config.run_dir / "epochs" / "epoch_01.keras", tmp_path / "stage1.keras")
    (config.run_dir / "config.yaml").write_text(yaml.safe_dump({**settings, "weights": str(start)}))
    assert select_epoch.select_epoch(config.run_dir, [0, 2])["chosen_epoch"] == [0, 2]
    for mean, again in zip(best.get_weights(), keras.saving.load_model(config.run_dir / "best.keras",
                                                                        compile=False).get_weights()):
        np.testing.assert_allclose(again, mean, rtol=1e-6, atol=1e-7)


def test_predict_without_weights_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MURA_WEIGHTS", str(tmp_path / "nothing"))
    image = next((FRACATLAS / "images").glob("*.jpg"))
    assert cli.main(["predict", str(image)]) == 2
    assert "no ensemble is installed" in capsys.readouterr().err
