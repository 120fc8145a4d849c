"""Training input pipeline throughput: tf.data (ours) vs Keras' ImageDataGenerator, same files and augmentation.

    python benchmarks/bench_pipeline.py [--images 480] [--size 320] [--batch 8]

Both decode the same FracAtlas JPEGs, resize to `size`, apply rotation 20 deg, 20% shift and zoom and
horizontal flip, and batch. The reference is `ImageDataGenerator(...).flow_from_dataframe` from
tf-keras (Keras 2; Keras 3 removed it: `pip install tf-keras`). Prints images/s for each, for our
pipeline reading the preprocessed cache, and the ratios (goal: tf.data >= 3x the generator).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

from mura_core.pipeline import Augmentation, build_cache, make_dataset  # noqa: E402

FRACATLAS = Path(__file__).resolve().parents[2] / "shared" / "data" / "fracatlas"


def throughput(batches, n_images: int) -> float:
    start = time.perf_counter()
    seen = 0
    for x, _ in batches:
        seen += len(x)
        if seen >= n_images:
            break
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=480)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    table = pd.read_csv(FRACATLAS / "dataset.csv").head(args.images)
    table = pd.DataFrame({"path": [str(FRACATLAS / "images" / i) for i in table["image_id"]],
                          "label": table["fractured"].astype(int)})
    print(f"{len(table)} FracAtlas images, {args.size} px, batch {args.batch}, {os.cpu_count()} CPUs, "
          f"TensorFlow {tf.__version__}")

    aug = Augmentation(20.0, 0.2, 0.2, True)
    ours = throughput(make_dataset(table, args.size, args.batch, True, aug, seed=0), len(table))
    print(f"tf.data (decode + resize + augment)          {ours:7.1f} images/s")

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        build_cache(table["path"].tolist(), args.size, cache)
        built = time.perf_counter() - start
        cached = throughput(make_dataset(table, args.size, args.batch, True, aug, seed=0, cache=cache), len(table))
    print(f"tf.data from the preprocessed cache          {cached:7.1f} images/s  (cache built in {built:.1f} s)")

    from tf_keras.preprocessing.image import ImageDataGenerator

    generator = ImageDataGenerator(rotation_range=20, width_shift_range=0.2, height_shift_range=0.2,
                                   zoom_range=0.2, horizontal_flip=True, fill_mode="constant")
    flow = generator.flow_from_dataframe(table.assign(label=table["label"].astype(str)), x_col="path",
                                         y_col="label", target_size=(args.size, args.size), color_mode="rgb",
                                         class_mode="binary", batch_size=args.batch, shuffle=True, seed=0)
    reference = throughput(flow, len(table))
    print(f"ImageDataGenerator.flow_from_dataframe       {reference:7.1f} images/s")
    print(f"ratio tf.data / ImageDataGenerator = {ours / reference:.2f}  (goal >= 3)")
    print(f"ratio cached tf.data / ImageDataGenerator = {cached / reference:.2f}")


if __name__ == "__main__":
    main()
