"""Prediction throughput of one member against its compute, across batch sizes and CPU settings.

    python benchmarks/bench_throughput.py [--model densenet169] [--size 320]

Each setting runs in a fresh process (thread counts and oneDNN are fixed when TensorFlow starts):
default; TF_NUM_INTRAOP_THREADS=2 with TF_NUM_INTEROP_THREADS=1; oneDNN off (TF_ENABLE_ONEDNN_OPTS=0);
XLA (jit_compile). Prints images/s and GFLOP/s per batch size, relative to the default setting.
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
SETTINGS = {
    "default": {},
    "intra=2,inter=1": {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"},
    "oneDNN off": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "XLA": {"BENCH_XLA": "1"},
}


def measure(model_name: str, size: int, batches: list[int]) -> dict[int, float]:
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import tensorflow as tf

    from mura_core.registry import create_model

    model = create_model(model_name, input_size=size)
    fn = tf.function(lambda x: model(x, training=False), jit_compile=os.environ.get("BENCH_XLA") == "1",
                     input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    out = {}
    for batch in batches:
        x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32))
        fn(x)
        n, start = 0, time.perf_counter()
        while n < 12 or time.perf_counter() - start < 4:
            fn(x).numpy()
            n += batch
        out[batch] = n / (time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="densenet169")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batches", default="1,4,12")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.child:
        print(json.dumps(measure(args.model, args.size, batches)))
        return
    sys.path.insert(0, str(ROOT))
    from mura_core.registry import get_spec

    gflops = get_spec(args.model).gflops_320 * (args.size / 320) ** 2
    print(f"{args.model} at {args.size} px ({gflops:.1f} GFLOPs/image), {os.cpu_count()} CPUs")
    results = {}
    for name, env in SETTINGS.items():
        child = subprocess.run([sys.executable, __file__, "--child", "--model", args.model, "--size",
                                str(args.size), "--batches", args.batches],
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
                               capture_output=True, text=True, check=True)
        results[name] = {int(k): v for k, v in json.loads(child.stdout.strip().splitlines()[-1]).items()}
    base = results["default"]
    for name, per_batch in results.items():
        cells = ", ".join(f"batch {b}: {ips:5.2f} img/s = {ips * gflops:5.1f} GFLOP/s ({ips / base[b]:.2f}x)"
                          for b, ips in per_batch.items())
        print(f"{name:16s} {cells}")


if __name__ == "__main__":
    main()
