"""Body parts: MURA's seven study types, their display names, and finding a study's body part.

One vocabulary for the indexers, the CLI and the dashboard: MURA folder names (``XR_WRIST``), DICOM
BodyPartExamined defined terms and plain words all map to the same codes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

MURA_BODY_PARTS = (
    "XR_ELBOW",
    "XR_FINGER",
    "XR_FOREARM",
    "XR_HAND",
    "XR_HUMERUS",
    "XR_SHOULDER",
    "XR_WRIST",
)
"""MURA's seven upper-extremity study types, as its folders name them."""

OTHER_BODY_PART = "OTHER"
AUTO_BODY_PART = "auto"
BODY_PART_LABELS = {part: part.removeprefix("XR_").capitalize() for part in MURA_BODY_PARTS}
BODY_PART_LABELS[OTHER_BODY_PART] = "Other/unknown"
BODY_PART_CHOICES = (AUTO_BODY_PART, *MURA_BODY_PARTS, OTHER_BODY_PART)
"""Options of the body-part selector: detect from the images, MURA's seven parts, other."""

# DICOM BodyPartExamined defined terms (PS3.16 CID 4031 and common variants) -> MURA part.
_DICOM_BODY_PARTS = {
    "ELBOW": "XR_ELBOW", "FINGER": "XR_FINGER", "FINGERS": "XR_FINGER", "THUMB": "XR_FINGER",
    "FOREARM": "XR_FOREARM", "HAND": "XR_HAND", "HUMERUS": "XR_HUMERUS", "ARM": "XR_HUMERUS",
    "UPPER ARM": "XR_HUMERUS", "UPPERARM": "XR_HUMERUS", "SHOULDER": "XR_SHOULDER",
    "WRIST": "XR_WRIST",
}
XR_NAME_RE = re.compile(r"XR_([A-Za-z]+)", re.IGNORECASE)
"""MURA's study-type names (``XR_WRIST``), in folder and file names."""


def body_part_label(code: str) -> str:
    """Human name of a body-part code ('XR_WRIST' -> 'Wrist'); other values title-cased."""
    if not code:
        return ""
    return BODY_PART_LABELS.get(code, str(code).replace("_", " ").strip().capitalize())


def normalize_body_part(value: str) -> str:
    """Map a MURA folder name, a DICOM BodyPartExamined value or a plain word to a MURA code.

    Returns:
        One of `MURA_BODY_PARTS`, the value upper-cased when it is some other body part, or ''.
    """
    text = str(value or "").strip().upper().replace("-", " ")
    if not text:
        return ""
    if text in MURA_BODY_PARTS:
        return text
    if f"XR_{text}" in MURA_BODY_PARTS:
        return f"XR_{text}"
    return _DICOM_BODY_PARTS.get(text, text)


def detect_body_part(names: Sequence[str], dicom_parts: Sequence[str] = ()) -> tuple[str, str]:
    """The study's body part as found in the data.

    DICOM BodyPartExamined values take precedence over MURA-style names (``XR_WRIST``) in the
    file names. When the images disagree, the most frequent part wins.

    Args:
        names: the images' file names.
        dicom_parts: BodyPartExamined of each image ('' when absent).

    Returns:
        (code, source): code is a MURA part, another upper-case body part or ''; source says
        where it was found ("DICOM BodyPartExamined", "file names") or is '' when not found.
    """
    found = [normalize_body_part(p) for p in dicom_parts if p and str(p).strip()]
    source = "DICOM BodyPartExamined"
    if not found:
        found = [f"XR_{m.group(1).upper()}" for n in names if (m := XR_NAME_RE.search(str(n)))]
        found = [normalize_body_part(p) for p in found]
        source = "file names"
    if not found:
        return "", ""
    counts = Counter(found)
    code = counts.most_common(1)[0][0]
    if len(counts) > 1:
        source += " (the images disagree; most frequent shown)"
    return code, source


def resolve_body_part(choice: str, detected: str, detected_source: str) -> tuple[str, str]:
    """The study's body part and where it comes from: the user's choice unless it is 'auto'."""
    if choice == AUTO_BODY_PART:
        return detected, detected_source
    return choice, "chosen by the user"
