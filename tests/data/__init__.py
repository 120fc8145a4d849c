"""Data the tests read.

`FRACATLAS` is the committed fixture (48 real FracAtlas radiographs with their boxes, in FracAtlas's
layout; see fracatlas/README.md). `SHARED_DATA` is the one path outside the repository: a full
dataset there may only add optional, larger checks, never replace the fixture.
"""

from __future__ import annotations

from pathlib import Path

FRACATLAS = Path(__file__).resolve().parent / "fracatlas"
FRACATLAS_ATTRIBUTION = (
    "FracAtlas, Abedeen et al., Scientific Data 10, 521 (2023), doi:10.6084/m9.figshare.22363012, CC BY 4.0"
)
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
FRACATLAS_FULL = SHARED_DATA / "fracatlas"  # optional: the full copy, when present beside the repository
