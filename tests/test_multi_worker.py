"""Two local CPU workers train one tiny model under MultiWorkerMirroredStrategy (TF_CONFIG on loopback)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.mura_tree import make_mura_tree

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240

pytestmark = pytest.mark.slow


def free_loopback_ports(n: int) -> list[int]:
    """n distinct ports free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_two_workers_end_with_the_same_weights_and_only_the_chief_writes(tmp_path):
    data = tmp_path / "data"
    make_mura_tree(data, {"train": 8, "valid": 2}, images_per_study=1)
    out = tmp_path / "runs"
    overrides = ["name=mw", "model=mobilenetv2", "weights=", "input_size=32", f"data={data}", "dense_units=8",
                 "batch_size=2", "epochs=2", "steps_per_epoch=1", "validation_steps=1", "val_fraction=0.25",
                 "augmentation=null", f"out_dir={out}"]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_loopback_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "CUDA_VISIBLE_DEVICES": "-1",
               "TF_CPP_MIN_LOG_LEVEL": "2", "TMPDIR": str(tmp_path / f"tmp{index}")}
        (tmp_path / f"tmp{index}").mkdir()
        log = open(tmp_path / f"worker{index}.log", "w")
        workers.append((subprocess.Popen(
            [sys.executable, "-m", "tests.multi_worker_task", str(tmp_path / f"weights{index}.npz"), *overrides],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        codes = [proc.wait(timeout=TIMEOUT_S) for proc, _ in workers]
    finally:
        for proc, log in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)

    results = [json.loads(log.split("RESULT ", 1)[1].splitlines()[0]) for log in logs]
    assert "image_level" in results[0] and results[1] == {"chief": False, "epochs_run": 2}

    chief, other = (np.load(tmp_path / f"weights{i}.npz") for i in range(2))
    assert chief["multi_worker"] and other["multi_worker"]  # MultiWorkerMirroredStrategy, two replicas in sync
    assert int(chief["replicas"]) == int(other["replicas"]) == 2
    finals = sorted(k for k in chief.files if k.startswith("final_"))
    assert len(finals) > 100 and sorted(k for k in other.files if k.startswith("final_")) == finals
    for key in finals:
        np.testing.assert_array_equal(chief[key], other[key], err_msg=key)
    changed = [k for k in finals if not np.array_equal(chief[k], chief[k.replace("final_", "initial_")])]
    assert len(changed) > len(finals) // 2  # it trained: most weights moved from their initial values

    # Only the chief (worker 0) wrote the run folder; worker 1's scratch folder is gone.
    assert sorted(p.name for p in out.iterdir()) == ["mw"]
    written = {p.name for p in (out / "mw").iterdir()}
    assert {"config.yaml", "best.keras", "history.csv", "history.html", "val_metrics.json"} <= written
    assert "backup" not in written
    assert not any((tmp_path / "tmp1").rglob("*.keras"))
    assert not any((tmp_path / "tmp1" / "mura_train_workers").iterdir())
