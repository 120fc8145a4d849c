"""train/configs/ holds what a user runs; the demo's historical stages live in train/configs/history/ and the
script that trained the from-scratch demo ensemble from them still names configs that exist and load."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "train" / "configs"
HISTORY = CONFIGS / "history"
SCRATCH = HISTORY / "train_demo_scratch.sh"


def test_stage_configs_live_in_history():
    assert not list(CONFIGS.glob("*_stage*.yaml")), "historical demo stages belong in train/configs/history/"
    stages = sorted(p.name for p in HISTORY.glob("demo_fracatlas_mobilenetv2_stage*.yaml"))
    assert len(stages) == 14  # stages 2 to 15


def test_every_config_loads():
    for path in sorted(CONFIGS.rglob("*.yaml")):
        if not path.name.endswith("_model_info.yaml"):
            assert load_config(path).name, path


def _dry_run(tmp_path: Path) -> list[list[str]]:
    """Run the scratch script from the repository root with a `python` that only records its arguments."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(calls))}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(SCRATCH.relative_to(ROOT))], cwd=ROOT, env=env, check=True,
                   capture_output=True, text=True, timeout=60)
    return [line.split() for line in calls.read_text().splitlines()]


def test_scratch_script_names_existing_configs_in_order(tmp_path):
    calls = _dry_run(tmp_path)
    configs = [call[call.index("--config") + 1] for call in calls if call[:2] == ["-m", "train.train"]]
    assert all((ROOT / config).is_file() for config in configs), configs
    assert configs[0] == "train/configs/demo_fracatlas_mobilenetv2.yaml"  # stage 1, shared with section 5.2
    assert configs[-1] == "train/configs/history/demo_fracatlas_mobilenetv2_stage12.yaml"
    assert len(configs) == 6 + 9  # stages 1-3 of both members, stages 4-12 of MobileNetV2
    build = next(call for call in calls if call[:2] == ["-m", "train.build_ensemble"])
    info = build[build.index("--info") + 1]
    assert (ROOT / info).is_file() and info.startswith("train/configs/history/")
    assert "train/configs/history/train_demo_scratch.sh" in (ROOT / info).read_text()  # the card names it


def test_the_demo_script_starts_stage_two_from_stage_one():
    """train/train_demo.sh copies stage 1's chosen epoch where stage 2's config starts from, then trains it."""
    script = (ROOT / "train" / "train_demo.sh").read_text()
    first = load_config(CONFIGS / "demo_fracatlas_lite0.yaml")
    second = load_config(CONFIGS / "demo_fracatlas_lite0_boxes.yaml")
    assert second.map_boxes and second.lesion_map and not first.map_boxes
    assert (second.model, second.input_size, second.map_stride) == (first.model, first.input_size, first.map_stride)
    assert f'cp "$RUN/best.keras" {second.weights}' in script
    steps = ["--config train/configs/demo_fracatlas_lite0.yaml", f'cp "$RUN/best.keras" {second.weights}',
             "--config train/configs/demo_fracatlas_lite0_boxes.yaml"]
    assert [script.index(step) for step in steps] == sorted(script.index(step) for step in steps)
