"""Make kept epochs a finished run's chosen checkpoint, for a choice Keras cannot monitor.

    python -m train.select_epoch runs/stage5/demo_mobilenetv2 --epoch 4
    python -m train.select_epoch runs/stage6/demo_mobilenetv2 --epoch 2 3 4   (their weight average)
    python -m train.select_epoch runs/lite_stage3/demo_lite0 --epoch 0 3     (the model it started from, and epoch 3)

A run trained with `keep_epochs: true` keeps every epoch's model in `epochs/epoch_NN.keras`; its
`best.keras` is the epoch with the best monitored metric. When the choice rests on something measured
outside training (the ensemble's fused lesion map scored at native resolution on validation, say), this
copies the chosen epoch to `best.keras` and redoes what training does with its best checkpoint: the
validation predictions, the threshold and `val_metrics.json`, which now record the chosen epoch.
`train.build_ensemble` then reads the run as usual. Nothing is replaced until the new files are ready.

Several epochs give their uniform weight average (a "model soup", Wortsman et al. 2022; stochastic
weight averaging, Izmailov et al. 2018): every weight, BatchNormalization's moving statistics included,
is the mean over the chosen epochs. The epochs of one run share their starting point, so their average
is one model of the same architecture and the same cost. Epoch 0 is that starting point itself, where the
run started from a saved model (its config's `weights` names a `.keras` file, as a later stage's does): a
soup of a stage and the one it continued.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from .config import load_config
from .train import KEPT_EPOCH, evaluate_on_validation, load_data


def select_epoch(run_dir: str | os.PathLike, epoch: int | Sequence[int]) -> dict:
    """Make `epochs/epoch_NN.keras` (or the weight average of several) the run's `best.keras` and
    rewrite the run's validation files for it."""
    run_dir = Path(run_dir)
    epochs = sorted({int(epoch)} if isinstance(epoch, int) else {int(e) for e in epoch})
    if not epochs:
        raise ValueError(f"{run_dir}: no epoch chosen")
    config = load_config(run_dir / "config.yaml")  # its files go to this folder, wherever it now lies
    chosen = [_epoch_model(run_dir, config.weights, e) for e in epochs]
    config = dataclasses.replace(config, out_dir=str(run_dir.parent), name=run_dir.name)
    _, val_rows, _ = load_data(config)
    staged = run_dir / "selecting.keras"
    try:
        if len(chosen) == 1:
            shutil.copyfile(chosen[0], staged)
        else:
            average_weights(chosen).save(staged)
        result = evaluate_on_validation(config, staged, val_rows, config.model_input_size, None)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    previous = json.loads((run_dir / "val_metrics.json").read_text()) if (run_dir / "val_metrics.json").exists() else {}
    result = {**previous, **result, "chosen_epoch": epochs[0] if len(epochs) == 1 else epochs,
              "chosen_by": "train.select_epoch" + (" (weight average)" if len(epochs) > 1 else "")}
    os.replace(staged, run_dir / "best.keras")
    (run_dir / "val_metrics.json").write_text(json.dumps(result, indent=2))
    return result


def _epoch_model(run_dir: Path, start: str | None, epoch: int) -> Path:
    """The saved model of one epoch of the run; 0: the `.keras` model the run started from."""
    if epoch == 0:
        if not (start and str(start).endswith(".keras")):
            raise ValueError(f"{run_dir}: epoch 0 is the model a run started from, and this run started from "
                             f"{start or 'random weights'!r}, not a .keras file")
        if not Path(start).is_file():
            raise FileNotFoundError(f"{start}: the model {run_dir} started from (epoch 0) is not there")
        return Path(start)
    path = run_dir / KEPT_EPOCH.format(epoch=epoch)
    if not path.is_file():
        kept = sorted(p.name for p in (run_dir / "epochs").glob("epoch_*.keras"))
        raise FileNotFoundError(f"{path}: no such kept epoch (kept: {', '.join(kept) or 'none'}; "
                                "train with keep_epochs: true)")
    return path


def average_weights(paths: Sequence[str | os.PathLike]) -> keras.Model:
    """The uniform average of the models saved at `paths` (one architecture): the first model, with
    each of its weights replaced by the mean over all of them."""
    models = [keras.saving.load_model(p, compile=False, safe_mode=True) for p in paths]
    shapes = [[w.shape for w in m.get_weights()] for m in models]
    for path, model_shapes in zip(paths[1:], shapes[1:]):
        if model_shapes != shapes[0]:
            raise ValueError(f"{path}: its weights do not match {paths[0]}'s; only epochs of one run average")
    stacked = zip(*(m.get_weights() for m in models))
    models[0].set_weights([np.mean(ws, axis=0).astype(ws[0].dtype) for ws in stacked])
    return models[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder written by train.train with keep_epochs: true")
    parser.add_argument("--epoch", type=int, nargs="+", required=True,
                        help="the epoch to choose (1 = the first; 0 = the .keras model the run started from); "
                             "several: their weight average")
    args = parser.parse_args(argv)
    try:
        result = select_epoch(args.run, args.epoch)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
