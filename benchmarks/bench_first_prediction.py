"""Process start to the first verdict, on ONNX Runtime and on Keras, in one run.

    python benchmarks/bench_first_prediction.py [--weights FOLDER] [--runtimes onnx,keras]

Each measurement runs in a fresh Python process started by this script, with `MURA_RUNTIME` set. The time
runs from just before the process is started (so the interpreter's start and every import count) to the
moment the first 2-image study of the bundled sample radiographs, with the default heatmaps (the lesion
maps, fused), has its verdict:

- first verdict: load the ensemble, predict the study (the CLI, a script, a cold server's first visit);
- dashboard: load, warm up as the dashboard does (a 1- and a 2-image study), then the study.

Prints the seconds per runtime and flow, the ONNX / Keras ratios, and the next (warm) study's time.
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
    """In the measured process: load, (warm up,) predict the study; wall-clock times (time.time())."""
    sys.path.insert(0, str(ROOT))
    from mura_core.ensemble import load_ensemble
    from mura_core.installed import DEFAULT_WEIGHTS

    ensemble = load_ensemble(weights)
    loaded = time.time()
    if warm:
        ensemble.warm_up()
    study = sorted((DEFAULT_WEIGHTS / "samples").glob("*.jpg"))[:2]  # the bundled sample radiographs
    result = ensemble.predict_study(study, explain=True)
    verdict = time.time()
    second = time.perf_counter()
    ensemble.predict_study(study[::-1], explain=True)
    return {"loaded": loaded, "verdict": verdict, "next": time.perf_counter() - second,
            "runtimes": sorted(set(ensemble.runtimes.values())), "method": result.cam_method,
            "tensorflow": "tensorflow" in sys.modules}


def measure(weights: str | None, runtime: str, warm: bool) -> dict:
    """Start a process on `runtime` and time it from its start to its first verdict."""
    command = [sys.executable, __file__, "--child", "warm" if warm else "cold"]
    command += ["--weights", weights] if weights else []
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MURA_RUNTIME": runtime}
    start = time.time()
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return {**got, "load": got["loaded"] - start, "first": got["verdict"] - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights")
    parser.add_argument("--runtimes", default="onnx,keras", help="comma-separated (default onnx,keras)")
    parser.add_argument("--child", choices=["warm", "cold"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.weights, args.child == "warm")))
        return
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    results = {(r, warm): measure(args.weights, r, warm) for r in runtimes for warm in (False, True)}
    print(f"{os.cpu_count()} CPUs; 2-image study of the bundled samples with the default heatmaps")
    for (runtime, warm), got in results.items():
        flow = "dashboard (load + warm-up + study)" if warm else "first verdict (load + study)    "
        print(f"{runtime:>5} {flow}: loaded at {got['load']:.2f} s, verdict at {got['first']:.2f} s "
              f"({got['method']}; TensorFlow imported: {got['tensorflow']}); next study {got['next']:.2f} s")
    if "onnx" in runtimes and "keras" in runtimes:
        for warm in (False, True):
            onnx, keras = results[("onnx", warm)], results[("keras", warm)]
            flow = "dashboard" if warm else "first verdict"
            print(f"{flow}: onnx {onnx['first']:.2f} s vs keras {keras['first']:.2f} s = "
                  f"{onnx['first'] / keras['first']:.2f}x" + ("" if warm else "  (goal: onnx <= 1.5 s)"))


if __name__ == "__main__":
    main()
