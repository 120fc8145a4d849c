"""Study inference on CPU: prediction vs prediction + Grad-CAM vs the naive dashboard pattern.

    python benchmarks/bench_study.py [--size 320] [--repeats 3] [--xla]
    python benchmarks/bench_study.py --runtimes [--weights FOLDER] [--repeats 5]

The method's ensemble (2x DenseNet-169 + 2x ResNet-101, random weights: timing only), one study of
3 real radiographs. Prints seconds per study for each variant and the ratios measured in this run:
- explain=True / explain=False (goal <= 1.3),
- naive / explain=True (goal >= 3): for each member and image, `model.predict` and then a freshly
  built tf-keras-vis `Gradcam(model, clone=True)`, as most MURA dashboards do,
- explain=True with the suspected regions / without them (goal <= 1.1; `regions.find_regions` on each
  image's fused map, at the images' own sizes),
and throughput against the compute it needs (GFLOPs per image from the registry).

`--runtimes` instead times the installed ensemble (default the bundled one) on ONNX Runtime and on Keras in
this one process: a warm 2-image study of the bundled sample radiographs with the default heatmaps (the
lesion maps, fused, and the suspected regions), and with Grad-CAM, and prints the ONNX / Keras ratios
(goal <= 0.5 for the default study), and the default study on ONNX Runtime with its suspected regions
against the same study without them (goal <= 1.1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mura_core.ensemble import Ensemble  # noqa: E402
from mura_core.imaging import load_image  # noqa: E402
from mura_core.preprocessing import resize_square  # noqa: E402
from mura_core.registry import create_model, get_spec  # noqa: E402

FRACATLAS = Path(__file__).resolve().parents[2] / "shared" / "data" / "fracatlas" / "images"
MEMBERS = {"densenet169_m1": "densenet169", "densenet169_m2": "densenet169",
           "resnet101_m1": "resnet101", "resnet101_m2": "resnet101"}


def study_images(n: int = 3) -> list[np.ndarray]:
    files = sorted(FRACATLAS.glob("*.jpg"))[:n] if FRACATLAS.exists() else []
    if files:
        return [load_image(f) for f in files]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (512, 420), dtype=np.uint8) for _ in range(n)]


def naive_study(models: dict[str, keras.Model], grays: list[np.ndarray]) -> list[float]:
    """The reference pattern: per member and per image, predict, then a fresh Gradcam with a clone."""
    from tf_keras_vis.gradcam import Gradcam

    probs = []
    for name, model in models.items():
        size = model.input_shape[1]
        layer = get_spec(MEMBERS[name]).gradcam_layer
        for gray in grays:
            x = resize_square(gray, size)[None].astype(np.float32)
            probs.append(float(model.predict(x, verbose=0)[0, 0]))
            cam = Gradcam(model, clone=True)
            cam(lambda out: out[:, 0], x, penultimate_layer=layer, seek_penultimate_conv_layer=False)
    return probs


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare_runtimes(weights: str | None, repeats: int) -> None:
    """The installed ensemble's warm study on ONNX Runtime and on Keras, side by side (see the module doc)."""
    from mura_core.ensemble import load_ensemble
    from mura_core.installed import DEFAULT_WEIGHTS

    study = sorted((DEFAULT_WEIGHTS / "samples").glob("*.jpg"))[:2]
    ensembles = {runtime: load_ensemble(weights, runtime=runtime) for runtime in ("onnx", "keras")}
    methods = (ensembles["onnx"].default_cam_method, "gradcam")
    for ensemble in ensembles.values():
        ensemble.warm_up()
        for method in methods:
            ensemble.predict_study(study, explain=True, method=method)  # traced, buffers allocated
    def run(runtime, method, regions=True):
        ensemble = ensembles[runtime]
        return lambda: ensemble.predict_study(study, explain=True, method=method, regions=regions)

    # Each turn: Keras, then ONNX Runtime with Grad-CAM, then the default study on ONNX Runtime with its
    # suspected regions and without them back to back, in alternating order (neither always comes first).
    samples = {key: [] for key in ((r, m) for r in ("keras", "onnx") for m in reversed(methods))}
    bare = []  # the default study on ONNX Runtime without its suspected regions
    for turn in range(repeats):  # the runtimes take turns, so that both see the same load from other processes
        for (runtime, method), found in samples.items():
            if (runtime, method) != ("onnx", methods[0]):
                found.append(timed(run(runtime, method), 1))
                continue
            pair = [(found, run(runtime, method)), (bare, run(runtime, method, regions=False))]
            for kept, call in (pair if turn % 2 == 0 else pair[::-1]):
                kept.append(timed(call, 1))
    times = {key: statistics.median(found) for key, found in samples.items()}
    print(f"{os.cpu_count()} CPUs; installed ensemble {list(ensembles['onnx'].names)}; warm 2-image study, "
          f"median of {repeats}, the runtimes taking turns")
    for method in dict.fromkeys(m for _, m in times):
        onnx, keras_time = times["onnx", method], times["keras", method]
        goal = "  (goal <= 0.5)" if method == ensembles["onnx"].default_cam_method else ""
        print(f"{method:>10}: onnx {onnx:.3f} s/study, keras {keras_time:.3f} s/study, "
              f"onnx / keras = {onnx / keras_time:.2f}{goal}")
    mode = ensembles["onnx"].regions.params.mode
    print(f"{methods[0]} on onnx with suspected regions (mode {mode}) / without = "
          f"{times['onnx', methods[0]] / statistics.median(bare):.2f}  (goal <= 1.1)")
    # the same 14 files predicted on both runtimes (the bundled samples and 6 of the tests' FracAtlas fixture)
    fixture = Path(__file__).resolve().parents[1] / "tests" / "data" / "fracatlas" / "images"
    files = [str(p) for p in sorted((DEFAULT_WEIGHTS / "samples").glob("*.jpg")) + sorted(fixture.iterdir())[:6]]
    tables = {runtime: ensemble.predict_files(files) for runtime, ensemble in ensembles.items()}
    columns = [*ensembles["onnx"].names, "ensemble"]
    gaps = (tables["onnx"][columns] - tables["keras"][columns]).abs().max()
    print(f"predict_files on {len(files)} files, largest |onnx - keras|: "
          + ", ".join(f"{c} {gaps[c]:.1e}" for c in columns) + "  (goal <= 1e-4)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--xla", action="store_true", help="also time the ensemble with jit_compile=True")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--runtimes", action="store_true",
                        help="time the installed ensemble on ONNX Runtime and on Keras instead")
    parser.add_argument("--weights", help="with --runtimes: the ensemble folder (default the installed one)")
    args = parser.parse_args()
    if args.runtimes:
        compare_runtimes(args.weights, args.repeats)
        return
    keras.utils.set_random_seed(0)
    grays = study_images()
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, intra-op threads "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}; study of {len(grays)} images, "
          f"{args.size} px, members {list(MEMBERS.values())}")
    start = time.perf_counter()
    models = {n: create_model(a, input_size=args.size) for n, a in MEMBERS.items()}
    built = time.perf_counter() - start
    ensemble = Ensemble(models, architectures=MEMBERS)
    start = time.perf_counter()
    ensemble.predict_study(grays, explain=True)
    first = time.perf_counter() - start
    ensemble.predict_study(grays, explain=False)
    print(f"build models {built:.1f} s; first study with Grad-CAM (traces the compiled functions) {first:.1f} s")

    plain = timed(lambda: ensemble.predict_study(grays, explain=False), args.repeats)
    explain = timed(lambda: ensemble.predict_study(grays, explain=True), args.repeats)
    gflops = sum(get_spec(a).gflops_320 for a in MEMBERS.values()) * (args.size / 320) ** 2 * len(grays)
    print(f"explain=False  {plain:7.2f} s/study  ({len(grays) * len(MEMBERS) / plain:5.1f} member-images/s, "
          f"{gflops / plain:6.1f} GFLOP/s)")
    print(f"explain=True   {explain:7.2f} s/study")
    print(f"ratio explain=True / explain=False = {explain / plain:.2f}  (goal <= 1.3)")
    bare = timed(lambda: ensemble.predict_study(grays, explain=True, regions=False), args.repeats)
    print(f"explain=True without regions {bare:7.2f} s/study")
    print(f"ratio with regions / without = {explain / bare:.2f}  (goal <= 1.1)")
    if args.xla:
        xla = Ensemble(models, architectures=MEMBERS, jit_compile=True)
        xla.predict_study(grays, explain=True)
        xla.predict_study(grays, explain=False)
        xplain = timed(lambda: xla.predict_study(grays, explain=False), args.repeats)
        xexplain = timed(lambda: xla.predict_study(grays, explain=True), args.repeats)
        print(f"XLA explain=False {xplain:6.2f} s/study ({plain / xplain:.2f}x), "
              f"explain=True {xexplain:6.2f} s/study ({explain / xexplain:.2f}x)")
    if not args.skip_naive:
        naive = timed(lambda: naive_study(models, grays), max(1, args.repeats - 1))
        print(f"naive          {naive:7.2f} s/study  (predict + fresh Gradcam(clone=True) per member and image)")
        print(f"ratio naive / explain=True = {naive / explain:.2f}  (goal >= 3)")


if __name__ == "__main__":
    main()
