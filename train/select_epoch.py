"""Make one kept epoch a finished run's chosen checkpoint, for a choice Keras cannot monitor.

    python -m train.select_epoch runs/stage5/demo_mobilenetv2 --epoch 4

A run trained with `keep_epochs: true` keeps every epoch's model in `epochs/epoch_NN.keras`; its
`best.keras` is the epoch with the best monitored metric. When the choice rests on something measured
outside training (the ensemble's fused lesion map scored at native resolution on validation, say), this
copies the chosen epoch to `best.keras` and redoes what training does with its best checkpoint: the
validation predictions, the threshold and `val_metrics.json`, which now record the chosen epoch.
`train.build_ensemble` then reads the run as usual. Nothing is replaced until the new files are ready.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

from .config import load_config
from .train import evaluate_on_validation, load_data


def select_epoch(run_dir: str | os.PathLike, epoch: int) -> dict:
    """Copy `epochs/epoch_NN.keras` to `best.keras` and rewrite the run's validation files for it."""
    run_dir = Path(run_dir)
    chosen = run_dir / "epochs" / f"epoch_{epoch:02d}.keras"
    if not chosen.is_file():
        kept = sorted(p.name for p in (run_dir / "epochs").glob("epoch_*.keras"))
        raise FileNotFoundError(f"{chosen}: no such kept epoch (kept: {', '.join(kept) or 'none'}; "
                                "train with keep_epochs: true)")
    config = load_config(run_dir / "config.yaml")  # its files go to this folder, wherever it now lies
    config = dataclasses.replace(config, out_dir=str(run_dir.parent), name=run_dir.name)
    _, val_rows, _ = load_data(config)
    staged = run_dir / "selecting.keras"
    shutil.copyfile(chosen, staged)
    try:
        result = evaluate_on_validation(config, staged, val_rows, config.model_input_size, None)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    previous = json.loads((run_dir / "val_metrics.json").read_text()) if (run_dir / "val_metrics.json").exists() else {}
    result = {**previous, **result, "chosen_epoch": epoch, "chosen_by": "train.select_epoch"}
    os.replace(staged, run_dir / "best.keras")
    (run_dir / "val_metrics.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder written by train.train with keep_epochs: true")
    parser.add_argument("--epoch", type=int, required=True, help="the epoch to choose (1 = the first)")
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
