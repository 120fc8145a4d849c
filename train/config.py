"""Training configuration: a YAML file plus `key=value` overrides into one frozen dataclass.

Unknown keys are rejected (with the list of valid ones), and the resolved config is saved next to
every checkpoint (`config.yaml` in the run folder). Nested settings are written as YAML mappings
(`augmentation: {rotation_degrees: 10}`) or dotted overrides (`augmentation.zoom=0.1`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from mura_core.pipeline import Augmentation, check_box_cells, check_crop, check_fraction
from mura_core.registry import get_spec


@dataclass(frozen=True)
class DataSource:
    """One dataset to train on: its root, layout (`auto`, `mura`, `fracatlas`, `folders`), split file."""

    root: str
    format: str = "auto"
    split_file: str | None = None


TRAIN_LAYERS = ("all", "lesion_map", "classifier")
LR_SCHEDULES = ("plateau", "cosine")
"""`train_layers` values: the whole model, the lesion-map head alone (`registry.train_lesion_head_only`) or
the classifier head alone (`registry.train_classifier_only`)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. Defaults are the MURA method's."""

    name: str = "run"
    model: str = "densenet169"
    weights: str | None = "imagenet"  # "imagenet", None (random init) or a weights file
    input_size: int | None = None  # None: the registry spec's (320 for the method's models)
    data: tuple[DataSource, ...] = ()
    train_split: str = "train"
    val_split: str | None = None  # None: hold out val_fraction of train, grouped by patient
    val_fraction: float = 0.1
    batch_size: int = 8
    epochs: int = 20
    learning_rate: float = 1e-4
    lr_schedule: str = "plateau"  # "plateau" (ReduceLROnPlateau) or "cosine" (decay to 0 over all epochs' steps)
    augmentation: Augmentation | None = Augmentation()  # None (YAML null): no augmentation
    oversample_abnormal: int = 1  # 2: abnormal images duplicated (the "_m2" variants)
    class_weights: bool = True
    dense_units: int = 512
    dropout: float = 0.5
    bn_momentum: float | None = None  # None: the backbone's; 0.9 helps training from scratch
    lesion_map: bool = False  # add a lesion-map head trained on the data's lesion boxes (FracAtlas)
    map_loss_weight: float = 1.0  # weight of the lesion-map loss beside the classification loss
    map_positive_weight: float = 20.0  # weight of a lesion cell against a background cell in that loss
    map_stride: int | None = None  # None: the spec's (16, one layer); 8: a top-down decoder (registry)
    map_pointing_weight: float = 0.0  # the pointing term: softmax of the map over positions vs the boxes
    map_hard_negative_weight: float = 0.0  # extra loss on the highest-scoring cells outside the boxes
    map_peak_weight: float = 0.0  # the peak margin: the highest box cell against the highest other cell
    map_cell_targets: str = "touch"  # a box's cell targets: "touch" (any pixel covered) or "coverage" (share)
    map_erase_fraction: float = 0.0  # share of boxed positives shown with their boxes erased, as negatives
    map_crop: int = 0  # train the map on crops of this side (pipeline.lesion_crops); 0: whole images
    map_paste_fraction: float = 0.0  # chance that an image gets a lesion of its batch and a decoy (paste_lesions)
    map_boxes: bool = False  # a box head beside the map (registry: lesion_boxes), for the regions' box sizes
    map_box_weight: float = 1.0  # weight of the box head's loss (pipeline.BoxLoss)
    map_box_cells: str = "centre"  # cells that regress a box: "centre" (centre in the box) or "touch" (any pixel)
    train_layers: str = "all"  # "all"; "lesion_map" or "classifier": only that head trains (the rest frozen)
    early_stopping_patience: int = 5
    reduce_lr_patience: int = 2
    reduce_lr_factor: float = 0.1
    monitor: str = "val_auc"
    keep_epochs: bool = False  # also save every epoch's model as epochs/epoch_NN.keras (to choose afterwards)
    threshold_sensitivity: float | None = None  # choose the threshold on validation for this recall
    steps_per_epoch: int | None = None  # limit (smoke tests); None = the whole training set
    validation_steps: int | None = None
    cache_dir: str | None = None  # preprocessed image cache (see mura_core.pipeline.build_cache)
    input_workers: int | None = None  # JAX / PyTorch input (pipeline.ImageBatches): reading threads, None: up to 4
    input_multiprocessing: bool = False  # ... read by processes instead of threads
    mixed_precision: str = "auto"  # "auto" (on with a GPU), "on", "off"
    jit_compile: bool = False
    run_eagerly: bool = False  # debugging and smoke tests: no graph tracing, much slower per step
    seed: int = 0
    out_dir: str = "runs"

    def __post_init__(self):
        if self.train_layers not in TRAIN_LAYERS:
            raise ValueError(f"train_layers: expected one of {', '.join(TRAIN_LAYERS)}, got {self.train_layers!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule: expected one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        check_fraction("map_erase_fraction", self.map_erase_fraction)
        check_fraction("map_paste_fraction", self.map_paste_fraction)
        if self.map_erase_fraction and not self.lesion_map:
            raise ValueError("map_erase_fraction erases lesion boxes, so it needs lesion_map: true")
        if self.map_paste_fraction and not self.lesion_map:
            raise ValueError("map_paste_fraction pastes lesion boxes, so it needs lesion_map: true")
        if self.map_boxes and not self.lesion_map:
            raise ValueError("map_boxes adds a box head beside the lesion map, so it needs lesion_map: true")
        check_box_cells(self.map_box_cells)
        if self.train_layers == "lesion_map" and not self.lesion_map:
            raise ValueError("train_layers: lesion_map trains the lesion-map head alone, so it needs lesion_map: true")
        if self.map_crop:
            check_crop(self.map_crop, self.model_input_size)
            if not self.lesion_map:
                raise ValueError("map_crop trains the lesion map on crops, so it needs lesion_map: true")
            if self.train_layers == "classifier":
                raise ValueError("map_crop trains the lesion map on crops, and train_layers: classifier "
                                 "trains the classifier alone: choose one")

    @property
    def model_input_size(self) -> int:
        """The side the run's model takes: `input_size`, or the registry spec's when it is None."""
        return int(self.input_size or get_spec(self.model).input_size)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, current: Any, key: str) -> Any:
    """Turn a command-line string into the type of the field's current value."""
    if not isinstance(value, str):
        return value
    parsed = yaml.safe_load(value) if value != "" else None
    if current is None or parsed is None:
        return parsed
    if isinstance(current, bool):
        if not isinstance(parsed, bool):
            raise ValueError(f"{key}: expected true or false, got {value!r}")
        return parsed
    if isinstance(current, (int, float)) and not isinstance(parsed, (int, float)):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    if isinstance(current, float):
        return float(parsed)
    if isinstance(current, str):
        return value
    return parsed


def _data_sources(value: Any) -> tuple[DataSource, ...]:
    if value in (None, "", []):
        return ()
    if isinstance(value, (str, dict)):
        value = [value]
    sources = []
    for item in value:
        if isinstance(item, str):
            item = {"root": item}
        unknown = set(item) - {f.name for f in fields(DataSource)}
        if unknown:
            raise ValueError(f"data: unknown keys {sorted(unknown)}; valid: root, format, split_file")
        sources.append(DataSource(**item))
    return tuple(sources)


_FLAT_AUGMENTATION = ("augment", "rotation_degrees", "shift", "zoom", "horizontal_flip")
"""Keys of configs written before `augmentation` was one mapping (older run folders' config.yaml)."""


def _nest_flat_augmentation(values: dict[str, Any]) -> dict[str, Any]:
    flat = {key: values.pop(key) for key in _FLAT_AUGMENTATION if key in values}
    if flat and "augmentation" not in values:
        enabled = flat.pop("augment", True)
        values["augmentation"] = {**dataclasses.asdict(Augmentation()), **flat} if enabled else None
    return values


def _augmentation(value: Any) -> Augmentation | None:
    if value is None or value is False:
        return None
    if isinstance(value, Augmentation):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"augmentation: expected a mapping of its settings or null, got {value!r}")
    valid = {f.name for f in fields(Augmentation)}
    unknown = sorted(set(value) - valid)
    if unknown:
        raise ValueError(f"augmentation: unknown keys {unknown}; valid: {', '.join(sorted(valid))}")
    return Augmentation(**value)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config and apply `key=value` overrides.

    Args:
        path: YAML file (a mapping of TrainConfig fields); None for the defaults.
        overrides: strings like `epochs=3` or `data=/path/to/MURA-v1.1`; values parsed as YAML.

    Raises:
        ValueError: an unknown key, a malformed override or a value of the wrong type.
    """
    values: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config must be a mapping of keys to values")
        values.update(_nest_flat_augmentation(dict(loaded)))
    defaults = TrainConfig()
    valid = {f.name for f in fields(TrainConfig)}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, raw = (part.strip() for part in item.split("=", 1))
        if "." in key:  # a nested setting: augmentation.zoom=0.1
            parent, child = key.split(".", 1)
            current = getattr(getattr(defaults, parent, None), child, None)
            nested = values.get(parent, getattr(defaults, parent, None))
            if dataclasses.is_dataclass(nested):
                nested = dataclasses.asdict(nested)
            if not isinstance(nested, dict):
                raise ValueError(f"override {item!r}: {parent!r} has no settings to override")
            values[parent] = {**nested, child: _coerce(raw, current, key)}
        else:
            values[key] = _coerce(raw, getattr(defaults, key, None), key)
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; valid keys: {', '.join(sorted(valid))}")
    if "data" in values:
        values["data"] = _data_sources(values["data"])
    if "augmentation" in values:
        values["augmentation"] = _augmentation(values["augmentation"])
    return TrainConfig(**values)


def save_config(config: TrainConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))

