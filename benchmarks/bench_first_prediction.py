"""The dashboard's first prediction after start: load + warm-up, then the first study a user sends.

    python benchmarks/bench_first_prediction.py [--weights FOLDER]

Runs in fresh processes: (a) as the dashboard does, load the ensemble and warm it up (traces the
compiled functions), then time the first study; (b) without warm-up, time the first study.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(weights: str | None, warm: bool) -> dict:
    sys.path.insert(0, str(ROOT))
    start = time.perf_counter()
    from mura_core.ensemble import load_ensemble
    from mura_core.installed import DEFAULT_WEIGHTS

    ensemble = load_ensemble(weights)
    loaded = time.perf_counter() - start
    if warm:
        ensemble.warm_up()
    ready = time.perf_counter() - start
    study = sorted((DEFAULT_WEIGHTS / "samples").glob("*.jpg"))[:2]  # the bundled sample radiographs
    first = time.perf_counter()
    ensemble.predict_study(study, explain=True)
    first = time.perf_counter() - first
    second = time.perf_counter()
    ensemble.predict_study(study[::-1], explain=True)
    return {"load": loaded, "ready": ready, "first": first, "second": time.perf_counter() - second}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights")
    parser.add_argument("--child", choices=["warm", "cold"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.weights, args.child == "warm")))
        return
    results = {}
    for mode in ("warm", "cold"):
        command = [sys.executable, __file__, "--child", mode] + (["--weights", args.weights] if args.weights else [])
        out = subprocess.run(command, capture_output=True, text=True, check=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    warm, cold = results["warm"], results["cold"]
    print(f"with warm-up at load (the dashboard): load {warm['load']:.1f} s, ready {warm['ready']:.1f} s; "
          f"first 2-image study with Grad-CAM {warm['first']:.2f} s, next {warm['second']:.2f} s")
    print(f"without warm-up: load {cold['load']:.1f} s; first study {cold['first']:.2f} s, next {cold['second']:.2f} s")
    print(f"first study, warm-up vs none: {cold['first'] / warm['first']:.1f}x faster")


if __name__ == "__main__":
    main()
