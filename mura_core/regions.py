"""Fracture regions: boxes with scores found in the fused lesion map, and how they are scored as a detector.

A region is a box in the image's pixels with a score in [0, 1]. `find_regions` reads them off a map:
the map is thresholded (at `RegionParams.level` times its maximum, or times each local peak's value),
each connected part becomes a box, small ones are dropped, overlapping ones are thinned by non-maximum
suppression (OpenCV's `NMSBoxes`) and each box is scored by the map's maximum (or mean) inside it. With
box heads (mode "boxes"), each local peak of the map is a region and the box is the one the heads regress
at the peak's cell (CenterNet style: the map is the objectness; `BOX_CHANNELS`, `box_field`). The
parameters and the score from which a region is shown as a finding live in the ensemble's manifest
(`RegionSettings`, key "regions"), chosen on validation by `train/tune_regions.py`.

Whether a region is a finding has one home, `region_is_finding`: only in a study with an abnormal
verdict, never where the verdict is withheld (outside the coverage), and only from the threshold up.

The detector metrics (`detection_metrics`) follow COCO's matching: detections of all images ranked by
score, each matched to the unmatched annotated box of its image that it overlaps most at IoU >= t; a
second detection of a box is a false positive. AP is the all-point interpolated area under the
precision-recall curve (PASCAL VOC 2010+), AP@[.50:.95] its mean over IoU 0.50, 0.55, ..., 0.95; the
FROC curve is lesion recall against false positives per image over every image, normal ones included.

No TensorFlow here: the results, exports, pages and evaluation use this without the model modules.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import cv2
import numpy as np

from .heatmaps import PEAK_SMOOTHING, resize_heatmap
from .vocabulary import LABEL_NAMES

REGIONS_KEY = "regions"
"""The manifest's key for `RegionSettings`."""
WORK_SIDE = 512
"""Longest side at which regions are found (the map is resized to the image, capped at this side): the
cost stays bounded on large radiographs; boxes are scaled back to the image's pixels."""
PEAK_SEARCH_SIDE = 128
"""Blocks along the longer side at which the map's local peaks are searched (`_peak_pixels`)."""
REGION_MODES = ("components", "peaks", "boxes")
REGION_SCORES = ("max", "mean")
BOX_CHANNELS = ("dx", "dy", "log_w", "log_h")
"""The box head's channels per lesion-map cell (`registry.create_model(lesion_boxes=True)`, CenterNet style):
the centre of the lesion box the cell lies in minus the cell's centre, and the log of the box's width and
height, all in cells. `pipeline.box_targets` encodes the training boxes, `box_field` decodes the head."""
BOX_LOG_LIMIT = 4.0
"""Decoded log sizes are clipped to [-4, 4] cells (a box from 1/55 of a cell to 55 cells wide)."""


@dataclass(frozen=True)
class Region:
    """A suspected fracture region: box corners in image pixels (x to the right, y down; `x1`, `y1`
    exclusive, so the box is `x1 - x0` pixels wide) and its score in [0, 1]."""

    x0: int
    y0: int
    x1: int
    y1: int
    score: float

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        return self.x0, self.y0, self.x1, self.y1

    @property
    def xywh(self) -> tuple[int, int, int, int]:
        """(x, y, width, height), as the datasets' boxes are written."""
        return self.x0, self.y0, self.x1 - self.x0, self.y1 - self.y0

    def to_dict(self) -> dict[str, Any]:
        return {"x0": self.x0, "y0": self.y0, "x1": self.x1, "y1": self.y1, "score": round(float(self.score), 6)}


@dataclass(frozen=True)
class RegionParams:
    """How regions are read off a map (see `find_regions`).

    Attributes:
        mode: "components": the map thresholded once at `level` x its maximum, each connected part a
            region; "peaks": each local peak of the blurred map (`heatmaps.PEAK_SMOOTHING`) grows its own
            region, the connected part around it at `level` x the peak's value; "boxes": each local peak
            is a region with the box the box heads give at its cell (`level` unused).
        level: the threshold, a share of the maximum (or of the peak), in (0, 1].
        floor: map values below this never belong to a region (a faint map gives none).
        min_area: smallest region, as a share of the image's area.
        padding: share of a box's width and height added on each side (negative: taken off).
        score: "max" or "mean" of the map inside the region.
        max_regions: most regions per image (the highest scores are kept).
        nms_iou: overlapping boxes above this IoU are thinned to the higher-scored one.
        probability_weight: w in [0, 1]: a region's score is map score^(1 - w) x image probability^w.

    The defaults are what `train/tune_regions.py` chose on the validation split for the stage-12
    ensemble (MobileNetV2 + EfficientNet-B0), the ones an ensemble whose manifest records none gets.
    """

    mode: str = "components"
    level: float = 0.4
    floor: float = 0.02
    min_area: float = 0.001
    padding: float = 0.0
    score: str = "max"
    max_regions: int = 5
    nms_iou: float = 0.3
    probability_weight: float = 0.75

    def __post_init__(self):
        problems = []
        if self.mode not in REGION_MODES:
            problems.append(f"mode {self.mode!r} (known: {', '.join(REGION_MODES)})")
        if self.score not in REGION_SCORES:
            problems.append(f"score {self.score!r} (known: {', '.join(REGION_SCORES)})")
        if not 0 < self.level <= 1:
            problems.append(f"level {self.level} (must lie in (0, 1])")
        for name in ("floor", "min_area", "probability_weight", "nms_iou"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} {getattr(self, name)} (must lie in [0, 1])")
        if not -0.5 < self.padding <= 2:
            problems.append(f"padding {self.padding} (must lie in (-0.5, 2])")
        if int(self.max_regions) < 1:
            problems.append(f"max_regions {self.max_regions} (must be >= 1)")
        if problems:
            raise ValueError("bad region parameters: " + "; ".join(problems))

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> RegionParams:
        """Parameters from a manifest's dict; unknown keys are an error, missing ones take the defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(info) - known)
        if unknown:
            raise ValueError(f"unknown region parameters {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**dict(info))


DEFAULT_REGION_THRESHOLD = 0.58
"""The score from which a region is a finding when a manifest records none (older ensembles): the best-F1
threshold on validation of the default parameters with the stage-12 ensemble."""


@dataclass(frozen=True)
class RegionSettings:
    """What the manifest records about regions: how they are found, and from which score one is a finding.

    Attributes:
        params: `RegionParams`.
        threshold: a region with at least this score is shown as a finding (in an abnormal study).
        threshold_rule: how the threshold was chosen.
        validation: the validation figures of the chosen parameters (`detection_metrics` without curves).
    """

    params: RegionParams = field(default_factory=RegionParams)
    threshold: float = DEFAULT_REGION_THRESHOLD
    threshold_rule: str = "default (not chosen on validation)"
    validation: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], where: str = "manifest") -> RegionSettings:
        """The manifest's "regions" entry, or the defaults when it has none.

        Raises:
            ValueError: naming `where` and what is wrong with the entry.
        """
        entry = manifest.get(REGIONS_KEY)
        if entry is None:
            return cls()
        try:
            params = RegionParams.from_info(entry.get("params") or {})
            threshold = float(entry.get("threshold", DEFAULT_REGION_THRESHOLD))
        except (AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: bad {REGIONS_KEY!r} entry ({exc})") from None
        if not 0 <= threshold <= 1:
            raise ValueError(f"{where}: the region threshold {threshold} is outside [0, 1]")
        return cls(params, threshold, str(entry.get("threshold_rule", "")), dict(entry.get("validation") or {}))

    def to_info(self) -> dict[str, Any]:
        return {"params": asdict(self.params), "threshold": self.threshold, "threshold_rule": self.threshold_rule,
                "validation": dict(self.validation)}


def box_field(codes: np.ndarray) -> np.ndarray:
    """(m, n, 4) box-head codes (`BOX_CHANNELS`) -> (m, n, 4) boxes (x0, y0, x1, y1) as fractions of the
    input's width and height (the square resize keeps fractions, so they are fractions of the image's too):
    at each cell, the box that the cell says its lesion has."""
    codes = np.asarray(codes, dtype=np.float32)
    rows, cols = codes.shape[:2]
    cx = (np.arange(cols, dtype=np.float32)[None, :] + 0.5 + codes[..., 0]) / cols
    cy = (np.arange(rows, dtype=np.float32)[:, None] + 0.5 + codes[..., 1]) / rows
    half_w = 0.5 * np.exp(np.clip(codes[..., 2], -BOX_LOG_LIMIT, BOX_LOG_LIMIT)) / cols
    half_h = 0.5 * np.exp(np.clip(codes[..., 3], -BOX_LOG_LIMIT, BOX_LOG_LIMIT)) / rows
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)


def fuse_box_fields(fields: Sequence[np.ndarray]) -> np.ndarray | None:
    """The members' box fields (`box_field`) of one image as one: each resized (nearest cell) to the finest
    and averaged, corner by corner; None when no member has a box head."""
    if not fields:
        return None
    side = max(f.shape[0] for f in fields)
    resized = [f if f.shape[0] == side else cv2.resize(f, (side, side), interpolation=cv2.INTER_NEAREST)
               for f in fields]
    return np.mean(resized, axis=0, dtype=np.float32)


def find_regions(heatmap: np.ndarray, shape: tuple[int, int], params: RegionParams = RegionParams(),
                 probability: float | None = None, boxes: np.ndarray | None = None) -> list[Region]:
    """The suspected regions of one image, read off its (fused lesion) map.

    Args:
        heatmap: (h, w) float map in [0, 1] at any resolution (resized to the image, as
            `heatmaps.resize_heatmap` does).
        shape: the image's shape; its first two entries are (H, W).
        params: how regions are found.
        probability: the image's probability, used when `params.probability_weight` > 0.
        boxes: the image's box field (`box_field`, `fuse_box_fields`), which mode "boxes" reads.

    Returns:
        Regions in the image's pixels, highest score first; none for an empty, non-finite or faint map.

    Raises:
        ValueError: mode "boxes" without a box field.
    """
    if params.mode == "boxes" and boxes is None:
        raise ValueError('region mode "boxes" reads a box head, and this ensemble has none')
    heat = np.asarray(heatmap, dtype=np.float32)
    height, width = int(shape[0]), int(shape[1])
    finite = np.isfinite(heat)
    if heat.size == 0 or height == 0 or width == 0 or not finite.any():
        return []
    if not finite.all():
        heat = np.where(finite, heat, 0.0).astype(np.float32)
    scale = min(1.0, WORK_SIDE / max(height, width))
    work = resize_heatmap(heat, (max(1, round(height * scale)), max(1, round(width * scale))))
    top = float(work.max())
    if top <= params.floor or top <= 0:
        return []
    min_pixels = params.min_area * work.size
    if params.mode == "components":
        candidates = _components(work, params, top)
    elif params.mode == "peaks":
        candidates = _peaks(work, params)
    else:
        candidates = _boxed_peaks(work, params, np.asarray(boxes, np.float32))
    candidates = [c for c in candidates if c[4] >= min_pixels]
    if not candidates:
        return []
    boxes = [[int(x), int(y), int(w), int(h)] for x, y, w, h, _, _ in candidates]
    scores = [float(c[5]) for c in candidates]
    if probability is not None and params.probability_weight > 0:
        weight, p = params.probability_weight, min(max(float(probability), 0.0), 1.0)
        scores = [s ** (1 - weight) * p ** weight for s in scores]
    keep = cv2.dnn.NMSBoxes(boxes, scores, 0.0, params.nms_iou, top_k=int(params.max_regions))
    regions = [_to_image(boxes[i], scores[i], params.padding, scale, width, height) for i in np.ravel(keep)]
    return sorted(regions, key=lambda r: r.score, reverse=True)


def _components(work: np.ndarray, params: RegionParams, top: float) -> list[tuple]:
    """(x, y, w, h, area, score) of each connected part of the map at `level` x its maximum."""
    return _parts(work, work >= max(params.level * top, params.floor), params)


def _parts(work: np.ndarray, mask: np.ndarray, params: RegionParams, only: tuple[int, int] | None = None
           ) -> list[tuple]:
    """(x, y, w, h, area, score) of each connected part of `mask` (only the one holding pixel `only` = (row,
    col), when given) large enough to keep. OpenCV labels the parts; their boxes, areas and scores come
    from one pass over the mask's pixels (OpenCV's own statistics cost several times more on such maps)."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    rows, cols = np.nonzero(mask)
    owners, heat = labels[rows, cols], work[rows, cols]
    if only is not None:
        keep = owners == labels[only]
        rows, cols, owners, heat = rows[keep], cols[keep], owners[keep], heat[keep]
    area = np.bincount(owners, minlength=count)
    left, top = np.full(count, mask.shape[1]), np.full(count, mask.shape[0])
    right, bottom = np.full(count, -1), np.full(count, -1)
    np.minimum.at(left, owners, cols)
    np.minimum.at(top, owners, rows)
    np.maximum.at(right, owners, cols)
    np.maximum.at(bottom, owners, rows)
    if params.score == "max":
        values = np.zeros(count, np.float32)
        np.maximum.at(values, owners, heat)
    else:
        values = np.bincount(owners, weights=heat, minlength=count) / np.maximum(area, 1)
    return [(int(left[k]), int(top[k]), int(right[k] - left[k] + 1), int(bottom[k] - top[k] + 1), int(area[k]),
             float(values[k])) for k in range(1, count)
            if area[k] and area[k] >= params.min_area * work.size]


def _peak_pixels(work: np.ndarray, params: RegionParams) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the map's local peaks after a blur (`heatmaps.PEAK_SMOOTHING`) from `params.floor`
    up, highest first, at most 4 x `params.max_regions` of them.

    The peaks are searched on the map averaged over square blocks, at most `PEAK_SEARCH_SIDE` of them along
    its longer side (the blur is then a few pixels wide instead of tens: a sixteenth of the work on a
    512-pixel map), and each is placed at its block's centre.
    """
    height, width = work.shape
    step = max(1, math.ceil(max(height, width) / PEAK_SEARCH_SIDE))
    small = cv2.resize(work, (math.ceil(width / step), math.ceil(height / step)), interpolation=cv2.INTER_AREA)
    sigma = PEAK_SMOOTHING * max(small.shape)
    blurred = cv2.GaussianBlur(small, (0, 0), sigma) if sigma > 0 else small
    side = 2 * max(1, round(2 * sigma)) + 1  # peaks closer than about two blur widths are one
    rows, cols = np.nonzero(blurred >= cv2.dilate(blurred, np.ones((side, side), np.uint8)))
    order = np.argsort(-blurred[rows, cols], kind="stable")
    rows = np.minimum(((rows[order] + 0.5) * height / small.shape[0]).astype(np.intp), height - 1)
    cols = np.minimum(((cols[order] + 0.5) * width / small.shape[1]).astype(np.intp), width - 1)
    keep = work[rows, cols] >= params.floor
    return rows[keep][: 4 * int(params.max_regions)], cols[keep][: 4 * int(params.max_regions)]


def _peaks(work: np.ndarray, params: RegionParams) -> list[tuple]:
    """(x, y, w, h, area, score) of the connected part around each local peak at `level` x its value."""
    out, seen = [], set()
    for row, col in zip(*_peak_pixels(work, params)):
        mask = work >= max(params.level * float(work[row, col]), params.floor)
        for part in _parts(work, mask, params, (row, col)):
            if part[:4] not in seen:
                seen.add(part[:4])
                out.append(part)
    return out


def _boxed_peaks(work: np.ndarray, params: RegionParams, field: np.ndarray) -> list[tuple]:
    """(x, y, w, h, area, score) of the box the box head gives at each local peak: the peak's cell of the
    box field, in working pixels; scored by the map at the peak ("max") or its mean inside the box."""
    height, width = work.shape
    out = []
    for row, col in zip(*_peak_pixels(work, params)):
        cell = field[min(row * field.shape[0] // height, field.shape[0] - 1),
                     min(col * field.shape[1] // width, field.shape[1] - 1)]
        x0, x1 = (int(round(min(max(v * width, 0), width))) for v in cell[0::2])
        y0, y1 = (int(round(min(max(v * height, 0), height))) for v in cell[1::2])
        if x1 <= x0 or y1 <= y0:
            continue
        score = float(work[row, col]) if params.score == "max" else float(work[y0:y1, x0:x1].mean())
        out.append((x0, y0, x1 - x0, y1 - y0, (x1 - x0) * (y1 - y0), score))
    return out


def _to_image(box, score: float, padding: float, scale: float, width: int, height: int) -> Region:
    """A working-resolution box, padded, in the image's pixels (clipped to the image)."""
    x, y, w, h = box
    pad_x, pad_y = padding * w, padding * h
    x0 = max(0, math.floor((x - pad_x) / scale))
    y0 = max(0, math.floor((y - pad_y) / scale))
    x1 = min(width, math.ceil((x + w + pad_x) / scale))
    y1 = min(height, math.ceil((y + h + pad_y) / scale))
    return Region(int(x0), int(y0), int(x1), int(y1), float(min(max(score, 0.0), 1.0)))


def region_is_finding(score: float, threshold: float, verdict: str | None, withheld: str = "") -> bool:
    """Whether a region is shown as a finding: its score reaches the threshold in a study whose verdict is
    abnormal and not withheld (`coverage.verdict_withheld`). A normal verdict's regions are listed below it."""
    return not withheld and verdict == LABEL_NAMES[1] and float(score) >= float(threshold)


# ------------------------------------------------------------------------------------- detector metrics

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
"""COCO's IoU thresholds for AP@[.50:.95]."""
FP_RATES = (0.5, 1.0)
"""False positives per image at which the FROC recall is reported."""


def box_iou(a, b) -> np.ndarray:
    """IoU of every pair of (x0, y0, x1, y1) boxes: (n, 4) x (m, 4) -> (n, m)."""
    a = np.asarray(a, dtype=float).reshape(-1, 4)
    b = np.asarray(b, dtype=float).reshape(-1, 4)
    left, top = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    right, bottom = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def xywh_to_xyxy(boxes: Iterable[Sequence[float]]) -> list[tuple[float, float, float, float]]:
    """Boxes (x, y, w, h), as the datasets write them, as corners (x0, y0, x1, y1)."""
    return [(x, y, x + w, y + h) for x, y, w, h in boxes]


def match_detections(detections: Sequence[Sequence[Region]], truths: Sequence[Sequence[Sequence[float]]],
                     iou: float = 0.5) -> tuple[np.ndarray, np.ndarray, int]:
    """COCO's matching of detections to annotated boxes, image by image.

    Args:
        detections: per image, its regions.
        truths: per image (same order), its annotated boxes as (x0, y0, x1, y1); empty for a normal image.
        iou: the least IoU of a match.

    Returns:
        (scores, true_positive flags) of every detection, and the number of annotated boxes.
    """
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} images of detections but {len(truths)} of annotations")
    scores, hits = [], []
    for regions, boxes in zip(detections, truths):
        regions = sorted(regions, key=lambda r: r.score, reverse=True)
        overlaps = box_iou([r.xyxy for r in regions], boxes) if len(boxes) and regions else None
        taken = np.zeros(len(boxes), dtype=bool)
        for k, region in enumerate(regions):
            hit = False
            if overlaps is not None:
                free = np.where(taken, -1.0, overlaps[k])
                best = int(np.argmax(free))
                if free[best] >= iou:
                    taken[best], hit = True, True
            scores.append(float(region.score))
            hits.append(hit)
    return np.asarray(scores, dtype=float), np.asarray(hits, dtype=bool), int(sum(len(b) for b in truths))


def _cumulative(scores: np.ndarray, hits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives at each distinct score taken as the threshold (highest first): tied
    detections come in together."""
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    last = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1] if scores.size else np.zeros(0, int)
    return tp[last].astype(float), fp[last].astype(float), scores[last]


def average_precision(scores: np.ndarray, hits: np.ndarray, n_truth: int) -> float:
    """All-point interpolated AP: the area under the precision envelope over recall (0 without boxes or hits)."""
    tp, fp, _ = _cumulative(np.asarray(scores, float), np.asarray(hits, bool))
    if n_truth == 0 or not tp.size or tp[-1] == 0:
        return 0.0
    recall = np.r_[0.0, tp / n_truth]
    precision = np.r_[1.0, tp / (tp + fp)]
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # the best precision at this recall or more
    return float(np.sum(np.diff(recall) * envelope[1:]))


def froc_curve(scores: np.ndarray, hits: np.ndarray, n_truth: int,
               n_images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The FROC curve: (false positives per image, lesion recall, threshold) from the highest threshold down,
    starting at (0, 0, inf)."""
    tp, fp, thresholds = _cumulative(np.asarray(scores, float), np.asarray(hits, bool))
    fppi = np.r_[0.0, fp / max(n_images, 1)]
    recall = np.r_[0.0, tp / n_truth if n_truth else np.zeros_like(tp)]
    return fppi, recall, np.r_[np.inf, thresholds]


def recall_at_fp_rate(fppi: np.ndarray, recall: np.ndarray, rate: float) -> float:
    """The best recall of a FROC curve with at most `rate` false positives per image."""
    allowed = np.asarray(fppi) <= rate + 1e-12
    return float(np.max(np.asarray(recall)[allowed])) if allowed.any() else 0.0


def best_f1_threshold(scores: np.ndarray, hits: np.ndarray, n_truth: int) -> tuple[float, float]:
    """The region score threshold with the highest F1 of detections at the given matching, and that F1.

    Returns:
        (threshold, f1); (1.0, 0.0) when nothing is ever found.
    """
    tp, fp, thresholds = _cumulative(np.asarray(scores, float), np.asarray(hits, bool))
    if not tp.size or n_truth == 0 or tp[-1] == 0:
        return 1.0, 0.0
    f1 = 2 * tp / (tp + fp + n_truth)
    best = int(np.argmax(f1))
    return float(thresholds[best]), float(f1[best])


def detection_metrics(detections: Sequence[Sequence[Region]], truths: Sequence[Sequence[Sequence[float]]],
                      curve: bool = True) -> dict[str, Any]:
    """The detector figures of regions against annotated boxes, over every image (normal ones too).

    Args:
        detections: per image, its regions.
        truths: per image, its annotated boxes as (x0, y0, x1, y1) (`xywh_to_xyxy` of a dataset's boxes).
        curve: also return the FROC curve (at IoU 0.5).

    Returns:
        {"ap50", "ap50_95", "recall_at_0.5_fp", "recall_at_1_fp" (FROC at IoU 0.5), "best_f1",
        "best_f1_threshold", "n_images", "n_boxes", "n_regions", and with `curve` "froc":
        {"fp_per_image", "recall", "threshold"}}.
    """
    by_iou = {t: match_detections(detections, truths, t) for t in IOU_THRESHOLDS}
    aps = {t: average_precision(*by_iou[t]) for t in IOU_THRESHOLDS}
    scores, hits, n_truth = by_iou[0.5]
    fppi, recall, thresholds = froc_curve(scores, hits, n_truth, len(detections))
    threshold, f1 = best_f1_threshold(scores, hits, n_truth)
    out = {"ap50": aps[0.5], "ap50_95": float(np.mean(list(aps.values()))),
           **{f"recall_at_{rate:g}_fp": recall_at_fp_rate(fppi, recall, rate) for rate in FP_RATES},
           "best_f1": f1, "best_f1_threshold": threshold,
           "n_images": len(detections), "n_boxes": n_truth, "n_regions": int(scores.size)}
    if curve:
        finite = np.isfinite(thresholds)
        out["froc"] = {"fp_per_image": fppi.tolist(), "recall": recall.tolist(),
                       "threshold": [float(t) if f else None for t, f in zip(thresholds, finite)]}
    return out


def best_iou(regions: Sequence[Region], boxes: Sequence[Sequence[float]]) -> float:
    """The highest IoU of any region with any annotated (x0, y0, x1, y1) box; 0.0 when either is empty."""
    if not regions or not len(boxes):
        return 0.0
    return float(box_iou([r.xyxy for r in regions], boxes).max())
