"""Localization: how well a heatmap points at annotated lesion boxes.

Pure scores of one heatmap against boxes (`pointing_game`, `mass_in_boxes`, `thresholded_iou`), all
computed by `score_heatmap` at the stored image's native resolution, where the boxes live; their
summary over images; whether a lesion map reads as a probability (`map_reliability`); and `score_images` /
`score_ensemble`, which explain the positives of a dataset with boxes and score every member's map and the
fused map. Used by `train.evaluate` and the tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .datasets.base import Box
from .heatmaps import heatmap_peak, resize_heatmap
from .metrics import percentile_interval


def boxes_to_mask(shape, boxes: Iterable[Box]) -> np.ndarray:
    """Boolean mask of the pixels covered by boxes.

    Args:
        shape: Image shape; the first two entries are (H, W).
        boxes: Boxes as (x, y, w, h) in pixels, x to the right and y down. Any pixel
            the box touches is covered; parts outside the image are clipped.

    Returns:
        Bool array of shape (H, W).
    """
    height, width = int(shape[0]), int(shape[1])
    mask = np.zeros((height, width), dtype=bool)
    for x, y, w, h in boxes:
        x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
        x1, y1 = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
        if x1 > x0 and y1 > y0:
            mask[y0:y1, x0:x1] = True
    return mask


def pointing_game(heatmap, boxes: Iterable[Box], tolerance: float = 0) -> bool:
    """Whether the heatmap's peak (`heatmaps.heatmap_peak`) falls inside any box (the pointing game).

    Args:
        heatmap: Float array (H, W) at image size.
        boxes: Boxes as (x, y, w, h) in pixels.
        tolerance: Pixels by which each box is grown on every side.

    Returns:
        True on a hit. A constant heatmap has no peak and counts as a miss.
    """
    heatmap = np.asarray(heatmap, dtype=float)
    peak = heatmap_peak(heatmap, heatmap.shape)  # the one rule for where a map points
    if peak is None:
        return False
    grown = [
        (x - tolerance, y - tolerance, w + 2 * tolerance, h + 2 * tolerance)
        for x, y, w, h in boxes
    ]
    return bool(boxes_to_mask(heatmap.shape, grown)[peak])


def mass_in_boxes(heatmap, boxes: Iterable[Box]) -> float:
    """Share of the heatmap's non-negative mass that lies inside the boxes.

    Compare with the boxes' area fraction (``boxes_to_mask(...).mean()``), which is
    what a uniform heatmap would score.

    Args:
        heatmap: Float array (H, W) at image size; negative values count as zero.
        boxes: Boxes as (x, y, w, h) in pixels.

    Returns:
        A float in [0, 1]; 0.0 when the heatmap has no positive mass.
    """
    heatmap = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=float)), 0.0, None)
    total = heatmap.sum()
    if total <= 0:
        return 0.0
    return float(heatmap[boxes_to_mask(heatmap.shape, boxes)].sum() / total)


RELIABILITY_EDGES = (0.0, 0.01, 0.03, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
"""Bins of lesion-map values for `map_reliability`: fine near 0, where nearly every pixel lies."""


def reliability_counts(heatmap, boxes: Iterable[Box], shape: tuple[int, int],
                       edges: tuple[float, ...] = RELIABILITY_EDGES) -> np.ndarray:
    """One image's share of `map_reliability`, at the stored image's native resolution.

    Args:
        heatmap: (h, w) lesion map in [0, 1] at any resolution; resized to `shape` first.
        boxes: the image's lesion boxes (x, y, w, h) in its pixels; none for a normal image.
        shape: (H, W) of the stored image.
        edges: the bins' edges, increasing from 0 to 1 (each bin holds low <= value < high; 1 is in the last).

    Returns:
        Float array (bins, 3): per bin, the pixels, the sum of their map values and the pixels inside a box.
    """
    heat = np.clip(np.nan_to_num(resize_heatmap(heatmap, tuple(shape[:2]))), 0.0, 1.0).ravel()
    inside = boxes_to_mask(shape, boxes).ravel()
    n = len(edges) - 1
    bins = np.digitize(heat, np.asarray(edges[1:-1]))
    return np.stack([np.bincount(bins, minlength=n), np.bincount(bins, weights=heat, minlength=n),
                     np.bincount(bins, weights=inside, minlength=n)], axis=1).astype(float)


def map_reliability(counts: Iterable[np.ndarray], edges: tuple[float, ...] = RELIABILITY_EDGES) -> list[dict]:
    """Whether a lesion map reads as a probability: per bin of map value, the pixels' mean value against
    the share of them inside a lesion box. Where the map is a probability the two are equal.

    Args:
        counts: `reliability_counts` of the images: normal ones, and abnormal ones whose lesions all
            have boxes (an abnormal image without boxes would count its lesion as outside).
        edges: the bins' edges, as given to `reliability_counts`.

    Returns:
        One dict per bin: "low", "high", "pixels", "mean" (mean map value) and "in_boxes" (share inside a
        box); the last two are None for an empty bin.
    """
    total = np.zeros((len(edges) - 1, 3))
    for image in counts:
        total += image
    return [{"low": float(low), "high": float(high), "pixels": int(pixels),
             "mean": float(values / pixels) if pixels else None,
             "in_boxes": float(inside / pixels) if pixels else None}
            for low, high, (pixels, values, inside) in zip(edges[:-1], edges[1:], total)]


def localization_summary(
    records: Iterable[Mapping], n_boot: int = 1000, seed: int = 0
) -> dict:
    """Summarise per-image localization results against annotated boxes.

    Args:
        records: Dicts with "hit" (pointing-game result), "mass" (`mass_in_boxes`),
            optionally "iou" (`thresholded_iou`), and "box_area_fraction" (share of the image
            inside the boxes).
        n_boot: Bootstrap resamples for the pointing-game interval.
        seed: Bootstrap seed.

    Returns:
        Dict with "n", "pointing_game" (hit rate), "pointing_game_ci" ([low, high]
        95% percentile bootstrap), "mass_in_boxes" and "iou" (means) and "box_area_fraction"
        (mean; the chance level a uniform heatmap would reach). Values are None when
        there are no records (or, for the means, no values).
    """
    records = list(records)
    hits = np.array([bool(r["hit"]) for r in records], dtype=float)

    def mean_of(key: str) -> float | None:
        values = [float(r[key]) for r in records if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    if hits.size == 0:
        return {
            "n": 0,
            "pointing_game": None,
            "pointing_game_ci": [None, None],
            "mass_in_boxes": None,
            "iou": None,
            "box_area_fraction": None,
        }
    rng = np.random.default_rng(seed)
    boot = hits[rng.integers(0, hits.size, size=(n_boot, hits.size))].mean(axis=1)
    return {
        "n": int(hits.size),
        "pointing_game": float(hits.mean()),
        "pointing_game_ci": list(percentile_interval(boot, 0.05)),
        "mass_in_boxes": mean_of("mass"),
        "iou": mean_of("iou"),
        "box_area_fraction": mean_of("box_area_fraction"),
    }


def thresholded_iou(heatmap, boxes: Iterable[Box], level: float = 0.5) -> float:
    """IoU of the heatmap's region at or above `level` x its maximum with the boxes' union.

    Args:
        heatmap: Float array (H, W) at image size.
        boxes: Boxes as (x, y, w, h) in pixels.
        level: Share of the maximum that defines the heatmap's region.

    Returns:
        A float in [0, 1]; 0.0 for a heatmap with no positive maximum.
    """
    heatmap = np.nan_to_num(np.asarray(heatmap, dtype=float))
    peak = heatmap.max() if heatmap.size else 0.0
    if peak <= 0:
        return 0.0
    region = heatmap >= level * peak
    mask = boxes_to_mask(heatmap.shape, boxes)
    union = np.logical_or(region, mask).sum()
    return float(np.logical_and(region, mask).sum() / union) if union else 0.0


def score_heatmap(heatmap, boxes: Iterable[Box], shape: tuple[int, int]) -> dict:
    """Every localization score of one heatmap, at the native resolution where the boxes live.

    Args:
        heatmap: (h, w) map at any resolution (a model's input side); resized to `shape` first.
        boxes: Boxes as (x, y, w, h) in pixels of the stored image.
        shape: (H, W) of the stored image.

    Returns:
        Dict with "hit" (pointing game), "mass" (share in boxes), "iou" (`thresholded_iou`) and
        "box_area_fraction" (the chance level of a uniform map).
    """

    boxes = list(boxes)
    heat = resize_heatmap(heatmap, shape)
    return {"hit": pointing_game(heat, boxes), "mass": mass_in_boxes(heat, boxes),
            "iou": thresholded_iou(heat, boxes), "box_area_fraction": float(boxes_to_mask(shape, boxes).mean())}


def score_images(ensemble, rows: pd.DataFrame, boxes: Mapping[str, list[Box]], method: str = "gradcam",
                 batch: int = 8) -> list[dict]:
    """Per image and heatmap, `score_heatmap` of the positives that have boxes.

    Args:
        ensemble: an `Ensemble`.
        rows: index rows (`path`, `label`); the positives whose file name has boxes are scored.
        boxes: lesion boxes by image file name (`datasets.load_boxes`).
        method: the heatmap method (`gradcam.CAM_METHODS`).
        batch: images explained together.

    Returns:
        One dict per image and heatmap (each member's name and "ensemble"): "file", "heatmap",
        "probability" (the ensemble's) and the scores.
    """
    rows = rows[rows["label"] == 1]
    rows = rows[[bool(boxes.get(Path(p).name)) for p in rows["path"]]]
    records = []
    paths = rows["path"].tolist()
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        result = ensemble.predict_study(chunk, explain=True, method=method)
        for path, image in zip(chunk, result.images):
            if not image.ok:
                continue
            name = Path(path).name
            for heatmap, heat in image.heatmaps.items():
                records.append({"file": name, "heatmap": heatmap, "probability": image.ensemble,
                                **score_heatmap(heat, boxes[name], image.image.shape)})
    return records


def summarize_records(records: Iterable[Mapping]) -> dict:
    """`localization_summary` per heatmap of `score_images` records."""
    by_heatmap: dict[str, list[Mapping]] = {}
    for record in records:
        by_heatmap.setdefault(record["heatmap"], []).append(record)
    return {name: localization_summary(recs) for name, recs in by_heatmap.items()}


def score_ensemble(ensemble, rows: pd.DataFrame, boxes: Mapping[str, list[Box]], method: str = "gradcam",
                   batch: int = 8) -> dict:
    """`localization_summary` per heatmap (each member and "ensemble") over the positives with boxes."""
    return summarize_records(score_images(ensemble, rows, boxes, method, batch))


def gallery_cases(records: Iterable[Mapping], heatmap: str = "ensemble", n: int = 3) -> dict[str, list[dict]]:
    """The best and the worst images for one heatmap, by mass in boxes (then pointing game).

    Args:
        records: `score_images` records.
        heatmap: which heatmap ("ensemble" for the fused map, or a member's name).
        n: cases on each side.

    Returns:
        {"best": [...], "worst": [...]}: records, best first / worst first.
    """
    mine = sorted((dict(r) for r in records if r["heatmap"] == heatmap),
                  key=lambda r: (r["mass"], r["hit"], r["iou"]), reverse=True)
    return {"best": mine[:n], "worst": mine[::-1][:n] if len(mine) > n else []}


def score_regions(ensemble, rows: pd.DataFrame, boxes: Mapping[str, list[Box]], batch: int = 8) -> list[dict]:
    """The suspected regions (`regions.find_regions`, the ensemble's settings) of every image of `rows`,
    normal ones included, beside its annotated boxes: what `regions.detection_metrics` scores.

    Args:
        ensemble: an `Ensemble` (its default heatmap method's fused map gives the regions).
        rows: index rows (`path`, `label`).
        boxes: lesion boxes (x, y, w, h) by image file name (`datasets.load_boxes`).
        batch: images explained together.

    Returns:
        One dict per readable image: "file", "label", "probability", "regions" (`Region`s), "truths"
        (its boxes as (x0, y0, x1, y1)) and "reliability" (`reliability_counts` of the fused map).
    """
    from .regions import xywh_to_xyxy
    from .results import Study

    paths, labels = rows["path"].tolist(), rows["label"].tolist()
    studies = (Study([path], [Path(path).name], "") for path in paths)
    records = []
    for label, result in zip(labels, ensemble.predict_studies(studies, explain=True, batch_size=batch)):
        image = result.images[0]
        if image.ok:
            found = boxes.get(image.name) or []
            records.append({"file": image.name, "label": int(label), "probability": image.ensemble,
                            "regions": list(image.regions), "truths": xywh_to_xyxy(found),
                            "reliability": reliability_counts(image.heatmaps["ensemble"], found, image.image.shape)})
    return records


def region_gallery_cases(records: Iterable[Mapping], n: int = 3) -> dict[str, list[dict]]:
    """The best and the worst images with annotated boxes for the regions: by the best IoU of a region with a
    box, then the best region's score.

    Args:
        records: `score_regions` records.
        n: cases on each side.

    Returns:
        {"best": [...], "worst": [...]}: records with "iou" (best IoU) added, best first / worst first.
    """
    from .regions import best_iou

    mine = [{**r, "iou": best_iou(r["regions"], r["truths"])} for r in records if r["truths"]]
    mine.sort(key=lambda r: (r["iou"], max((g.score for g in r["regions"]), default=0.0)), reverse=True)
    return {"best": mine[:n], "worst": mine[::-1][:n] if len(mine) > n else []}
