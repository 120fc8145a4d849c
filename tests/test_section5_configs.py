"""The section 5 configs (Multi-Region data, published and leak-free; FracAtlas + Multi-Region) and a
`data:` list of two datasets, read the way `train.train` reads them, on tiny data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from mura_core.datasets import index_dataset, write_split_file
from train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "train" / "configs"
SAMPLES = sorted((ROOT / "weights" / "samples").glob("*.jpg"))


def test_section_5_1_configs_differ_only_in_split():
    published = load_config(CONFIGS / "multi_region_mobilenetv2_published.yaml").to_dict()
    leak_free = load_config(CONFIGS / "multi_region_mobilenetv2_leak_free.yaml").to_dict()
    differing = {key for key in published if published[key] != leak_free[key]}
    assert differing == {"name", "data", "val_split", "cache_dir"}
    assert leak_free["data"][0]["split_file"] == "train/splits/multi_region_leak_free.csv"
    for name in ("multi_region_published.csv", "multi_region_leak_free.csv"):
        split = pd.read_csv(ROOT / "train" / "splits" / name, keep_default_na=False)
        assert len(split) == 9752 and (split["split"] == "").sum() == 12  # the undecodable files


def test_section_5_1_lite0_configs_change_only_the_network():
    for split in ("published", "leak_free"):
        scratch = load_config(CONFIGS / f"multi_region_mobilenetv2_{split}.yaml").to_dict()
        lite = load_config(CONFIGS / f"multi_region_lite0_{split}.yaml").to_dict()
        differing = {key for key in scratch if scratch[key] != lite[key]}
        assert differing == {"name", "model", "weights", "learning_rate", "bn_momentum"}
        assert (lite["model"], lite["weights"], lite["bn_momentum"]) == ("efficientnet_lite0", "imagenet", None)


def test_section_5_2_config_lists_both_datasets():
    config = load_config(CONFIGS / "fracatlas_multi_region_mobilenetv2.yaml")
    assert [source.format for source in config.data] == ["fracatlas", "folders"]
    alone = load_config(CONFIGS / "demo_fracatlas_mobilenetv2.yaml")
    assert config.data[0] == alone.data[0]
    same = {"model", "input_size", "epochs", "learning_rate", "augmentation", "batch_size", "val_split"}
    assert all(getattr(config, key) == getattr(alone, key) for key in same)


def _folders(root: Path, split_of: dict[str, str]) -> Path:
    """Sample radiographs as ``root/{normal,abnormal}/NAME`` and a split file ``root.csv`` from ``split_of``."""
    for k, name in enumerate(split_of):
        folder = root / ("abnormal" if k % 2 else "normal")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLES[k % len(SAMPLES)], folder / name)
    table = index_dataset(root).table
    table["split"] = [split_of[Path(p).name] for p in table["path"]]
    write_split_file(table, root, root.parent / f"{root.name}.csv")
    return root


def test_a_data_list_trains_on_both_and_validates_where_val_is(tmp_path):
    from train.train import load_data

    first = _folders(tmp_path / "first", {f"a{k}.jpg": "train" if k < 4 else "val" for k in range(6)})
    second = _folders(tmp_path / "second", {f"b{k}.jpg": "train" for k in range(4)})
    config = load_config(None, [
        f"data=[{{root: {first}, format: folders, split_file: {tmp_path / 'first.csv'}}}, "
        f"{{root: {second}, format: folders, split_file: {tmp_path / 'second.csv'}}}]",
        "val_split=val"])
    train, val, index = load_data(config)
    assert index.format == "combined" and len(index.table) == 10
    assert len(train) == 8 and sum("/second/" in p for p in train["path"]) == 4
    assert len(val) == 2 and all("/first/" in p for p in val["path"])
