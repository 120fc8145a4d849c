"""Evaluate an ensemble on a dataset split and write the report.

    python -m train.evaluate --weights FOLDER --data ROOT [--format auto] [--split valid] \
        [--split-file FILE] --out FOLDER

Writes `report.json`, `predictions.csv`, member-comparison and per-body-part CSVs and `figures.html`
(ROC, calibration, per body part, confusion), image- and study-level, with bootstrap 95% confidence
intervals. On a layout with lesion boxes (FracAtlas) it also scores the heatmaps against them at
each image's native resolution (pointing game, heatmap mass inside boxes, IoU), draws the best and
worst cases into `gallery/`, and runs the model-randomization sanity check (`mura_core.sanity`); and it
scores the ensemble's suspected regions as a detector over every image of the split, normal ones
included (`regions.detection_metrics`: AP@50, AP@[.50:.95], FROC), with their best and worst cases.
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
from PIL import Image  # noqa: E402

from mura_core import localization, regions, sanity  # noqa: E402
from mura_core.charts import display_copy, draw_boxes, draw_regions, heatmap_panels, write_report_figures  # noqa: E402
from mura_core.datasets import index_dataset, layout_names, load_boxes  # noqa: E402
from mura_core.ensemble import Ensemble, load_ensemble  # noqa: E402
from mura_core.gradcam import LESION_MAP  # noqa: E402
from mura_core.installed import weights_folder  # noqa: E402
from mura_core.preprocessing import resize_square  # noqa: E402
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
             split_file: str | None = None, n_boot: int = 1000, localize: bool = True,
             sanity_images: int = 16) -> dict:
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
    weights_dir = weights_folder(weights)
    report = build_report(
        merged, ensemble.names, ensemble.threshold,
        data={"root": str(data), "format": index.format, "split": split or "all",
              "unreadable_images": int(len(failed))},
        n_boot=n_boot, history=_histories(weights_dir) or None,
    )
    boxes = load_boxes(data, index.format) if localize else None
    if boxes:
        report.update(explanations(ensemble, merged, boxes, Path(out), sanity_images))
        report.update(detection(ensemble, merged, boxes, Path(out)))
    write_report(report, merged.assign(path=merged["path"].map(lambda p: _relative_to(p, data))), out)
    write_report_figures(report, Path(out) / "figures.html")
    return report


def explanations(ensemble: Ensemble, rows: pd.DataFrame, boxes: dict, out: Path, sanity_images: int = 16) -> dict:
    """How the heatmaps relate to the lesion boxes, for the report.

    Every heatmap method the members share that is scored against boxes (Grad-CAM, and the lesion
    map when the members have one) at each image's native resolution; best and worst cases of the
    default method's fused map, drawn into `out/gallery/`; and the model-randomization sanity
    check of the default method on `sanity_images` boxed positives.
    """
    methods = [m for m in ("gradcam", LESION_MAP) if m in ensemble.cam_methods]
    default = ensemble.default_cam_method
    by_method, records = {}, {}
    for method in methods:
        records[method] = localization.score_images(ensemble, rows, boxes, method)
        by_method[method] = localization.summarize_records(records[method])
        log.info("localization (%s, fused): %s", method, by_method[method].get("ensemble"))
    cases = localization.gallery_cases(records[default])
    paths = {Path(p).name: p for p in rows["path"]}
    gallery = []
    for kind, chosen in cases.items():
        for case in chosen:
            file = f"gallery/{kind}_{Path(case['file']).stem}.jpg"
            result = ensemble.predict_study([paths[case["file"]]], explain=True, method=default)
            save_case_picture(result.images[0], boxes[case["file"]], out / file)
            gallery.append({**case, "kind": kind, "picture": file})
    kept = {case["picture"] for case in gallery}
    for stale in (out / "gallery").glob("*.jpg"):  # a previous evaluation's cases, in this report's folder
        if f"gallery/{stale.name}" not in kept:
            stale.unlink()
    positives = rows[(rows["label"] == 1) & rows["path"].map(lambda p: bool(boxes.get(Path(p).name)))]
    return {
        "localization": by_method[default],
        "localization_method": default,
        "localization_by_method": by_method,
        "localization_gallery": gallery,
        "sanity": sanity_report(ensemble, positives["path"].tolist()[:sanity_images], default),
    }


def detection(ensemble: Ensemble, rows: pd.DataFrame, boxes: dict, out: Path, n_cases: int = 3) -> dict:
    """The suspected regions scored as a detector over every image of `rows`, for the report: "detection"
    (`regions.detection_metrics` with the FROC curve, the region settings used), "detection_gallery"
    (the best and worst boxed images by the best IoU of a region, drawn into `out/gallery/`) and
    "map_reliability" (`localization.map_reliability` of the fused lesion map over the normal images and
    the abnormal ones with boxes; None when the default heatmap is not a lesion map)."""
    records = localization.score_regions(ensemble, rows, boxes)
    reliability = None
    if ensemble.default_cam_method == LESION_MAP:  # a Grad-CAM is scaled to [0, 1]: no probability to check
        reliability = localization.map_reliability(r["reliability"] for r in records
                                                   if r["label"] == 0 or r["truths"])
    figures = regions.detection_metrics([r["regions"] for r in records], [r["truths"] for r in records])
    figures.update(threshold=ensemble.regions.threshold, settings=ensemble.regions.to_info(),
                   method=ensemble.default_cam_method)
    log.info("regions: %s", {k: v for k, v in figures.items() if k not in ("froc", "settings")})
    paths = {Path(p).name: p for p in rows["path"]}
    gallery = []
    for kind, chosen in localization.region_gallery_cases(records, n_cases).items():
        for case in chosen:
            file = f"gallery/regions_{kind}_{Path(case['file']).stem}.jpg"
            result = ensemble.predict_study([paths[case["file"]]], explain=True)
            save_region_picture(result, case["truths"], out / file, ensemble.regions.threshold)
            gallery.append({"file": case["file"], "kind": kind, "picture": file, "iou": case["iou"],
                            "probability": case["probability"], "regions": len(case["regions"]),
                            "top_score": max((g.score for g in case["regions"]), default=None)})
    return {"detection": figures, "detection_gallery": gallery, "map_reliability": reliability}


def save_region_picture(result, truths, path: Path, threshold: float, side: int = 320) -> Path:
    """The original with its annotated boxes (green) beside it with the suspected regions (orange, each with
    its score: solid from the region threshold up, dashed below it; as a detector, whatever the verdict), as
    one JPEG."""
    image = result.images[0]
    shown = display_copy(image.image, side)
    scale = shown.shape[0] / image.image.shape[0]
    annotated = draw_boxes(shown, [(x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in truths], scale)
    found = draw_regions(shown, [(g, g.score >= threshold) for g in image.regions], scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([annotated, found], axis=1)).save(path, quality=85)
    return path


def save_case_picture(image, image_boxes, path: Path, side: int = 320) -> Path:
    """The original with its boxes beside the fused heatmap with its boxes, as one JPEG."""
    panels = heatmap_panels(image, 0.45, [], image_boxes)
    pictures = [display_copy(p if p.ndim == 3 else np.repeat(p[..., None], 3, axis=-1), side) for _, p in panels[:2]]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(pictures, axis=1)).save(path, quality=85)
    return path


def sanity_report(ensemble: Ensemble, paths: list[str], method: str) -> dict:
    """`sanity.model_randomization` of each member's `method` heatmaps on the images at `paths`."""
    grays = [r.image for r in ensemble.decode(paths) if r.ok]  # the prediction path's decoder
    members = {}
    for name, model in ensemble.members.items() if grays else ():
        layer = ensemble.heatmap_layer(name, method)  # as the manifest records it
        images = np.stack([resize_square(g, ensemble.input_size(name)) for g in grays]).astype(np.float32)
        members[name] = sanity.model_randomization(model, layer, images, method)
        log.info("sanity check %s: %s", name, [(r["stage"], r["spearman"]) for r in members[name]])
    return {"method": method, "images": len(grays), "members": members}


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
    parser.add_argument("--no-localization", action="store_true",
                        help="skip the heatmaps-vs-boxes scores, the gallery and the sanity check")
    parser.add_argument("--sanity-images", type=int, default=16,
                        help="boxed positives used by the model-randomization sanity check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    report = evaluate(args.weights, args.data, args.out, args.format, args.split, args.split_file,
                      args.n_boot, not args.no_localization, args.sanity_images)
    key = level_key("image")
    summary = {m: {k: report[key][m][k] for k in ("auc", "accuracy", "recall", "specificity")} for m in report[key]}
    print(json.dumps({key: summary, "threshold": report["threshold"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
