"""A classifier that knows nothing about fractures: each test image takes the label of the most alike
training picture. What it scores on a split measures how much of that split a model can pass by memory.

    python -m train.memory_baseline ROOT --split-file FILE [--format auto] [--train train] [--test test]
        [--out report.json]

"Most alike" is the leakage finder's own measure (`mura_core.datasets.leakage.memory_baseline`): the
Hamming distance between 64-bit pHashes, the smallest over the test picture as it is and flipped or
turned (as a model trained with flips would see it). Above 0.5 (an abnormal training picture is nearer
than any normal one) a test image is called abnormal. Files that cannot be decoded are left out. It
prints the metrics with 95% bootstrap intervals (`mura_core.metrics.metrics_with_ci`), the confusion
matrix, how many test images have an identical or near-identical picture in training, and the accuracy
per band of distance to the nearest training picture.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mura_core.datasets import index_dataset, layout_names, leakage
from mura_core.metrics import metrics_with_ci


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="dataset folder")
    parser.add_argument("--format", default="auto", choices=["auto", *layout_names()])
    parser.add_argument("--split-file", help="CSV path_key,split (train/leak_free_split.py writes one)")
    parser.add_argument("--train", default="train", help="the split remembered")
    parser.add_argument("--test", default="test", help="the split scored")
    parser.add_argument("--workers", type=int, default=2, help="threads reading and hashing the files")
    parser.add_argument("--out", help="write the metrics to this JSON file")
    args = parser.parse_args(argv)

    table = index_dataset(args.root, args.format, args.split_file).table
    table = table[table["split"].isin([args.train, args.test])].reset_index(drop=True)
    report = leakage.find_leakage(table, workers=args.workers)
    try:
        rows = leakage.memory_baseline(report, table["label"], args.test, args.train)
    except ValueError as exc:
        print(f"{args.root}: {exc}", file=sys.stderr)
        return 2
    result = metrics_with_ci(rows["label"].to_numpy(), rows["score"].to_numpy(), threshold=0.5)
    near = ~rows["identical"] & (rows["nearest"] <= leakage.NEAR_DISTANCE)
    result.update(
        train_images=int(((report.files["split"] == args.train) & report.files["phash"].notna()).sum()),
        test_images=len(rows), left_out_undecodable=int(report.files["phash"].isna().sum()),
        test_identical_in_train=int(rows["identical"].sum()), test_near_in_train=int(near.sum()),
        near_distance=leakage.NEAR_DISTANCE, by_distance=leakage.memory_by_distance(rows),
    )
    print(f"memory baseline, {args.test} vs {args.train}: {result['test_images']} test images "
          f"({result['test_identical_in_train']} identical, {result['test_near_in_train']} near-identical "
          f"to a training picture, also flipped or turned), {result['train_images']} training images")
    for key in ("accuracy", "auc", "recall", "specificity"):
        low, high = result["ci"].get(key, (None, None))
        shown = "n/a" if result[key] is None else f"{result[key]:.4f}"
        print(f"  {key}: {shown}" + ("" if low is None else f" (95% CI {low:.3f}-{high:.3f})"))
    print(f"  TP {result['tp']}, TN {result['tn']}, FP {result['fp']}, FN {result['fn']}")
    print("  by distance to the nearest training picture: " + ", ".join(
        f"{row['distance']}: {row['images']} images"
        + ("" if row["accuracy"] is None else f", accuracy {row['accuracy']:.3f}") for row in result["by_distance"]))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
