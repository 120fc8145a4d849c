"""Two installed ensembles side by side: seconds per study with their default heatmaps, and without.

    python benchmarks/bench_heatmaps.py --old OLD_WEIGHTS_DIR [--new weights] [--repeats 5] [--runtimes]

Both ensembles are loaded in one process and timed on the same study (3 radiographs of the committed
FracAtlas fixture, `tests/data/fracatlas`), alternating old and new on each repeat so that a change in
the machine's load touches both alike. `predict_study(explain=True)` computes each ensemble's default
heatmap (`Ensemble.default_cam_method`: the lesion map when every member has one). Prints the medians and
the ratios measured in this run:
- new with heatmaps / old with heatmaps (issue 18's goal: <= 2),
- new with heatmaps / new without (goal: <= 1.3).

With `--runtimes` each ensemble is loaded twice, on Keras and on ONNX Runtime (`load_ensemble(runtime=...)`;
an ensemble without ONNX graphs runs on Keras both times), all four timed alternately in this one run, and
it prints the pretrained-backbone issue's goals: new / old with heatmaps on the same runtime (<= 3 on each),
and the new ensemble on ONNX against the old one on Keras (<= 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mura_core.ensemble import load_ensemble  # noqa: E402
from mura_core.imaging import load_image  # noqa: E402

STUDY = sorted((ROOT / "tests" / "data" / "fracatlas" / "images").rglob("*.jpg"))[:3]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def describe(name: str, ensemble) -> str:
    members = ", ".join(f"{m} {ensemble.input_size(m)} px (map stride {ensemble.heatmap_layers[m]['map_stride']})"
                        for m in ensemble.names)
    return f"{name}: default heatmap {ensemble.default_cam_method}; {members}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, type=Path, help="the ensemble folder to compare against")
    parser.add_argument("--new", type=Path, default=ROOT / "weights", help="the ensemble folder measured")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runtimes", action="store_true", help="time both ensembles on Keras and on ONNX Runtime")
    args = parser.parse_args(argv)
    images = [load_image(f) for f in STUDY]
    if args.runtimes:
        return compare_runtimes(args.old, args.new, images, args.repeats)
    old, new = load_ensemble(args.old), load_ensemble(args.new)
    print(f"{os.cpu_count()} CPUs; study of {len(images)} images {[im.shape for im in images]}")
    print(describe("old", old))
    print(describe("new", new))
    for ensemble in (old, new):  # traces and warms every compiled function once
        ensemble.predict_study(images, explain=True)
        ensemble.predict_study(images, explain=False)
    times: dict[str, list[float]] = {"old explain": [], "new explain": [], "new plain": []}
    for _ in range(args.repeats):
        times["old explain"].append(timed(lambda: old.predict_study(images, explain=True)))
        times["new explain"].append(timed(lambda: new.predict_study(images, explain=True)))
        times["new plain"].append(timed(lambda: new.predict_study(images, explain=False)))
    median = {k: statistics.median(v) for k, v in times.items()}
    for key, value in median.items():
        print(f"{key:12s} {value:6.3f} s/study (median of {args.repeats})")
    print(f"ratio new / old, default heatmaps = {median['new explain'] / median['old explain']:.2f}  (goal <= 2)")
    print(f"ratio new explain / new plain = {median['new explain'] / median['new plain']:.2f}  (goal <= 1.3)")
    return 0


def compare_runtimes(old_folder: Path, new_folder: Path, images, repeats: int) -> int:
    """Old and new ensembles, each on Keras and on ONNX Runtime, a study with default heatmaps each."""
    ensembles = {f"{name} {runtime}": load_ensemble(folder, runtime=runtime)
                 for name, folder in (("old", old_folder), ("new", new_folder)) for runtime in ("keras", "onnx")}
    print(f"{os.cpu_count()} CPUs; study of {len(images)} images {[im.shape for im in images]}")
    for key, ensemble in ensembles.items():
        print(describe(key, ensemble))
        ensemble.predict_study(images, explain=True)  # warm-up: traces, sessions, first allocations
    times: dict[str, list[float]] = {key: [] for key in ensembles}
    for _ in range(repeats):
        for key, ensemble in ensembles.items():
            times[key].append(timed(lambda e=ensemble: e.predict_study(images, explain=True)))
    median = {k: statistics.median(v) for k, v in times.items()}
    for key, value in median.items():
        print(f"{key:10s} {value:6.3f} s/study with default heatmaps (median of {repeats})")
    for runtime in ("keras", "onnx"):
        ratio = median[f"new {runtime}"] / median[f"old {runtime}"]
        print(f"ratio new / old on {runtime} = {ratio:.2f}  (goal <= 3)")
    print(f"ratio new on onnx / old on keras = {median['new onnx'] / median['old keras']:.2f}  (goal <= 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
