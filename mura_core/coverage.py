"""What an ensemble was trained on (its coverage), and whether an image or a study lies inside it.

The coverage travels with the weights, in the manifest's `info["coverage"]`:

    {"dataset": "FracAtlas", "body_parts": ["XR_HAND", "XR_SHOULDER", "LEG", "HIP"],
     "positive_label": "fracture", "n_images": 2429, "notes": "..."}

Body parts use the dashboard's vocabulary: MURA's `XR_*` codes, other parts upper-cased (`LEG`),
and '' or `OTHER` for unknown. `coverage_warning` is the one place that decides whether a study's
body part is inside the coverage; `colour_warning` flags an image that is plainly not a radiograph.
The manifest's `info["training_data"]` holds the images per split, body part and label that the
coverage was derived from (`training_counts`), so the dashboard can show them without the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from .body_parts import MURA_BODY_PARTS, OTHER_BODY_PART, body_part_label, normalize_body_part
from .datasets import get_layout, layout_names

COVERAGE_KEY = "coverage"
TRAINING_DATA_KEY = "training_data"
NOT_A_BODY_PART = frozenset({"", OTHER_BODY_PART, "MIXED"})
"""Body-part values that name no single body part (FracAtlas flags `MIXED` for several at once)."""

COLOURFULNESS_LIMIT = 33.0
"""Hasler-Suesstrunk colourfulness above which an image is called a colour picture: "moderately
colourful" on their scale. Gray radiographs score 0, even as RGB JPEGs. Measured on FracAtlas
radiographs: a faint warm cast (R, G, B scaled by 1, 0.95, 0.85) scores about 11, a blue cast
(0.7, 0.85, 1) 17 to 26, a strong sepia (1, 0.8, 0.6) 23 to 35, so a strong tint over a bright
radiograph can be flagged: it is strong colour. Skin against a white or green background: 50 to 80."""


@dataclass(frozen=True)
class Coverage:
    """What an ensemble was trained on.

    Args:
        dataset: the training data's name ("FracAtlas", "MURA v1.1", ...).
        body_parts: body-part codes seen in training (MURA's `XR_*` or other upper-case names).
        positive_label: what the positive class means ("fracture", "abnormal").
        n_images: training images.
        notes: how the body parts were decided, where that is not obvious.
    """

    dataset: str
    body_parts: tuple[str, ...]
    positive_label: str
    n_images: int | None = None
    notes: str = ""

    @classmethod
    def from_info(cls, info: Mapping[str, Any] | None) -> Coverage | None:
        """The coverage recorded in a manifest's `info`, or None when it records none.

        Args:
            info: the manifest's `info` (or `Ensemble.info`).

        Returns:
            A `Coverage`, or None when `info` has no usable `coverage` entry.
        """
        entry = (info or {}).get(COVERAGE_KEY)
        if not isinstance(entry, Mapping) or not entry.get("body_parts"):
            return None
        parts = tuple(normalize_body_part(p) for p in entry["body_parts"])
        n_images = entry.get("n_images")
        return cls(dataset=str(entry.get("dataset") or "unnamed data"),
                   body_parts=tuple(p for p in parts if p not in NOT_A_BODY_PART),
                   positive_label=str(entry.get("positive_label") or "abnormal"),
                   n_images=int(n_images) if isinstance(n_images, (int, float)) else None,
                   notes=str(entry.get("notes") or ""))

    def to_info(self) -> dict[str, Any]:
        """The JSON-ready entry for a manifest's `info["coverage"]`."""
        out = asdict(self)
        out["body_parts"] = list(self.body_parts)
        return out

    def part_names(self) -> str:
        """The covered body parts in words, e.g. 'hand, shoulder, leg and hip'."""
        names = [body_part_label(p).lower() for p in self.body_parts]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]

    def describe(self) -> str:
        """One phrase, e.g. 'hand, shoulder, leg and hip radiographs of FracAtlas (2,429 images), fracture vs none'."""
        count = f" ({self.n_images:,} images)" if self.n_images else ""
        return (f"{self.part_names()} radiographs of {self.dataset}{count}, "
                f"{self.positive_label} vs no {self.positive_label}")

    def covers(self, body_part: str) -> bool | None:
        """Whether `body_part` was in the training data; None when the body part is unknown."""
        part = normalize_body_part(body_part)
        if part in NOT_A_BODY_PART:
            return None
        return part in self.body_parts


def coverage_text(coverage: Coverage | None) -> str:
    """The model card's coverage paragraph (the Model card page and `MODEL_CARD.md`)."""
    if coverage is None:
        return ("The installed weights do not record what they were trained on, so their coverage is unknown: "
                "the Diagnose page and the CLI warn on every study.")
    text = (f"Trained on {coverage.describe()}. For any other body part, and when the body part is unknown, "
            "the Diagnose page and the CLI warn that the verdict is not meaningful.")
    return f"{text} {coverage.notes}" if coverage.notes else text


def coverage_warning(coverage: Coverage | None, body_part: str) -> str:
    """The warning for a study of `body_part` read by an ensemble with `coverage`; '' when inside.

    An unknown body part is reported as unknown, never as covered, and an ensemble that records no
    coverage is said to have an unknown coverage.

    Args:
        coverage: the ensemble's `Coverage`, or None when its manifest records none.
        body_part: the study's body part (a MURA code, another name, '' or `OTHER` when unknown).

    Returns:
        A sentence for the user, or '' when the body part is inside the coverage.
    """
    part = normalize_body_part(body_part)
    if part in NOT_A_BODY_PART:
        if coverage is None:
            return ("Body part unknown, and the installed model does not record what it was trained on: "
                    "whether this study is inside its competence is unknown.")
        return (f"Body part unknown: the installed model was trained only on {coverage.describe()}. "
                "Unless the study shows one of these, the verdict is not meaningful; choose the body part "
                "to check.")
    name = body_part_label(part)
    if coverage is None:
        return (f"The installed model does not record what it was trained on, so whether {name.lower()} "
                "studies are inside its competence is unknown.")
    if part in coverage.body_parts:
        return ""
    return (f"{name} is outside the installed model's training data: it was trained only on "
            f"{coverage.describe()}. The verdict is not meaningful for this body part.")


def verdict_withheld(coverage: Coverage | None, body_part: str) -> str:
    """Why no headline verdict is given for a study of `body_part`; '' when one is given.

    A verdict is withheld when the ensemble records its coverage and the study's body part is outside
    it or unknown: its scores there are not meaningful, and a headline verdict under a warning is a mixed
    message. An ensemble that records no coverage still gives its verdict, with `coverage_warning`'s
    note. The Diagnose page, the JSON/CSV downloads and the PDF report all follow this rule.

    Args:
        coverage: the ensemble's `Coverage`, or None when its manifest records none.
        body_part: the study's body part (a MURA code, another name, '' or `OTHER` when unknown).

    Returns:
        A headline such as 'No verdict: humerus is outside the model's training data', or ''.
    """
    if coverage is None:
        return ""
    covered = coverage.covers(body_part)
    if covered:
        return ""
    if covered is None:
        return "No verdict: the body part is unknown"
    return (f"No verdict: {body_part_label(normalize_body_part(body_part)).lower()} is outside the model's "
            "training data")


def colour_warning(score: float | None, name: str = "The image") -> str:
    """A warning when an image is plainly not a radiograph because it is in strong colour; '' otherwise.

    Radiographs are gray even when stored as RGB, so strong colour means a photograph, a chart or a
    screenshot, on which the models' score means nothing. Reads no file: the decoder measured it.

    Args:
        score: the image's colourfulness as the decoder recorded it (`imaging.LoadedImage.colourfulness`;
            None when not measured).
        name: how to call the image in the warning.

    Returns:
        The warning, or ''.
    """
    if score is None or score <= COLOURFULNESS_LIMIT:
        return ""
    return (f"{name} is in strong colour (colourfulness {score:.0f}; radiographs are gray): it does not look "
            "like a radiograph, and its score is not meaningful.")


def dataset_name(data: Mapping[str, Any]) -> str:
    """A dataset's name for people, from a report's `data` entry (its layout), never its path on disk.

    Args:
        data: a report's `data` (`format`, `root`, ...).

    Returns:
        The layout's title ("FracAtlas", "MURA v1.1", ...), the layout as written, or "unnamed data".
    """
    fmt = str(data.get("format") or "")
    return _layout_title(fmt) if fmt else "unnamed data"


def _layout_title(name: str) -> str:
    return get_layout(name).title if name in layout_names() else name


def _positive_label(name: str) -> str:
    return get_layout(name).positive_label if name in layout_names() else "abnormal"


def training_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Images per split, body part and label of a training index (`datasets.index_dataset(...).table`).

    Args:
        table: rows with `split`, `body_part` and `label` (1 = positive, 0 = negative).

    Returns:
        Columns split, body_part (normalised as the dashboard names it), label ("positive"/"negative"),
        images; one row per combination that occurs, sorted.
    """
    frame = pd.DataFrame({"split": table["split"].astype(str),
                          "body_part": table["body_part"].map(normalize_body_part),
                          "label": np.where(table["label"].astype(int) == 1, "positive", "negative")})
    counts = frame.groupby(["split", "body_part", "label"]).size().rename("images").reset_index()
    return counts.sort_values(["split", "body_part", "label"]).reset_index(drop=True)


def training_coverage(table: pd.DataFrame, formats: Sequence[str], train_split: str = "train",
                      notes: str = "") -> Coverage:
    """The coverage of an ensemble trained on the `train_split` rows of an index.

    Args:
        table: the training data's index (columns split, body_part, label, dataset).
        formats: the layouts of its sources (`datasets.layout_names()`): their titles name the dataset,
            their `positive_label` what label 1 means.
        train_split: the split the members were trained on.
        notes: how the body parts were decided, where that is not obvious.

    Returns:
        The body parts present in the training split, MURA's first, then the others by image count
        (rows flagged as several body parts at once are not a body part), with the dataset, the label's
        meaning and the image count.
    """
    train = table[table["split"].astype(str) == train_split]
    counts = train["body_part"].map(normalize_body_part).value_counts()
    parts = sorted(counts.index, key=lambda p: (p not in MURA_BODY_PARTS, MURA_BODY_PARTS.index(p)
                                                if p in MURA_BODY_PARTS else -counts[p]))
    labels = sorted({_positive_label(f) for f in formats})
    return Coverage(dataset=" + ".join(_layout_title(f) for f in dict.fromkeys(formats)),
                    body_parts=tuple(p for p in parts if p not in NOT_A_BODY_PART),
                    positive_label=" or ".join(labels), n_images=int(len(train)), notes=notes)


def training_data_info(table: pd.DataFrame, split_file: str = "") -> dict[str, Any]:
    """The manifest's `info["training_data"]`: images per split, body part and label, and the split file."""
    return {"split_file": split_file, "counts": training_counts(table).to_dict("records")}


def training_data_frame(info: Mapping[str, Any] | None) -> pd.DataFrame:
    """The training counts recorded in a manifest's `info` (empty when it records none).

    Returns:
        Columns split, body_part, label ("positive"/"negative"), images.
    """
    entry = (info or {}).get(TRAINING_DATA_KEY) or {}
    frame = pd.DataFrame(entry.get("counts") or [], columns=["split", "body_part", "label", "images"])
    return frame.astype({"images": int})
