"""Choose how fracture regions are read off the fused lesion map, and the score that shows one, on validation.

    python -m train.tune_regions [--weights FOLDER] --data ROOT [--format fracatlas] \
        [--split-file train/splits/fracatlas.csv] [--split val] [--cache DIR] [--out variants.csv] \
        [--settings regions.json] [--write]

Predicts the split once with the installed ensemble (the fused map of its default heatmap method, as
`Ensemble.predict_studies` computes it; kept in `--cache` per ensemble checksum, so reruns are fast), then
tries region parameters (`regions.RegionParams`) one at a time from the defaults, keeping each value
that raises AP@50 (ties: recall at 1 false positive per image), for two rounds. Every variant's
validation figures are printed (AP@50, AP@[.50:.95], recall at 0.5 and 1 false positive per image,
over every image of the split, normal ones included) and written to `--out`. The threshold for showing a
region as a finding is the chosen variant's best-F1 score at IoU 0.5. `--write` records both in the
ensemble's manifest ("regions"), where `Ensemble` reads them; `--settings FILE` keeps them as JSON for
`train.build_ensemble --regions FILE`. Never run this on the test split.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mura_core import regions  # noqa: E402
from mura_core.csvsafe import write_csv  # noqa: E402
from mura_core.datasets import index_dataset, load_boxes  # noqa: E402
from mura_core.installed import MANIFEST, read_manifest, weights_folder  # noqa: E402

GRID = {
    "mode": list(regions.REGION_MODES),  # "boxes" only where the ensemble has box heads
    "level": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
    "floor": [0.0, 0.02, 0.05, 0.1],
    "min_area": [0.0, 0.0005, 0.001, 0.002],
    "padding": [-0.2, -0.1, 0.0, 0.1, 0.2, 0.35],
    "score": ["max", "mean"],
    "max_regions": [1, 2, 3, 5],
    "nms_iou": [0.1, 0.3, 0.5],
    "probability_weight": [0.0, 0.25, 0.5, 0.75, 1.0],
}
"""The values tried for each parameter, one parameter at a time."""
COLUMNS = ["variant", *GRID, "ap50", "ap50_95", "recall_at_0.5_fp", "recall_at_1_fp", "best_f1",
           "best_f1_threshold", "n_regions"]


def cached_maps(weights: str | None, data: str, fmt: str, split_file: str | None, split: str,
                cache: Path) -> dict[str, dict]:
    """file name -> {"map" (fused map at the model's side), "shape" (H, W), "probability", "boxes" (the box
    field, None without box heads)} of the split's images, read from `cache` when this ensemble's were
    stored there, else predicted and stored."""
    manifest = read_manifest(weights)  # what makes the maps and probabilities (not the region settings)
    key = json.dumps([[[m.get("sha256"), m.get("map_positive_weight")] + ([m["map_evidence"]] if m.get("map_evidence")
                                                                          else []) for m in manifest["members"]],
                      manifest.get("heatmap_fusion")] + ([True] if manifest.get("test_time_flip") else []))
    path = cache / f"maps_{hashlib.sha256(key.encode()).hexdigest()[:16]}_{split}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            names = stored["names"].tolist()
            return {n: {"map": stored[f"map_{i}"].astype(np.float32), "shape": tuple(stored["shapes"][i]),
                        "probability": float(stored["probabilities"][i]),
                        "boxes": stored[f"boxes_{i}"] if f"boxes_{i}" in stored else None}
                    for i, n in enumerate(names)}
    from mura_core.ensemble import load_ensemble
    from mura_core.results import Study

    ensemble = load_ensemble(weights)
    table = index_dataset(data, fmt, split_file).table
    paths = table.loc[table["split"] == split, "path"].tolist()
    if not paths:
        raise ValueError(f"no images of split {split!r} in {data}")
    studies = (Study([p], [Path(p).name], "") for p in paths)
    out = {}
    for done, result in enumerate(ensemble.predict_studies(studies, explain=True, batch_size=8), start=1):
        image = result.images[0]
        if image.ok:
            out[image.name] = {"map": image.heatmaps["ensemble"], "shape": image.image.shape[:2],
                               "probability": float(image.ensemble), "boxes": image.box_field}
        if done % 64 == 0:
            print(f"{done}/{len(paths)} images predicted", file=sys.stderr)
    cache.mkdir(parents=True, exist_ok=True)
    names = list(out)
    np.savez_compressed(path, names=np.array(names), shapes=np.array([out[n]["shape"] for n in names]),
                        probabilities=np.array([out[n]["probability"] for n in names]),
                        **{f"map_{i}": out[n]["map"].astype(np.float16) for i, n in enumerate(names)},
                        **{f"boxes_{i}": out[n]["boxes"] for i, n in enumerate(names) if out[n]["boxes"] is not None})
    return out


def score_variant(maps: dict[str, dict], truths: dict[str, list], params: regions.RegionParams,
                  curve: bool = False) -> dict:
    """`regions.detection_metrics` of `params` over every image of `maps`."""
    names = sorted(maps)
    found = [regions.find_regions(maps[n]["map"], maps[n]["shape"], params, maps[n]["probability"],
                                  maps[n].get("boxes")) for n in names]
    return regions.detection_metrics(found, [truths.get(n, []) for n in names], curve=curve)


def tune(maps: dict[str, dict], truths: dict[str, list], rounds: int = 2,
         start: regions.RegionParams | None = None) -> tuple[regions.RegionParams, pd.DataFrame]:
    """One parameter at a time over `GRID`, keeping what raises (AP@50, recall at 1 FP per image). With box
    heads (box fields in `maps`) the search starts from mode "boxes"; without, that mode is not tried.

    Returns:
        The chosen parameters and one row per variant tried (its parameters and figures).
    """
    has_boxes = all(m.get("boxes") is not None for m in maps.values())
    grid = {**GRID, "mode": [m for m in GRID["mode"] if has_boxes or m != "boxes"]}
    best = start or regions.RegionParams(mode="boxes" if has_boxes else "components")
    seen: dict[tuple, dict] = {}
    rows = []

    def figures(params: regions.RegionParams) -> dict:
        key = tuple(asdict(params).values())
        if key not in seen:
            seen[key] = score_variant(maps, truths, params)
            row = {"variant": len(rows) + 1, **asdict(params), **{k: seen[key][k] for k in COLUMNS if k in seen[key]}}
            rows.append(row)
            print(" ".join(f"{k}={_fmt(row[k])}" for k in COLUMNS), flush=True)
        return seen[key]

    def rank(params: regions.RegionParams) -> tuple[float, float]:
        result = figures(params)
        return result["ap50"], result["recall_at_1_fp"]

    for _ in range(rounds):
        for name, values in grid.items():
            for value in values:
                candidate = replace(best, **{name: value})
                if rank(candidate) > rank(best):
                    best = candidate
    return best, pd.DataFrame(rows, columns=COLUMNS)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_settings(folder: Path, settings: regions.RegionSettings) -> Path:
    """Record `settings` as the manifest's "regions" entry (the rest of the manifest unchanged), atomically."""
    manifest = read_manifest(folder)
    manifest[regions.REGIONS_KEY] = settings.to_info()
    path = folder / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="ensemble folder (default: $MURA_WEIGHTS or weights/)")
    parser.add_argument("--data", required=True, help="dataset root with lesion boxes (FracAtlas)")
    parser.add_argument("--format", default="fracatlas")
    parser.add_argument("--split-file", default="train/splits/fracatlas.csv")
    parser.add_argument("--split", default="val", help="the split tuned on (never test)")
    parser.add_argument("--cache", default="/tmp/mura_region_maps", help="folder for the predicted maps")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", help="CSV of every variant's figures")
    parser.add_argument("--settings", help="JSON file for the chosen settings (train.build_ensemble --regions)")
    parser.add_argument("--write", action="store_true", help="record the choice in the ensemble's manifest")
    args = parser.parse_args(argv)
    if args.split == "test":
        parser.error("regions are tuned on validation, never on the test split")
    boxes = load_boxes(args.data, args.format)
    if not boxes:
        parser.error(f"{args.data}: the {args.format} layout has no lesion boxes to tune regions on")
    maps = cached_maps(args.weights, args.data, args.format, args.split_file, args.split, Path(args.cache))
    truths = {name: regions.xywh_to_xyxy(boxes.get(name) or []) for name in maps}
    print(f"{len(maps)} {args.split} images, {sum(map(len, truths.values()))} annotated boxes", file=sys.stderr)
    params, variants = tune(maps, truths, args.rounds)
    chosen = score_variant(maps, truths, params)
    threshold = chosen["best_f1_threshold"]
    settings = regions.RegionSettings(
        params, threshold, f"best F1 of regions at IoU 0.5 on {args.split} ({len(maps)} images)",
        {k: v for k, v in chosen.items() if k != "froc"})
    if args.out:
        write_csv(variants, args.out, float_format="%.4f")
    print(json.dumps(settings.to_info(), indent=2))
    if args.settings:
        Path(args.settings).write_text(json.dumps(settings.to_info(), indent=2))
    if args.write:
        print(f"written to {write_settings(weights_folder(args.weights), settings)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
