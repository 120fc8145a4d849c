"""A study's result, as the ensemble returns it, and its exports (JSON, CSV) for people and files.

No TensorFlow here: the dashboard and tests can build, read and export results without models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .body_parts import body_part_label
from .coverage import Coverage, coverage_warning, verdict_withheld
from .csvsafe import write_csv
from .decision import verdict, verdict_text
from .notices import DISCLAIMER
from .regions import Region, region_is_finding


@dataclass
class ImageResult:
    """One image of a study: per-member and ensemble probability, heatmaps, or the error."""

    name: str
    probabilities: dict[str, float] = field(default_factory=dict)
    ensemble: float | None = None
    image: np.ndarray | None = None  # (H, W) uint8, the decoded image at its native resolution
    # member name or "ensemble" -> (s, s) float32 map in [0, 1] at the model's input side (the
    # fused map at the finest member's); resize it to the image (`gradcam.resize_heatmap`) to use it
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)
    body_part: str = ""
    error: str | None = None
    warning: str = ""  # e.g. strong colour: not a radiograph (`coverage.colour_warning`)
    regions: list[Region] = field(default_factory=list)  # suspected regions, image pixels (`regions.find_regions`)
    # with box heads: (m, m, 4) the box each cell of the fused map says its lesion has, (x0, y0, x1, y1) as
    # fractions of the image (`regions.box_field`, averaged over the members that have one)
    box_field: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Study:
    """One study to predict (`Ensemble.predict_studies`): its images and what is known about it.

    Attributes:
        images: paths, bytes (e.g. uploads or instances fetched from a PACS) or arrays.
        names: display names (default: file names, or image1, image2, ...).
        body_part: the study's body part; None to detect it from the images.
    """

    images: Sequence[Any]
    names: Sequence[str] | None = None
    body_part: str | None = None


@dataclass
class StudyResult:
    """A study's verdict: images, study probability (mean of its images), threshold and verdict."""

    images: list[ImageResult]
    members: list[str]
    threshold: float
    probability: float | None
    member_probabilities: dict[str, float]
    verdict: str | None  # "abnormal" | "normal" | None when no image could be read
    cam_method: str | None = None
    coverage: Coverage | None = None  # what the ensemble was trained on; None when not recorded
    body_part: str = ""  # the study's body part, '' when unknown
    body_part_source: str = ""  # where it was found ("DICOM BodyPartExamined", "file names", ...)
    region_threshold: float | None = None  # a region from this score is a finding (the manifest's); None: no regions

    @property
    def coverage_note(self) -> str:
        """Why no verdict of this study is meaningful: its body part is outside the coverage (or unknown)."""
        return coverage_warning(self.coverage, self.body_part)

    @property
    def warning(self) -> str:
        """Why the verdict may not be meaningful: body part outside the coverage (or unknown), colour images."""
        return _join(self.coverage_note, *(r.warning for r in self.images))

    def image_warning(self, image: ImageResult) -> str:
        """The warning of one readable image of this study: the coverage note and its own ('' for errors)."""
        return _join(self.coverage_note, image.warning) if image.ok else ""

    @property
    def withheld(self) -> str:
        """The headline that replaces the verdict outside the coverage (`coverage.verdict_withheld`), or ''."""
        return verdict_withheld(self.coverage, self.body_part)

    def with_body_part(self, body_part: str, source: str = "") -> StudyResult:
        """A copy of this result for a study of `body_part` (e.g. the one the user chose)."""
        return replace(self, body_part=body_part or "", body_part_source=source)

    def is_finding(self, region: Region) -> bool:
        """Whether `region` is shown as a finding (`regions.region_is_finding`: abnormal verdict, not withheld,
        score from the region threshold up); the other regions are listed as below the threshold."""
        return self.region_threshold is not None and region_is_finding(
            region.score, self.region_threshold, self.verdict, self.withheld)

    def region_rows(self) -> list[dict[str, Any]]:
        """One dict per region of every image: image name, box (x0, y0, x1, y1, image pixels), score, finding."""
        return [{"image": image.name, **region.to_dict(), "finding": self.is_finding(region)}
                for image in self.images for region in image.regions]

    @property
    def errors(self) -> list[str]:
        return [f"{r.name}: {r.error}" for r in self.images if r.error]

    def to_frame(self) -> pd.DataFrame:
        """One row per image: name, body part, one column per member, ensemble, verdict, its regions and
        findings (counts), error."""
        rows = []
        for r in self.images:
            row = {"image": r.name, "body_part": r.body_part}
            row.update({m: r.probabilities.get(m) for m in self.members})
            row["ensemble"] = r.ensemble
            row["verdict"] = verdict(r.ensemble, self.threshold)
            row["regions"] = len(r.regions)
            row["findings"] = sum(self.is_finding(region) for region in r.regions)
            row["error"] = r.error or ""
            row["warning"] = r.warning
            rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary without pixels (and without any patient identifier: none is kept)."""
        return {
            "verdict": None if self.withheld else self.verdict,
            "verdict_withheld": self.withheld,
            "warning": self.warning,
            "body_part": self.body_part,
            "coverage": None if self.coverage is None else self.coverage.to_info(),
            "study_probability": self.probability,
            "threshold": self.threshold,
            "region_threshold": self.region_threshold,
            "member_probabilities": self.member_probabilities,
            "images": [
                {"image": r.name, "body_part": r.body_part, "probabilities": r.probabilities,
                 "ensemble": r.ensemble, "error": r.error, "warning": r.warning,
                 "regions": [{**region.to_dict(), "finding": self.is_finding(region)} for region in r.regions]}
                for r in self.images
            ],
            "cam_method": self.cam_method,
            "notice": DISCLAIMER,
        }


def _join(*notes: str) -> str:
    return " ".join(n for n in notes if n)


def study_export(result: StudyResult, body_part: str = "", body_part_source: str = "") -> dict[str, Any]:
    """The study result as a JSON-ready dict: `StudyResult.to_dict()` for the study's body part, plus its name.

    No pixels and no DICOM attribute other than the body part are included.
    """
    out = result.with_body_part(body_part).to_dict()
    out["members"] = list(result.members)
    out["verdict_text"] = out["verdict_withheld"] or verdict_text(result.probability, result.threshold)
    out["study_body_part"] = body_part_label(body_part) or "unknown"
    out["study_body_part_source"] = body_part_source or ("not given" if not body_part else "")
    return out


def study_table(result: StudyResult, body_part: str = "") -> pd.DataFrame:
    """One row per image (`StudyResult.to_frame()`) with the threshold, the study body part and its warning.

    Outside the coverage (`StudyResult.withheld`) the verdict column is empty and the warning comes
    right after the scores.
    """
    study = result.with_body_part(body_part)
    frame = study.to_frame()  # its findings follow the study's body part
    frame.insert(frame.columns.get_loc("ensemble") + 1, "study_warning", study.warning)
    if study.withheld:
        frame["verdict"] = ""
    frame["threshold"] = result.threshold
    frame["study_body_part"] = body_part_label(body_part) or "unknown"
    return frame


def study_csv(result: StudyResult, body_part: str = "") -> str:
    """`study_table` as a formula-safe CSV (`csvsafe.write_csv`), the per-image download."""
    return write_csv(study_table(result, body_part))


REGION_COLUMNS = ("image", "x0", "y0", "x1", "y1", "score", "finding", "study_warning")
"""Columns of `region_table`: box corners in the image's pixels (x1, y1 exclusive), score in [0, 1], whether
the region is shown as a finding, and the study's warning (as every download carries it)."""


def region_table(result: StudyResult, body_part: str = "") -> pd.DataFrame:
    """One row per suspected region of the study (`StudyResult.region_rows`), for the study's body part:
    `finding` is False for all of them where the verdict is withheld or normal."""
    study = result.with_body_part(body_part)
    frame = pd.DataFrame(study.region_rows(), columns=list(REGION_COLUMNS))
    frame["study_warning"] = study.warning
    return frame


def region_csv(result: StudyResult, body_part: str = "") -> str:
    """`region_table` as a formula-safe CSV (`csvsafe.write_csv`), the regions download."""
    return write_csv(region_table(result, body_part))


def study_json(result: StudyResult, body_part: str = "", body_part_source: str = "") -> str:
    """`study_export` serialised as indented JSON."""
    return json.dumps(study_export(result, body_part, body_part_source), indent=2)
