"""Heatmaps as pure functions: scale to [0, 1], resize, find the peak and its height, read a lesion map as a
probability,
fuse the members' maps, draw over a radiograph.

No TensorFlow: charts, localization scores and the dashboard use these without the model modules
(`gradcam` computes the maps and re-exports these names).
"""

from __future__ import annotations

import cv2
import numpy as np


def normalize_heatmap(cam: np.ndarray) -> np.ndarray:
    """Scale a map to [0, 1] (min-max, as tf-keras-vis does); a constant map becomes all zeros."""
    cam = np.asarray(cam, dtype=np.float32)
    if cam.size == 0:
        return cam
    low, high = float(cam.min()), float(cam.max())
    if not np.isfinite(high - low) or high - low <= 1e-12:
        return np.zeros_like(cam, dtype=np.float32)
    return (cam - low) / (high - low)


def resize_heatmap(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a (h, w) map to `shape` = (H, W)."""
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape == tuple(shape):
        return cam
    return cv2.resize(cam, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)


PEAK_SMOOTHING = 0.02  # sigma of the blur before the argmax, as a share of the image's longer side


def heatmap_peak(heatmap: np.ndarray, shape: tuple[int, int],
                 smoothing: float = PEAK_SMOOTHING) -> tuple[int, int] | None:
    """Where a map points: the centre of its hottest region, in the pixels of an image of `shape` (the
    pointing game's peak).

    The map is first resized to the image as `resize_heatmap` does (bilinear), then blurred with a
    Gaussian of sigma `smoothing` times the image's longer side, and the maximum of that is the peak. The
    blur makes a compact bright region win over a lone brighter pixel or cell: on the validation split it
    moved the fused lesion map's peak into a fracture box more often (docs/bundled-model-notebook.md gives
    the figures). `smoothing=0` gives the plain maximum. The dashboard marks this pixel, and
    `localization.pointing_game` scores it.

    Args:
        heatmap: (h, w) float map at any resolution.
        shape: the image's shape; its first two entries are (H, W).
        smoothing: the blur's sigma as a share of max(H, W); 0 for none.

    Returns:
        (row, col) in the image's pixels, or None for an empty, all-NaN or constant map (no peak).
    """
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.size == 0 or 0 in tuple(shape[:2]) or not np.isfinite(heat).any():
        return None
    heat = resize_heatmap(heat, tuple(shape[:2]))
    if not np.nanmax(heat) > np.nanmin(heat):
        return None
    if smoothing > 0:
        heat = _blur(np.nan_to_num(heat, nan=float(np.nanmin(heat))), smoothing)
    row, col = np.unravel_index(np.nanargmax(heat), heat.shape)
    return int(row), int(col)


def peak_value(heatmap: np.ndarray, smoothing: float = PEAK_SMOOTHING) -> float:
    """The height of a map's hottest region: its maximum after the Gaussian blur `heatmap_peak` uses (sigma
    `smoothing` times the map's longer side), so that one bright cell counts less than a bright region.
    For a lesion map read as a probability (`unweight_lesion_map`), the chance that the likeliest spot holds a
    lesion: the lesion map's evidence in a member's probability (`decision.member_probability`). 0 for an
    empty or all-NaN map."""
    heat = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0)
    if heat.size == 0:
        return 0.0
    return float((_blur(heat, smoothing) if smoothing > 0 else heat).max())


def _blur(heat: np.ndarray, smoothing: float) -> np.ndarray:
    """The peak's blur: a Gaussian of sigma `smoothing` times the map's longer side (`PEAK_SMOOTHING`)."""
    return cv2.GaussianBlur(heat, (0, 0), float(smoothing) * max(heat.shape))


def unweight_lesion_map(lesion_map: np.ndarray, positive_weight: float) -> np.ndarray:
    """A lesion map as the probability that each cell lies in a lesion, from the map of a member trained
    with lesion cells weighted `positive_weight` times (`pipeline.LesionMapLoss`).

    Weighting the positives of a cross-entropy w times moves its best output from p to w p / (w p + 1 - p):
    a map trained that way says 0.5 where the chance is 1 / (w + 1), and glows far beyond the lesion. This
    undoes it, p = q / (q + w (1 - q)), which is sigmoid(logit(q) - log w). Monotone, so the map's peak
    stays. `localization.map_reliability` checks the result against the boxes of a dataset (the bundled
    model's: docs/bundled-model.md).

    Args:
        lesion_map: maps in [0, 1] of any shape (a batch of them, say).
        positive_weight: the member's training weight of lesion cells (the manifest's
            "map_positive_weight"); 1 leaves the map as it is.
    """
    q = np.clip(np.asarray(lesion_map, dtype=np.float32), 0.0, 1.0)
    if positive_weight == 1:
        return q
    if not positive_weight > 0:
        raise ValueError(f"a lesion map's positive weight must be > 0, not {positive_weight!r}")
    return q / np.maximum(q + np.float32(positive_weight) * (1.0 - q), np.float32(1e-12))


FUSION_RULES = ("mean", "geometric", "geometric_by_resolution")


def fuse_heatmaps(maps: list[np.ndarray], weights: list[float] | None = None,
                  normalize: bool = True, rule: str = "mean") -> np.ndarray:
    """Combine members' maps into the ensemble's map.

    Args:
        maps: the members' maps, all of one shape.
        weights: optional weight per map.
        normalize: rescale the result to [0, 1] (CAMs); False keeps it (lesion maps are probabilities).
        rule: "mean", the (weighted) mean, as the ensemble combines its probabilities; "geometric",
            the (weighted) geometric mean, a logarithmic opinion pool: a region stays bright only where
            every member's map is, so a fine map names the spot inside a coarse map's neighbourhood; or
            "geometric_by_resolution", the same pool with each map weighted by its resolution (the
            caller passes each member's cells per side as `weights`), so that a map that can name a
            smaller spot has more say in where it is.
    """
    if not maps:
        raise ValueError("fuse_heatmaps needs at least one map")
    if rule not in FUSION_RULES:
        raise ValueError(f"unknown heatmap fusion rule {rule!r}; known: {', '.join(FUSION_RULES)}")
    if rule == "geometric_by_resolution" and weights is None:
        raise ValueError("geometric_by_resolution needs each map's resolution (cells per side) as weights")
    stacked = np.stack([np.asarray(m, dtype=np.float32) for m in maps])
    if rule in ("geometric", "geometric_by_resolution"):
        logs = np.log(np.clip(stacked, 1e-6, None))
        fused = np.exp(np.average(logs, axis=0, weights=weights)).astype(np.float32)
    else:
        fused = np.average(stacked, axis=0, weights=weights).astype(np.float32)
    return normalize_heatmap(fused) if normalize else fused


def overlay(gray: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4,
            colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Blend a heatmap over a grayscale radiograph.

    Args:
        gray: (H, W) uint8 image.
        heatmap: (h, w) float map in [0, 1] (resized to the image if needed).
        alpha: opacity of the heatmap, 0 (image only) to 1 (heatmap only).
        colormap: an OpenCV colormap.

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    heat = resize_heatmap(heatmap, gray.shape[:2])
    colored = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), colormap)
    colored = cv2.cvtColor(colored, cv2.COLOR_BGR2RGB).astype(np.float32)
    base = np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
    return np.clip((1 - alpha) * base + alpha * colored, 0, 255).astype(np.uint8)
