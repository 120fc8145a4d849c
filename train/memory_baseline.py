"""A classifier that knows nothing about fractures: each test image takes the label of the most alike
training picture. What it scores on a split measures how much of that split a model can pass by memory.

    python -m train.memory_baseline ROOT --split-file FILE [--format auto] [--train train] [--test test]
        [--out report.json]

"Most alike" is the leakage finder's own measure (`mura_core.datasets.leakage`): the Hamming distance
between 64-bit pHashes, the smallest over the test picture as it is and flipped or turned (as a model
trained with flips would see it). An image's score is ``0.5 + (d_normal - d_abnormal) / 128``, where ``d_normal``
and ``d_abnormal`` are its distances to the nearest normal and the nearest abnormal training picture:
above 0.5 when an abnormal training picture is nearer (then it is called abnormal, threshold 0.5), below
when a normal one is. On a tie the training pictures at that distance vote, by the share of them that are
abnormal (a small shift within ±1/256). Files that cannot be decoded are left out and counted. It
prints the metrics with 95% bootstrap intervals (`mura_core.metrics.metrics_with_ci`), the confusion
matrix, and how many test images have an identical or near-identical picture in training.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mura_core.datasets import index_dataset, layout_names, leakage
from mura_core.metrics import metrics_with_ci


def nearest_distances(test_hashes: np.ndarray, train_hashes: np.ndarray, chunk: int = 256) -> np.ndarray:
    """The Hamming distance from every test picture to every training hash, shape (test, train).

    Args:
        test_hashes: shape (test,), or (test, k) for each picture's k hashes (as it is, flipped, turned):
            then the smallest distance of the k.
        train_hashes: shape (train,).
        chunk: test pictures compared at a time, so MURA-size splits stay within a few hundred MB.
    """
    test_hashes = test_hashes.reshape(len(test_hashes), -1)
    rows = [leakage.hamming(block[:, :, None], train_hashes[None, None, :]).min(axis=1)
            for block in (test_hashes[start:start + chunk] for start in range(0, len(test_hashes), chunk))]
    return np.concatenate(rows) if rows else np.zeros((0, len(train_hashes)), np.int64)


def memory_scores(test_hashes: np.ndarray, train_hashes: np.ndarray, train_labels: np.ndarray) -> np.ndarray:
    """Each test image's score (probability-like, 0..1) from its nearest normal and abnormal training picture.

    Args:
        test_hashes: 64-bit pHashes as uint64, shape (test,) or (test, k) (see `nearest_distances`).
        train_hashes: 64-bit pHashes as uint64, shape (train,).
        train_labels: 0 (normal) or 1 (abnormal) per training hash; both labels must occur.

    Returns:
        ``0.5 + (d_normal - d_abnormal) / 128``, ties moved by ``(share_abnormal - 0.5) / 128`` where
        ``share_abnormal`` is the abnormal share of the training pictures at the tied distance.
    """
    labels = np.asarray(train_labels).astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("the training split needs both normal and abnormal images")
    distances = nearest_distances(test_hashes, train_hashes).astype(np.int64)
    d_abnormal = distances[:, labels].min(axis=1)
    d_normal = distances[:, ~labels].min(axis=1)
    scores = 0.5 + (d_normal - d_abnormal) / 128.0
    tied = d_normal == d_abnormal
    if tied.any():
        at_min = distances[tied] == d_normal[tied, None]
        share = (at_min & labels).sum(axis=1) / at_min.sum(axis=1)
        scores[tied] += (share - 0.5) / 128.0
    return scores


DISTANCE_BANDS = ((0, 0), (1, leakage.NEAR_DISTANCE), (leakage.NEAR_DISTANCE + 1, 10), (11, 16), (17, 64))
"""Bands of the distance to the nearest training picture that `by_distance` reports."""


def by_distance(nearest: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> list[dict]:
    """The baseline's accuracy per band of distance to the nearest training picture (`DISTANCE_BANDS`):
    where it stays high beyond the near-duplicate threshold, the test still holds altered copies."""
    rows = []
    for low, high in DISTANCE_BANDS:
        inside = (nearest >= low) & (nearest <= high)
        correct = (scores[inside] >= 0.5) == labels[inside].astype(bool)
        rows.append({"distance": f"{low}-{high}", "images": int(inside.sum()),
                     "accuracy": float(correct.mean()) if inside.any() else None})
    return rows


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
    prints = leakage.fingerprints(table["path"].astype(str).tolist(), args.workers)
    table = table.assign(phash=prints["phash"].to_numpy(), turned=prints["turned"].to_numpy(),
                         sha256=prints["sha256"].to_numpy())
    decoded = table["phash"].notna()
    train, test = (table[decoded & (table["split"] == name)] for name in (args.train, args.test))
    if train.empty or test.empty:
        print(f"{args.root}: no decodable images in split {args.train!r} or {args.test!r}", file=sys.stderr)
        return 2
    train_hashes = np.array([int(h) for h in train["phash"]], np.uint64)
    test_hashes = np.array([[int(h), *turns] for h, turns in zip(test["phash"], test["turned"])], np.uint64)
    scores = memory_scores(test_hashes, train_hashes, train["label"].to_numpy())
    result = metrics_with_ci(test["label"].to_numpy(), scores, threshold=0.5)
    nearest = nearest_distances(test_hashes, train_hashes).min(axis=1)
    result["by_distance"] = by_distance(nearest, test["label"].to_numpy(), scores)
    identical = test["sha256"].isin(set(train["sha256"])).to_numpy()
    result.update(
        train_images=len(train), test_images=len(test),
        left_out_undecodable=int((~decoded & table["split"].isin([args.train, args.test])).sum()),
        test_identical_in_train=int(identical.sum()),
        test_near_in_train=int((~identical & (nearest <= leakage.NEAR_DISTANCE)).sum()),
        near_distance=leakage.NEAR_DISTANCE,
    )
    ci = result["ci"]
    print(f"memory baseline, {args.test} vs {args.train}: {len(test)} test images "
          f"({result['test_identical_in_train']} identical, {result['test_near_in_train']} near-identical "
          f"to a training picture, also flipped or turned), {len(train)} training images")
    for key in ("accuracy", "auc", "recall", "specificity"):
        low, high = ci.get(key, (None, None))
        shown = "n/a" if result[key] is None else f"{result[key]:.4f}"
        interval = "" if low is None else f" (95% CI {low:.3f}-{high:.3f})"
        print(f"  {key}: {shown}{interval}")
    print(f"  TP {result['tp']}, TN {result['tn']}, FP {result['fp']}, FN {result['fn']}")
    print("  by distance to the nearest training picture: " + ", ".join(
        f"{row['distance']}: {row['images']} images" + ("" if row["accuracy"] is None else f", accuracy {row['accuracy']:.3f}")
        for row in result["by_distance"]))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
