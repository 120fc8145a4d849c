"""Rebuild the committed FracAtlas fixture (tests/data/fracatlas) from a full FracAtlas copy.

Not part of the test run: the fixture is committed. Usage:

    python -m tests.data.make_fracatlas_fixture /path/to/fracatlas

Picks, in file-name order, a fixed number of fractured images that have boxes and of non-fractured
images per body part, keeps their original file names, rows of ``dataset.csv`` and COCO annotations,
and copies the images unchanged.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent / "fracatlas"
PER_PART = {"hand": 10, "leg": 6, "hip": 3, "shoulder": 3, "mixed": 2}  # per label: 24 + 24 images
ALWAYS = ("IMG0000019.jpg",)  # the hand fracture the image-loader corpus is built from


def main(source: Path) -> None:
    table = pd.read_csv(source / "dataset.csv")
    coco = json.loads((source / "annotations.json").read_text())
    boxed = {image["file_name"] for image in coco["images"]
             if any(a["image_id"] == image["id"] for a in coco["annotations"])}
    part = table[list(PER_PART)[:-1]].idxmax(axis=1).where(table["mixed"] == 0, "mixed")
    chosen: list[str] = list(ALWAYS)
    for label in (1, 0):
        for name, n in PER_PART.items():
            pool = table[(part == name) & (table["fractured"] == label)]["image_id"]
            if label:
                pool = pool[pool.isin(boxed)]
            chosen += [i for i in sorted(pool) if i not in chosen][: n - sum(
                1 for i in ALWAYS if i in set(pool))]
    if HERE.exists():
        shutil.rmtree(HERE / "images", ignore_errors=True)
    (HERE / "images").mkdir(parents=True, exist_ok=True)
    for image_id in chosen:
        shutil.copyfile(source / "images" / image_id, HERE / "images" / image_id)
    table[table["image_id"].isin(chosen)].to_csv(HERE / "dataset.csv", index=False)
    keep = [image for image in coco["images"] if image["file_name"] in set(chosen)]
    ids = {image["id"] for image in keep}
    subset = {**coco, "images": keep, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}
    (HERE / "annotations.json").write_text(json.dumps(subset, separators=(",", ":")))
    print(f"{len(chosen)} images, {len(subset['annotations'])} boxes -> {HERE}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
