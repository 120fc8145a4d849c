"""CPU inference in mixed_bfloat16 against float32: speed and the largest probability difference.

    python benchmarks/bench_bf16.py [--images 16] [--size 320] [--repeats 2] [--weights weights]

Two ensembles, each predicted on the same real FracAtlas radiographs in float32 and in
mixed_bfloat16 (the same weights, layers computing in bfloat16, the head's output in float32):

- the method's ensemble (2x DenseNet-169 + 2x ResNet-101, random weights, at `--size`): the speed
  that matters for MURA; its untrained probabilities sit near 0.5, so its difference says little;
- a trained ensemble (`--weights`, default the bundled demo in `weights/`): the probability
  difference on outputs that mean something.

Prints images/s for each precision, the ratio bf16 / fp32, and max |p_bf16 - p_fp32| per member and
for the ensemble mean.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mura_core.ensemble import load_ensemble  # noqa: E402
from mura_core.imaging import load_image  # noqa: E402
from mura_core.preprocessing import resize_square  # noqa: E402
from mura_core.registry import create_model  # noqa: E402

FRACATLAS = Path(__file__).resolve().parents[2] / "shared" / "data" / "fracatlas" / "images"
METHOD = {"densenet169_m1": "densenet169", "densenet169_m2": "densenet169",
          "resnet101_m1": "resnet101", "resnet101_m2": "resnet101"}


def radiographs(n: int) -> list[np.ndarray]:
    """The first n FracAtlas images, decoded (8-bit gray)."""
    files = sorted(FRACATLAS.glob("*.jpg"))[:n]
    if len(files) < n:
        raise SystemExit(f"{FRACATLAS}: needs {n} FracAtlas images, found {len(files)}")
    return [load_image(f) for f in files]


def rebuild(model: keras.Model, architecture: str, policy: str) -> keras.Model:
    """The same model and weights with every layer but the float32 head output computing in `policy`."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        copy = create_model(architecture, input_size=int(model.input_shape[1]),
                            dense_units=model.get_layer("head_dense").units,
                            dropout=model.get_layer("head_dropout").rate)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def predict_all(model: keras.Model, images: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
    """Probabilities of `images` and the seconds the second (warm) pass took."""
    fn = tf.function(lambda x: model(x, training=False)[:, 0],
                     input_signature=[tf.TensorSpec([None, *images.shape[1:]], tf.float32)])

    def run() -> np.ndarray:
        return np.concatenate([fn(tf.constant(images[i:i + batch], tf.float32)).numpy()
                               for i in range(0, len(images), batch)])

    run()  # trace
    start = time.perf_counter()
    probs = run()
    return probs.astype(np.float64), time.perf_counter() - start


def compare(title: str, members: dict[str, tuple[keras.Model, str]], grays: list[np.ndarray],
            batch: int, repeats: int) -> tuple[float, float]:
    """Print and return (speed ratio bf16 / fp32, max |p_bf16 - p_fp32| of the ensemble mean)."""
    seconds = {"float32": 0.0, "mixed_bfloat16": 0.0}
    probs: dict[str, dict[str, np.ndarray]] = {"float32": {}, "mixed_bfloat16": {}}
    for name, (model, arch) in members.items():
        images = np.stack([resize_square(g, int(model.input_shape[1])) for g in grays]).astype(np.float32)
        variants = {"float32": model, "mixed_bfloat16": rebuild(model, arch, "mixed_bfloat16")}
        for policy, variant in variants.items():
            best = None
            for _ in range(repeats):
                p, s = predict_all(variant, images, batch)
                best = s if best is None else min(best, s)
            probs[policy][name], seconds[policy] = p, seconds[policy] + best
    n = len(grays)
    print(f"\n{title}: {n} images, members {[a for _, a in members.values()]}")
    for policy, s in seconds.items():
        print(f"  {policy:15s} {s:7.2f} s for all members  ({n / s:6.2f} images/s through the ensemble)")
    ratio = seconds["float32"] / seconds["mixed_bfloat16"]
    print(f"  speed bf16 / fp32 = {ratio:.2f}x")
    for name in members:
        diff = np.abs(probs["mixed_bfloat16"][name] - probs["float32"][name])
        print(f"  {name:22s} max |p_bf16 - p_fp32| = {diff.max():.4f} (mean {diff.mean():.4f}; "
              f"fp32 p from {probs['float32'][name].min():.3f} to {probs['float32'][name].max():.3f})")
    mean_fp32 = np.mean(list(probs["float32"].values()), axis=0)
    mean_bf16 = np.mean(list(probs["mixed_bfloat16"].values()), axis=0)
    worst = float(np.abs(mean_bf16 - mean_fp32).max())
    print(f"  ensemble mean          max |p_bf16 - p_fp32| = {worst:.4f}")
    return ratio, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16, help="real radiographs to predict")
    parser.add_argument("--size", type=int, default=320, help="input side of the method's members")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per model (the fastest counts)")
    parser.add_argument("--weights", default="weights", help="a trained ensemble folder for the difference")
    parser.add_argument("--skip-method", action="store_true", help="only the trained ensemble")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    grays = radiographs(args.images)
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs")
    if not args.skip_method:
        method = {n: (create_model(a, input_size=args.size), a) for n, a in METHOD.items()}
        compare(f"method ensemble, random weights, {args.size} px", method, grays, args.batch, args.repeats)
    trained = load_ensemble(args.weights)
    members = {n: (trained.members[n], trained.architectures[n]) for n in trained.names}
    compare(f"trained ensemble {args.weights}", members, grays, args.batch, args.repeats)


if __name__ == "__main__":
    main()
