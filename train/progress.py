"""Progress of a multi-member run: epoch times kept in a small JSON state file, and the time left.

The estimate uses measured epoch times only: a member's own mean epoch time, else the mean of a
member of the same architecture, else a measured member's time scaled by the two architectures'
compute per image (`ModelSpec.gflops_320`). It assumes every member runs all its epochs, so it is an
upper bound when early stopping ends a member sooner.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import keras

from mura_core.registry import get_spec


@dataclass(frozen=True)
class PlannedMember:
    """One member of the plan: its name, registry architecture and maximum number of epochs."""

    name: str
    architecture: str
    epochs: int


class RunState:
    """A JSON file (`state.json`) holding each member's status and epoch times, and each step's status.

    Args:
        path: the file; read if it exists, written after every change (atomically).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.data: dict = {"members": {}, "steps": {}}
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{self.path}: unreadable run state ({exc}); delete it to start over") from None

    def member(self, name: str) -> dict:
        return self.data["members"].setdefault(name, {"status": "pending", "epoch_seconds": []})

    def step_done(self, step: str) -> bool:
        return self.data["steps"].get(step, {}).get("status") == "done"

    def set_step(self, step: str, status: str, seconds: float | None = None) -> None:
        self.data["steps"][step] = {"status": status, "seconds": None if seconds is None else round(seconds, 1)}
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".json.partial")
        tmp.write_text(json.dumps(self.data, indent=2))
        os.replace(tmp, self.path)


def seconds_left(plan: list[PlannedMember], state: RunState) -> float | None:
    """Estimated training seconds left for the members not finished, or None before any epoch is timed."""
    measured = {m.name: state.member(m.name)["epoch_seconds"] for m in plan if state.member(m.name)["epoch_seconds"]}
    if not measured:
        return None
    by_name = {m.name: m for m in plan}

    def epoch_time(member: PlannedMember) -> float:
        if member.name in measured:
            return sum(measured[member.name]) / len(measured[member.name])
        same = [n for n in measured if by_name[n].architecture == member.architecture]
        reference = same[0] if same else next(iter(measured))
        mean = sum(measured[reference]) / len(measured[reference])
        if same:
            return mean
        ours = get_spec(member.architecture).gflops_320 or 1.0
        theirs = get_spec(by_name[reference].architecture).gflops_320 or 1.0
        return mean * ours / theirs

    left = 0.0
    for member in plan:
        record = state.member(member.name)
        if record["status"] == "done":
            continue
        left += max(member.epochs - len(record["epoch_seconds"]), 0) * epoch_time(member)
    return left


def format_seconds(seconds: float | None) -> str:
    """'1 h 05 min', '7 min 12 s', '42 s' or 'unknown'."""
    if seconds is None:
        return "unknown"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


class EpochProgress(keras.callbacks.Callback):
    """Records each epoch's time in the state and prints progress with the time left.

    Args:
        member: the member being trained.
        plan: every member of the run, in order.
        state: the run state (saved after each epoch).
        out: print function.
    """

    def __init__(self, member: PlannedMember, plan: list[PlannedMember], state: RunState, out=print):
        super().__init__()
        self.member, self.plan, self.state, self.out = member, plan, state, out
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        record = self.state.member(self.member.name)
        record["epoch_seconds"].append(round(time.perf_counter() - self._started, 2))
        self.state.save()
        position = [m.name for m in self.plan].index(self.member.name) + 1
        monitor = ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items() if k in ("loss", "val_auc"))
        self.out(f"[{position}/{len(self.plan)} {self.member.name}] epoch {epoch + 1}/{self.member.epochs} "
                 f"in {format_seconds(record['epoch_seconds'][-1])} ({monitor}); training time left at most "
                 f"{format_seconds(seconds_left(self.plan, self.state))}", flush=True)
