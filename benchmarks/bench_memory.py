"""Memory over many predictions in one process: resident set size after each block of studies.

    python benchmarks/bench_memory.py [--weights FOLDER] [--studies 200]

Runs `--studies` predictions with Grad-CAM (a 2-image study of real radiographs, changing every time)
through one loaded ensemble, as a dashboard process does, and prints the RSS after warm-up and after
every 50 studies, with the growth from the first block to the last.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mura_core.ensemble import load_ensemble  # noqa: E402

FRACATLAS = Path(__file__).resolve().parents[2] / "shared" / "data" / "fracatlas" / "images"


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="ensemble folder (default: the installed weights/)")
    parser.add_argument("--studies", type=int, default=200)
    args = parser.parse_args()
    ensemble = load_ensemble(args.weights)
    files = sorted(FRACATLAS.glob("*.jpg"))[:100]
    ensemble.warm_up()
    print(f"members {ensemble.names}; after load and warm-up: {rss_mib():.0f} MiB")
    marks = []
    for i in range(args.studies):
        study = [files[(2 * i) % len(files)], files[(2 * i + 1) % len(files)]]
        result = ensemble.predict_study(study, explain=True, method="gradcam")
        assert result.probability is not None
        del result
        if (i + 1) % 50 == 0:
            gc.collect()
            marks.append(rss_mib())
            print(f"after {i + 1:4d} studies: {marks[-1]:.0f} MiB")
    print(f"growth from study 50 to study {args.studies}: {marks[-1] - marks[0]:+.1f} MiB "
          f"({(marks[-1] - marks[0]) / marks[0] * 100:+.1f}%)")


if __name__ == "__main__":
    main()
