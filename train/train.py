"""Train one ensemble member.

    python -m train.train --config train/configs/densenet169_m1.yaml data=/data/MURA-v1.1 [key=value ...]

A run folder (`out_dir/name/`) receives the resolved `config.yaml`, the best checkpoint
`best.keras` (by `monitor`), `history.csv` and `history.html`, the validation predictions and
`val_metrics.json`. An interrupted run resumes from `backup/` when started again with the same
config. With several GPUs it trains on all of them (MirroredStrategy), across machines when
TF_CONFIG is set (MultiWorkerMirroredStrategy, see `train/multi_worker.py`: only the chief writes
the run folder), with mixed precision on GPUs. With `map_crop`, a twin of the model that shares its
weights trains the lesion map on crops (`registry.crop_trainer`), and the model validates on whole images.

Keras' backend is TensorFlow unless `KERAS_BACKEND` says `jax` or `torch`; then TensorFlow need not be
installed: the input is `pipeline.ImageBatches` instead of `tf.data`, and on JAX several devices (and
machines, through `keras.distribution.initialize`'s variables) train data-parallel (`backend.data_parallel`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pandas as pd  # noqa: E402

from mura_core import backend, metrics  # noqa: E402
from mura_core.charts import history_figure, write_figures  # noqa: E402
from mura_core.datasets import (  # noqa: E402
    DatasetIndex,
    combine,
    index_dataset,
    load_boxes,  # noqa: E402
    split_by_patient,
)
from mura_core.pipeline import (  # noqa: E402
    BoxIoU,
    BoxLoss,
    LesionMapLoss,
    LesionTargets,
    PointingGame,
    build_cache,
    class_weights,
    lesion_targets,
    make_dataset,
    oversample,
)
from mura_core.registry import (  # noqa: E402
    create_model,
    crop_trainer,
    get_spec,
    train_classifier_only,
    train_lesion_head_only,
)
from mura_core.vocabulary import level_key  # noqa: E402

from .config import TrainConfig, load_config, save_config  # noqa: E402

log = logging.getLogger("train")
KEPT_EPOCH = "epochs/epoch_{epoch:02d}.keras"  # a run's model after each epoch (keep_epochs), 1 = the first


def choose_strategy():
    """On TensorFlow: MultiWorkerMirroredStrategy with TF_CONFIG, MirroredStrategy with 2+ GPUs, else the
    default strategy. On JAX: None, after setting `keras.distribution.DataParallel` when there are several
    devices (`backend.data_parallel`). On PyTorch: None (one device).

    With TF_CONFIG this must run before any other TensorFlow op in the process (collective ops are
    configured when the runtime starts), which is why `run` calls it first.
    """
    if not backend.is_tensorflow():
        backend.data_parallel()
        return None
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def scratch_dir(name: str, role: str) -> Path:
    """A worker's (not the chief's) folder for run `name`: in the system's temporary folder, at a fixed path
    so that BackupAndRestore resumes it after a restart on the same machine."""
    return Path(tempfile.gettempdir()) / "mura_train_workers" / f"{name}-{role}"


def load_data(config: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame, DatasetIndex]:
    """Index the config's datasets and return (train rows, validation rows, the whole index)."""
    if not config.data:
        raise ValueError("no training data: set data=/path/to/dataset (or a `data:` list in the YAML)")
    indexes = [index_dataset(s.root, s.format, s.split_file) for s in config.data]
    index = indexes[0] if len(indexes) == 1 else combine(indexes)
    for problem in index.problems[:20]:
        log.warning("data problem: %s: %s", problem.path, problem.reason)
    if len(index.problems) > 20:
        log.warning("... and %d more data problems", len(index.problems) - 20)
    table = index.table
    train = table[table["split"] == config.train_split]
    if train.empty:
        splits = sorted(table["split"].unique())
        raise ValueError(f"no rows with split {config.train_split!r}; the data has splits {splits}")
    if config.val_split is not None:
        val = table[table["split"] == config.val_split]
        if val.empty:
            raise ValueError(f"no rows with split {config.val_split!r} for validation")
    else:
        train, val = split_by_patient(train, config.val_fraction, seed=config.seed)
    return train.reset_index(drop=True), val.reset_index(drop=True), index


def compile_model(model: keras.Model, config: TrainConfig, crops: bool = False, total_steps: int | None = None) -> None:
    """Compile `model` as the method trains: Adam, binary cross-entropy, accuracy, AUC, precision, recall
    (and, with a lesion map, `LesionMapLoss` on the map, weighted `map_loss_weight`; with `map_boxes`,
    `BoxLoss` on the box head, weighted `map_box_weight`, and its `BoxIoU`). `crops`: the twin
    that trains on crops (`registry.crop_trainer`), whose classification weights are 0: the map's
    metrics only. With `lr_schedule: cosine` the learning rate decays to 0 over `total_steps` (the
    optimizer's step count, which BackupAndRestore restores, so a resumed run continues the curve)."""
    classification = [
        keras.metrics.BinaryAccuracy(name="accuracy"),
        keras.metrics.AUC(name="auc"),
        keras.metrics.Precision(name="precision"),
        keras.metrics.Recall(name="recall"),
    ]
    if config.lesion_map:
        loss = {"probability": keras.losses.BinaryCrossentropy(),
                "lesion_map": LesionMapLoss(config.map_positive_weight, config.map_pointing_weight,
                                            config.map_hard_negative_weight, config.map_peak_weight)}
        loss_weights = {"probability": 1.0, "lesion_map": config.map_loss_weight}
        metrics_ = {"lesion_map": [PointingGame()]} if crops else \
            {"probability": classification, "lesion_map": [PointingGame()]}
        if config.map_boxes:
            loss["lesion_box"], loss_weights["lesion_box"] = BoxLoss(), config.map_box_weight
            metrics_["lesion_box"] = [BoxIoU()]
    else:
        loss, loss_weights, metrics_ = keras.losses.BinaryCrossentropy(), None, classification
    # On JAX "auto" compiles with XLA (always), on PyTorch it runs without torch.compile.
    jit_compile = config.jit_compile if backend.is_tensorflow() else (config.jit_compile or "auto")
    learning_rate = config.learning_rate
    if config.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, max(1, int(total_steps or 1)))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, loss_weights=loss_weights,
                  metrics=metrics_, jit_compile=jit_compile, run_eagerly=config.run_eagerly)


def monitored(config: TrainConfig) -> str:
    """The metric `config.monitor` names, as Keras logs it (classifier metrics get the output's prefix
    when the model also has a lesion map: val_auc -> val_probability_auc; the map's own metrics are
    named in full, such as val_lesion_map_pointing)."""
    monitor = config.monitor
    if config.lesion_map and not any(o in monitor for o in ("probability", "lesion_map")) \
            and monitor not in ("loss", "val_loss"):
        prefix = "val_" if monitor.startswith("val_") else ""
        monitor = f"{prefix}probability_{monitor.removeprefix(prefix)}"
    return monitor


def lesion_boxes(config: TrainConfig) -> dict:
    """Lesion boxes by file name from the config's datasets (those whose layout has boxes)."""
    boxes = {}
    for source in config.data:
        boxes.update(load_boxes(source.root, source.format) or {})
    if not boxes:
        raise ValueError("lesion_map=true needs a dataset whose layout has lesion boxes (e.g. FracAtlas)")
    return boxes


class WholeImageValidation(keras.callbacks.Callback):
    """Validation on whole images while `fit` trains a crop twin (`registry.crop_trainer`): after every
    epoch, evaluates `model` (the whole-image model, compiled) on `data` and adds its figures to the
    epoch's logs as `val_*`, for the callbacks after this one (checkpoints, the learning-rate and
    early-stopping rules, the CSV log)."""

    def __init__(self, model: keras.Model, data, steps: int | None = None):
        super().__init__()
        self.whole, self.data, self.steps = model, data, steps

    def on_epoch_end(self, epoch, logs=None):
        figures = self.whole.evaluate(self.data, steps=self.steps, verbose=0, return_dict=True)
        if logs is not None:
            logs.update({f"val_{name}": float(value) for name, value in figures.items()})


class Checkpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint` that saves `model` whichever model `fit` trains (the whole-image model, when
    a crop twin trains it)."""

    def __init__(self, model: keras.Model, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._saved = model

    def set_model(self, model):
        super().set_model(self._saved)


def _best_so_far(history_csv, monitor: str) -> float | None:
    if not history_csv.exists():
        return None
    history = pd.read_csv(history_csv)
    return float(history[monitor].max()) if monitor in history and len(history) else None


def run(config: TrainConfig, extra_callbacks: list | None = None) -> dict:
    """Train one member as `config` says.

    Across machines (TF_CONFIG set) every worker runs this; only the chief writes the run folder
    (config, history, checkpoints, predictions, plots). The other workers write their checkpoints
    and backup to `scratch_dir`, removed when training ends.

    Args:
        config: the resolved training config.
        extra_callbacks: Keras callbacks added after the run's own (tests, progress reports).

    Returns:
        On the chief, the validation metrics of the best checkpoint (also in `val_metrics.json`);
        on another worker, {"chief": False, "epochs_run": ...}.
    """
    strategy = choose_strategy()  # first: MultiWorkerMirroredStrategy must precede any other TF op
    if strategy is not None:
        from . import multi_worker

        chief, role = multi_worker.worker_role(strategy)
    else:
        process, processes = backend.process()
        chief, role = process == 0, "chief" if process == 0 else f"process{process}"
    keras.utils.set_random_seed(config.seed)
    run_dir = config.run_dir if chief else scratch_dir(config.name, role)
    run_dir.mkdir(parents=True, exist_ok=True)
    backup_dir, history_csv, best_path = run_dir / "backup", run_dir / "history.csv", run_dir / "best.keras"
    resuming = backup_dir.exists()
    if not resuming:
        history_csv.unlink(missing_ok=True)
    if chief:
        save_config(config, run_dir / "config.yaml")

    policy = backend.mixed_precision_policy(config.mixed_precision)
    if policy != "float32":
        keras.mixed_precision.set_global_policy(policy)
    size = config.model_input_size

    train_rows, val_rows, _ = load_data(config)
    train_rows = oversample(train_rows, config.oversample_abnormal)
    distribution = keras.distribution.distribution() if strategy is None else None
    weights = class_weights(train_rows["label"]) if config.class_weights else None
    log.info("train: %d images (%d abnormal), validation: %d images (%d abnormal), class weights %s",
             len(train_rows), int(train_rows["label"].sum()), len(val_rows), int(val_rows["label"].sum()),
             weights)
    cache = None
    if config.cache_dir:
        all_paths = sorted(set(train_rows["path"]) | set(val_rows["path"]))
        # Each worker builds its own cache: workers may share the folder, never the file being written.
        cache = build_cache(all_paths, size, Path(config.cache_dir) / ("" if chief else role))
    # The batch size is per device: a process feeds its devices' share of the global batch (on JAX,
    # every process reads its own rows and pads batches to a multiple of its devices).
    devices = strategy.num_replicas_in_sync if strategy is not None else 1
    pad_multiple, shard = 1, slice(None)
    if distribution is not None:
        import jax

        devices = pad_multiple = jax.local_device_count()
        shard = slice(backend.process()[0], None, backend.process()[1])
    global_batch = config.batch_size * devices
    train_lesions = val_lesions = None
    if config.lesion_map:
        boxes, map_size = lesion_boxes(config), size // (config.map_stride or get_spec(config.model).map_stride)
        train_lesions = lesion_targets(train_rows, boxes, map_size, config.map_cell_targets,
                                       config.map_erase_fraction, config.map_crop, config.map_paste_fraction,
                                       config.map_boxes, config.map_box_cells)
        val_lesions = lesion_targets(val_rows, boxes, map_size, config.map_cell_targets, box_head=config.map_boxes,
                                     box_cells=config.map_box_cells)
        log.info("lesion map: %d training and %d validation images with known lesion boxes (or none)",
                 int(train_lesions.weight.sum()), int(val_lesions.weight.sum()))
    workers = dict(workers=config.input_workers, use_multiprocessing=config.input_multiprocessing,
                   pad_multiple=pad_multiple)
    train_ds = make_dataset(train_rows[shard], size, global_batch, True, config.augmentation, config.seed, cache,
                            train_lesions and _rows(train_lesions, shard), weights, **workers)
    val_ds = make_dataset(val_rows[shard], size, global_batch, False, cache=cache,
                          lesions=val_lesions and _rows(val_lesions, shard), class_weight=weights, **workers)
    if config.steps_per_epoch:
        train_ds = train_ds.repeat()

    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = create_model(config.model, config.weights, size, config.dense_units, config.dropout,
                             config.bn_momentum, config.lesion_map, config.map_stride, config.map_boxes)
        if config.train_layers == "lesion_map":
            train_lesion_head_only(model)
        elif config.train_layers == "classifier":
            train_classifier_only(model)
        # With map_crop a twin trains on crops and shares every weight with `model`, which validates
        # on whole images and is what the checkpoints hold.
        trainer = crop_trainer(model, config.map_crop) if config.map_crop else model
        total_steps = config.epochs * (config.steps_per_epoch or math.ceil(len(train_rows[shard]) / global_batch))
        compile_model(model, config, total_steps=total_steps)
        if trainer is not model:
            compile_model(trainer, config, crops=True, total_steps=total_steps)
    multi = False
    if strategy is not None:
        from . import multi_worker

        multi_worker.prepare_fit(trainer, strategy, config.map_crop or size)
        multi = multi_worker.is_multi_worker(strategy)
    monitor = monitored(config)
    callbacks = [
        *([WholeImageValidation(model, val_ds, config.validation_steps)] if trainer is not model else []),
        *([multi_worker.AverageBatchNormStatistics(strategy)] if multi else []),
        keras.callbacks.BackupAndRestore(str(backup_dir)),
        Checkpoint(model, str(best_path), monitor=monitor, mode="max", save_best_only=True,
                   initial_value_threshold=_best_so_far(history_csv, monitor)),
        *([Checkpoint(model, str(run_dir / KEPT_EPOCH))] if config.keep_epochs and chief else []),
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        *([keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode="max", factor=config.reduce_lr_factor,
                                             patience=config.reduce_lr_patience, min_lr=1e-7, verbose=1)]
          if config.lr_schedule == "plateau" else []),
        keras.callbacks.EarlyStopping(monitor=monitor, mode="max",
                                      patience=config.early_stopping_patience, verbose=1),
        *(extra_callbacks or []),
    ]
    started = time.time()
    # `ImageBatches` (any backend but TensorFlow) and the lesion-map pipeline carry the class weights themselves.
    fit_class_weight = weights if backend.is_tensorflow() and not config.lesion_map else None
    trainer.fit(train_ds, validation_data=val_ds if trainer is model else None, epochs=config.epochs,
                steps_per_epoch=config.steps_per_epoch, validation_steps=config.validation_steps,
                class_weight=fit_class_weight, callbacks=callbacks, verbose=2)
    elapsed = time.time() - started
    if distribution is not None:  # validation predictions below: one process, one device
        keras.distribution.set_distribution(None)
    history = pd.read_csv(history_csv)
    if not chief:
        shutil.rmtree(run_dir, ignore_errors=True)
        return {"chief": False, "epochs_run": len(history)}
    curves = {config.name: history.to_dict("list")}  # CSVLogger keeps an `epoch` column
    write_figures([history_figure({"history": curves})], run_dir / "history.html", config.name)
    if not best_path.exists():  # e.g. the monitored metric never improved on a resumed run's best
        model.save(best_path)
    result = evaluate_on_validation(config, best_path, val_rows, size, cache)
    result["train_seconds_this_session"] = round(elapsed, 1)
    result["epochs_run"] = len(history)
    (run_dir / "val_metrics.json").write_text(json.dumps(result, indent=2))
    shutil.rmtree(backup_dir, ignore_errors=True)
    return result


def _rows(lesions: LesionTargets, rows: slice) -> LesionTargets:
    """The lesion targets of a slice of the rows (a process's share)."""
    return dataclasses.replace(lesions, boxes=lesions.boxes[rows], weight=lesions.weight[rows])


def evaluate_on_validation(config: TrainConfig, best_path, val_rows: pd.DataFrame, size: int, cache) -> dict:
    """Predict the validation rows with the best checkpoint, save them, choose the threshold."""
    model = keras.saving.load_model(best_path, compile=False, safe_mode=True)
    probs = model.predict(make_dataset(val_rows, size, config.batch_size, False, cache=cache), verbose=0)
    probs = (probs["probability"] if isinstance(probs, dict) else probs)[:, 0]
    if len(probs) != len(val_rows):  # undecodable images were dropped by the pipeline
        raise RuntimeError("some validation images could not be decoded; see the warnings above")
    frame = val_rows.assign(probability=probs)
    frame.to_csv(config.run_dir / "val_predictions.csv", index=False)
    threshold, _ = metrics.choose_threshold(frame["label"], probs, config.threshold_sensitivity)
    return {"threshold": threshold, level_key("image"): metrics.binary_metrics(frame["label"], probs, threshold)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (train/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=3 data=/data/MURA-v1.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config, args.overrides)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = run(config)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
