"""Assemble trained runs into an ensemble folder (manifest + members), choosing its threshold.

    python -m train.build_ensemble --runs runs/densenet169_m1 runs/resnet101_m1 ... --out weights/ \
        [--sensitivity 0.8] [--title "..."] [--trained-on "..."] [--keras-float16]
    python -m train.build_ensemble --add-onnx weights/ [--keras-float16]

Each member is written twice: as `.keras` (Keras: gradients, training) and as `.onnx` (ONNX Runtime serves
the forward pass: probability, lesion map, Grad-CAM), the ONNX graph refused when its outputs on the
bundled sample radiographs differ from Keras' (`mura_core.onnx_export`). `--add-onnx FOLDER` writes the
ONNX graphs of an ensemble installed without them. `--keras-float16` stores the `.keras` weights in float16
(half the size; the ONNX graphs keep float32).

The threshold is chosen on the runs' shared validation predictions (mean of the members, as the
ensemble predicts): the highest threshold whose sensitivity reaches `--sensitivity`; 0.5 without it.
Never choose it on the test split. An ensemble that reads images otherwise than its runs did in training
(`--map-evidence W [W ...]`: each lesion-map member's probability takes its map's peak with weight W, one
weight for all members or one per run, `decision.member_probability`; `--test-time-flip`: each member also
reads the mirror image, `mura_core.test_time`) predicts those validation images itself, and its threshold
is chosen on that.

The manifest also records what the members were trained on, read from the first run's data (the
members of an ensemble share their data): the coverage (body parts of the training split, what the
positive label means, image count, dataset) and the images per split, body part and label. Notes on
how the body parts were decided can be given in the info file as `coverage: {notes: ...}`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from mura_core import metrics  # noqa: E402
from mura_core.coverage import COVERAGE_KEY, TRAINING_DATA_KEY, training_coverage, training_data_info  # noqa: E402
from mura_core.datasets import combine, index_dataset  # noqa: E402
from mura_core.decision import ensemble_probability  # noqa: E402
from mura_core.ensemble import Ensemble, load_keras_member  # noqa: E402
from mura_core.heatmaps import FUSION_RULES  # noqa: E402
from mura_core.installed import MANIFEST, read_manifest, sha256_file, weights_folder  # noqa: E402
from mura_core.onnx_export import halve_keras_weights, write_onnx_member  # noqa: E402
from mura_core.regions import REGIONS_KEY, RegionSettings  # noqa: E402
from mura_core.vocabulary import LESION_MAP  # noqa: E402
from train.config import load_config  # noqa: E402


def validation_predictions(runs: list[Path]) -> pd.DataFrame:
    """The runs' validation predictions side by side (inner join on path) with their mean."""
    merged = None
    for run in runs:
        frame = pd.read_csv(run / "val_predictions.csv")[["path", "label", "probability"]]
        frame = frame.rename(columns={"probability": run.name})
        merged = frame if merged is None else merged.merge(frame.drop(columns="label"), on="path")
    if merged is None or merged.empty:
        raise ValueError("the runs share no validation images; train them on the same split and seed")
    members = [r.name for r in runs]
    merged["ensemble"] = [ensemble_probability(row) for row in merged[members].to_numpy()]
    return merged


def own_predictions(ensemble: Ensemble, paths: list[str]) -> list[float]:
    """The ensemble's probabilities for image files (one study each), through its one prediction path."""
    frame = ensemble.predict_files(paths, batch_size=8)
    failed = frame[frame["error"] != ""]
    if not failed.empty:
        raise ValueError(f"{failed['path'].iloc[0]}: {failed['error'].iloc[0]}")
    return frame["ensemble"].astype(float).tolist()


def training_data(run: Path, notes: str = "") -> dict:
    """The manifest entries `coverage` and `training_data` for the data the run in `run` was trained on."""
    config = load_config(run / "config.yaml")
    indexes = [index_dataset(s.root, s.format, s.split_file) for s in config.data]
    table = combine(indexes).table
    split_files = ", ".join(s.split_file for s in config.data if s.split_file)
    coverage = training_coverage(table, [i.format for i in indexes], config.train_split, notes)
    return {COVERAGE_KEY: coverage.to_info(), TRAINING_DATA_KEY: training_data_info(table, split_files)}


def member_evidence(map_evidence: float | Sequence[float], n_runs: int) -> list[float]:
    """Each run's map weight from one weight for all runs or one per run, each in [0, 1]."""
    weights = [float(w) for w in (map_evidence if isinstance(map_evidence, Sequence) else [map_evidence])]
    if not all(0.0 <= w <= 1.0 for w in weights):
        raise ValueError(f"must lie in [0, 1], not {weights}")
    if len(weights) not in (1, n_runs):
        raise ValueError(f"give one weight or one per run ({n_runs}), not {len(weights)}")
    return weights * n_runs if len(weights) == 1 else weights


def build(runs: list[Path], out: Path, sensitivity: float | None, info: dict,
          heatmap_fusion: str = "mean", onnx: bool = True, keras_float16: bool = False,
          regions: RegionSettings | None = None, map_evidence: float | Sequence[float] = 0.0,
          test_time_flip: bool = False) -> Ensemble:
    """Load each run's best checkpoint, choose the threshold, save the ensemble (each member as `.keras`
    and, with `onnx`, as a parity-checked `.onnx`), its region settings (`regions`, the defaults when None:
    `train/tune_regions.py --write` chooses them on validation once the ensemble is built) and its histories.
    `map_evidence` gives each lesion-map member's map that say in its probability (one weight for all, or one
    per run), `test_time_flip` mirrors every reading; with either, the threshold is chosen on the ensemble's
    own validation predictions."""
    evidence = member_evidence(map_evidence, len(runs))
    members, architectures, layers = {}, {}, {}
    for run, weight in zip(runs, evidence):
        config = yaml.safe_load((run / "config.yaml").read_text())
        members[run.name] = keras.saving.load_model(run / "best.keras", compile=False, safe_mode=True)
        architectures[run.name] = config["model"]
        if config.get("lesion_map"):  # the map is read as a probability by undoing its training weight
            layers[run.name] = {"map_positive_weight": float(config.get("map_positive_weight", 1.0)),
                                "map_evidence": weight}
    val = validation_predictions(runs)
    ensemble = Ensemble(members, 0.5, {}, architectures, heatmap_layers=layers, heatmap_fusion=heatmap_fusion,
                        regions=regions, test_time_flip=test_time_flip)
    if any(evidence) or test_time_flip:
        val["ensemble"] = own_predictions(ensemble, val["path"].tolist())
    threshold, rule = metrics.choose_threshold(val["label"], val["ensemble"], sensitivity)
    val_metrics = metrics.binary_metrics(val["label"], val["ensemble"], threshold)
    notes = (info.get(COVERAGE_KEY) or {}).get("notes", "")
    info = {**info, **training_data(runs[0], notes)}
    ensemble.threshold = threshold
    ensemble.info = {**info, "threshold_rule": rule, "validation": val_metrics,
                     "members": {run.name: yaml.safe_load((run / "config.yaml").read_text()) for run in runs}}
    ensemble.save(out, overwrite=True, onnx=onnx, keras_float16=keras_float16)
    for run in runs:
        shutil.copy(run / "history.csv", out / f"history_{run.name}.csv")
    return ensemble


def add_onnx(folder: str | os.PathLike | None = None, keras_float16: bool = False) -> dict[str, Any]:
    """Write the ONNX graph of every member of an installed ensemble, and list them in its manifest.

    Each member's Keras model is loaded (checked), exported and checked for parity on the bundled
    radiographs (`onnx_export.write_onnx_member`); only when every member passed is the manifest
    rewritten (atomically), its other entries kept as they are.

    Args:
        folder: the ensemble folder (default `$MURA_WEIGHTS` or `weights/`).
        keras_float16: also store the `.keras` weights in float16 (`onnx_export.halve_keras_weights`),
            after the check.

    Returns:
        The rewritten manifest.

    Raises:
        ExportError: a member could not be exported or failed the parity check (the folder is unchanged
            but for `.onnx` files of members that passed).
        EnsembleLoadError: the ensemble cannot be loaded.
    """
    folder = weights_folder(folder)
    manifest = read_manifest(folder)
    for entry in manifest["members"]:
        name, model = entry["name"], load_keras_member(folder, entry, verify=True)
        # older manifests leave the heatmap layers to the spec: the graph's entry records them
        layers = Ensemble({name: model}, architectures={name: entry["architecture"]},
                          heatmap_layers={name: entry}).heatmap_layers[name]
        entry["gradcam_layer"] = layers["gradcam_layer"]
        if any(layer.name == LESION_MAP for layer in model.layers):
            entry.update(map_layer=layers["map_layer"], map_stride=layers["map_stride"])
        entry["onnx"] = write_onnx_member(model, folder / f"{name}.onnx", layers["gradcam_layer"])
    for entry in manifest["members"]:
        if keras_float16 and not entry.get("keras_float16"):
            halve_keras_weights(folder / entry["file"])
            entry["sha256"], entry["keras_float16"] = sha256_file(folder / entry["file"]), True
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, folder / MANIFEST)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", help="run folders written by train.train")
    parser.add_argument("--out", help="ensemble folder to write (e.g. weights/)")
    parser.add_argument("--add-onnx", metavar="FOLDER",
                        help="write the ONNX graphs of the ensemble installed in FOLDER (and nothing else)")
    parser.add_argument("--no-onnx", action="store_true", help="write the .keras members only")
    parser.add_argument("--keras-float16", action="store_true",
                        help="store the .keras weights in float16 (the ONNX graphs serve predictions)")
    parser.add_argument("--sensitivity", type=float, help="choose the threshold for this validation sensitivity")
    parser.add_argument("--info", help="JSON or YAML file of manifest info (title, trained_on, license, ...)")
    parser.add_argument("--regions", metavar="FILE",
                        help="JSON of the region settings (`train/tune_regions.py --settings`) to record in the "
                             "manifest; default: the defaults, to tune with tune_regions --write after building")
    parser.add_argument("--heatmap-fusion", default="mean", choices=FUSION_RULES,
                        help="how the members' lesion maps are fused (chosen on validation; default mean)")
    parser.add_argument("--map-evidence", type=float, nargs="+", default=[0.0], metavar="W",
                        help="the weight of each lesion-map member's map peak in its probability, in [0, 1]: one "
                             "for all members or one per run, in --runs' order (decision.member_probability; "
                             "chosen on validation; default 0, the classifier alone)")
    parser.add_argument("--test-time-flip", action="store_true",
                        help="each member also reads every image mirrored left-right, its outputs averaged")
    args = parser.parse_args(argv)
    if args.add_onnx:
        manifest = add_onnx(args.add_onnx, args.keras_float16)
        print(json.dumps({m["name"]: m["onnx"] for m in manifest["members"]}, indent=2))
        return 0
    if not args.runs or not args.out:
        parser.error("--runs and --out are required (or --add-onnx FOLDER)")
    info = yaml.safe_load(Path(args.info).read_text()) if args.info else {}
    regions = None
    if args.regions:
        try:
            regions = RegionSettings.from_manifest({REGIONS_KEY: json.loads(Path(args.regions).read_text())},
                                                   args.regions)
        except (OSError, json.JSONDecodeError, ValueError) as exc:
            parser.error(f"--regions {args.regions}: {exc}")
    try:
        map_evidence = member_evidence(args.map_evidence, len(args.runs))
    except ValueError as exc:
        parser.error(f"--map-evidence: {exc}")
    ensemble = build([Path(r) for r in args.runs], Path(args.out), args.sensitivity, info, args.heatmap_fusion,
                     not args.no_onnx, args.keras_float16, regions, map_evidence, args.test_time_flip)
    print(json.dumps({"members": ensemble.names, "threshold": ensemble.threshold,
                      "validation": ensemble.info["validation"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
