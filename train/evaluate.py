"""Evaluate an ensemble on a dataset split and write the report.

    python -m train.evaluate --weights FOLDER --data ROOT [--format auto] [--split valid] \
        [--split-file FILE] --out FOLDER

Writes `report.json`, `predictions.csv`, member-comparison and per-body-part CSVs and `figures.html`
(ROC, calibration, per body part, confusion), image- and study-level, with bootstrap 95% confidence
intervals. On a layout with lesion boxes (FracAtlas) it also scores Grad-CAM localization against
them (pointing game, heatmap mass inside boxes).
Paths in `predictions.csv` are relative to ROOT, so a report can be shared without the machine's layout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mura_core import localization  # noqa: E402
from mura_core.datasets import get_layout, index_dataset, layout_names  # noqa: E402
from mura_core.ensemble import load_ensemble  # noqa: E402
from mura_core.installed import weights_folder  # noqa: E402
from mura_core.reports import build_report, write_report  # noqa: E402
from mura_core.vocabulary import level_key  # noqa: E402

log = logging.getLogger("evaluate")


def _histories(weights: Path) -> dict:
    """Training histories bundled beside the weights (history_<member>.csv), if any."""
    out = {}
    for path in sorted(weights.glob("history_*.csv")):
        frame = pd.read_csv(path)
        if "epoch" not in frame:
            frame.insert(0, "epoch", np.arange(len(frame)))
        out[path.stem.removeprefix("history_")] = {c: frame[c].astype(float).tolist() for c in frame}
    return out


def evaluate(weights: str | None, data: str, out: str, fmt: str = "auto", split: str | None = None,
             split_file: str | None = None, n_boot: int = 1000, localize: bool = True) -> dict:
    """Predict `split` of the dataset at `data` with the ensemble in `weights` and write the report."""
    ensemble = load_ensemble(weights)
    index = index_dataset(data, fmt, split_file)
    table = index.table
    if split is not None:
        table = table[table["split"] == split]
        if table.empty:
            raise ValueError(f"no rows with split {split!r} in {data}")
    log.info("evaluating %d images (%d abnormal) from %s", len(table), int(table["label"].sum()), data)
    predictions = ensemble.predict_files(table["path"].tolist())
    failed = predictions[predictions["error"] != ""]
    for _, row in failed.iterrows():
        log.warning("could not read %s: %s", row["path"], row["error"])
    merged = table.drop(columns=["body_part"]).merge(predictions.drop(columns=["body_part"]), on="path")
    merged.insert(2, "body_part", table.set_index("path").loc[merged["path"], "body_part"].to_numpy())
    merged = merged[merged["error"] == ""].reset_index(drop=True)
    loc = None
    boxes = get_layout(index.format).boxes(data) if localize else None
    if boxes:
        loc = localization.score_ensemble(ensemble, merged, boxes)
    weights_dir = weights_folder(weights)
    report = build_report(
        merged, ensemble.names, ensemble.threshold,
        data={"root": str(data), "format": index.format, "split": split or "all",
              "unreadable_images": int(len(failed))},
        n_boot=n_boot, localization=loc, history=_histories(weights_dir) or None,
    )
    write_report(report, merged.assign(path=merged["path"].map(lambda p: _relative_to(p, data))), out)
    return report


def _relative_to(path: str, root: str) -> str:
    """`path` relative to the dataset root, or unchanged when it lies elsewhere."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="ensemble folder (default: $MURA_WEIGHTS or weights/)")
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--format", default="auto", choices=["auto", *layout_names()])
    parser.add_argument("--split", help="only rows of this split (MURA: valid)")
    parser.add_argument("--split-file", help="CSV path_key,split that assigns splits")
    parser.add_argument("--out", required=True, help="folder for report.json and plots")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    parser.add_argument("--no-localization", action="store_true", help="skip the Grad-CAM vs boxes scores")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    report = evaluate(args.weights, args.data, args.out, args.format, args.split, args.split_file,
                      args.n_boot, not args.no_localization)
    key = level_key("image")
    summary = {m: {k: report[key][m][k] for k in ("auc", "accuracy", "recall", "specificity")} for m in report[key]}
    print(json.dumps({key: summary, "threshold": report["threshold"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
