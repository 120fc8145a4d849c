"""The device check's smoke mode: every check of `benchmarks/gpu_check.py` runs on CPU and writes its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data import FRACATLAS

ROOT = Path(__file__).resolve().parents[1]
CORRECTNESS = ("loss_falls_and_checkpoint", "backup_and_restore", "gradcam_device_vs_cpu", "predict_study_explain")


@pytest.mark.slow
def test_smoke_runs_every_check_and_writes_json_and_summary(tmp_path):
    out = tmp_path / "check"
    # A generous budget: on a loaded CI machine no check may be skipped for time.
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", str(out), "--smoke", "--budget-s", "600",
                           "--data", str(FRACATLAS)],
                          cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    checks = report["checks"]
    assert report["smoke"] and report["device"]["gpus"] == []
    for name in CORRECTNESS:
        assert checks[name]["ok"] is True, (name, checks[name])
    assert checks["loss_falls_and_checkpoint"]["epoch_losses"][-1] < checks["loss_falls_and_checkpoint"][
        "epoch_losses"][0]
    assert checks["loss_falls_and_checkpoint"]["reload_max_abs_diff"] <= 1e-3
    assert checks["backup_and_restore"]["history_epochs"] == [0, 1]
    assert checks["gradcam_device_vs_cpu"]["compared"] == "CPU vs CPU"
    speed = checks["train_mobilenetv2_batch4"]
    assert speed["ok"] and speed["images_per_s"] > 0 and speed["mura_epoch_s"] > 0
    assert checks["inference_mobilenetv2"]["images_per_s_float32"] > 0
    assert checks["train_mobilenetv2_batch4_xla"] == {"ok": None, "skipped": "smoke mode trains eagerly"}
    assert not [n for n, c in checks.items() if c.get("ok") is False]
    summary = (out / "gpu_check.txt").read_text()
    assert "no check failed" in summary and "backup_and_restore: ok" in summary


def test_a_failing_check_is_recorded_and_the_rest_still_run(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    settings = gpu_check.Settings.smoke_settings(tmp_path, FRACATLAS)
    check = gpu_check.Check(settings)

    def broken():
        raise RuntimeError("CUDA_ERROR_OUT_OF_MEMORY")

    check.run("broken", broken)
    check.run("fine", lambda: {"ok": True, "images_per_s": 12.5})
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["checks"]["broken"]["ok"] is False
    assert report["checks"]["broken"]["error"] == "RuntimeError: CUDA_ERROR_OUT_OF_MEMORY"
    assert report["checks"]["fine"]["images_per_s"] == 12.5
    assert "failed: broken" in (tmp_path / "gpu_check.txt").read_text()
