"""The names every part of the product shares: class labels, evaluation levels and metrics.

The report (`reports.py`), the metrics (`metrics.py`), the dashboard's figures and tables and the
model card all take their keys and labels from here, so they cannot drift apart.
"""

from __future__ import annotations

from typing import Any

LABEL_NAMES = {0: "normal", 1: "abnormal"}
"""Class index -> name. The positive class (1) is what the models score."""

POSITIVE_WORDS = frozenset({"1", "1.0", "true", "abnormal", "positive", "fractured"})
NEGATIVE_WORDS = frozenset({"0", "0.0", "false", "normal", "negative", "not fractured", "not_fractured"})
"""Words read as labels (lower case): in label columns, sample lists and class folder names."""

LEVELS = ("image", "study")
"""Evaluation levels: each image on its own, or one score per study (the mean of its images)."""
LEVEL_LABELS = {"image": "Image level", "study": "Study level"}

METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "auc", "kappa")
"""The threshold metrics every report computes (with bootstrap intervals), in report order."""
METRIC_LABELS = {
    "auc": "AUC",
    "accuracy": "Accuracy",
    "recall": "Sensitivity (recall)",
    "specificity": "Specificity",
    "precision": "Precision (PPV)",
    "f1": "F1",
    "kappa": "Cohen's kappa",
}
"""Display names of `METRICS`, in the order the dashboard lists them."""
assert set(METRIC_LABELS) == set(METRICS)


def level_key(level: str) -> str:
    """The report.json key holding a level's headline metrics: 'image' -> 'image_level'.

    Raises:
        ValueError: an unknown level (the message lists `LEVELS`).
    """
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected one of {LEVELS}")
    return f"{level}_level"


def label_value(label: Any) -> int | None:
    """1 / 0 for labels given as 1/0, booleans or words (`POSITIVE_WORDS`, `NEGATIVE_WORDS`); None when unknown."""
    key = str(label).strip().lower()
    if key in POSITIVE_WORDS:
        return 1
    if key in NEGATIVE_WORDS:
        return 0
    return None


def label_text(label: Any) -> str:
    """'abnormal' / 'normal' for labels given as 1/0, booleans or words; '' when unknown."""
    value = label_value(label)
    return "" if value is None else LABEL_NAMES[value]


CAM_METHODS = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "layercam": "LayerCAM",
    "scorecam": "Score-CAM",
    "lesion_map": "Lesion map",
}
"""Heatmap methods (`gradcam.CamExplainer`). "lesion_map" is not a CAM: it is the model's own lesion-map
output, trained on lesion boxes (`create_model(..., lesion_map=True)`), a probability of a lesion per cell."""
LESION_MAP = "lesion_map"
LESION_BOX = "lesion_box"  # the box head beside the lesion map (its layer and output name)
