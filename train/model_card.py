"""Write the model card of an installed ensemble from its manifest and its evaluation report.

    python -m train.model_card [--weights FOLDER] [--report REPORT.json] [--out MODEL_CARD.md]

Every number in the card is read from `report.json` (written by `train.evaluate`) or the manifest:
nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mura_core.coverage import Coverage, coverage_text
from mura_core.heatmaps import PEAK_SMOOTHING
from mura_core.installed import MODEL_CARD_FILE, read_manifest, report_path, weights_folder
from mura_core.notices import DISCLAIMER, INTENDED_USE, LIMITATIONS, PRIVACY
from mura_core.reports import member_reading
from mura_core.vocabulary import CAM_METHODS, level_key


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _metric_rows(level: dict) -> list[str]:
    rows = ["| model | AUC (95% CI) | sensitivity (95% CI) | specificity (95% CI) | accuracy | F1 | kappa |",
            "|---|---|---|---|---|---|---|"]
    for model, m in level.items():

        def with_ci(name, m=m):
            low, high = m.get("ci", {}).get(name, (None, None))
            return f"{_fmt(m.get(name))} ({_fmt(low)}–{_fmt(high)})"

        rows.append(f"| {model} | {with_ci('auc')} | {with_ci('recall')} | {with_ci('specificity')} | "
                    f"{_fmt(m.get('accuracy'))} | {_fmt(m.get('f1'))} | {_fmt(m.get('kappa'))} |")
    return rows


def model_card(manifest: dict, report: dict) -> str:
    """The card as Markdown."""
    info = manifest.get("info", {})
    members = ", ".join(f"`{m['name']}` ({m['architecture']}, {m['input_size']} px)" for m in manifest["members"])
    data = report["data"]
    lines = [
        f"# Model card: {info.get('title', 'ensemble')}",
        "",
        f"> {DISCLAIMER}",
        "",
        "## Intended use",
        info.get("intended_use") or INTENDED_USE,
        "",
        "## Model",
        f"Ensemble (mean of probabilities) of {members}. Decision threshold {manifest['threshold']:.4f} "
        f"({info.get('threshold_rule', '')}, chosen on the validation split, never on test).",
        "",
        *([reading, ""] if (reading := member_reading(manifest)) else []),
        *([f"Initial weights: {info['pretrained']}", ""] if info.get("pretrained") else []),
        "## Training data",
        info.get("trained_on", ""),
        "",
        f"Attribution: {info.get('attribution', '')}",
        "",
        f"License: {info.get('license', '')}",
        "",
        "## Coverage",
        coverage_text(Coverage.from_info(info)),
        "",
        "## Evaluation",
        f"Test split of {data.get('root')} ({data.get('split')}): {data['n_images']} images, evaluated once "
        f"with `train.evaluate` on {report['created']}. Image level, threshold {report['threshold']:.4f}, "
        "95% bootstrap confidence intervals:",
        "",
        *_metric_rows(report[level_key("image")]),
    ]
    by_method = report.get("localization_by_method") or (
        {"gradcam": report["localization"]} if report.get("localization") else {})
    for method, localization in by_method.items():
        lines += ["", f"{CAM_METHODS.get(method, method)} localization on fractured test images with boxes, "
                  "scored at each image's native resolution (pointing game: the heatmap's peak, its maximum "
                  f"after a blur of {PEAK_SMOOTHING:.0%} of the image's longer side, inside a fracture box; "
                  "mass: share of the heatmap inside boxes; IoU: the map above half its peak against the boxes; "
                  "chance: the boxes' share of the image)"
                  + (" - the heatmap the dashboard shows by default:" if method == report.get("localization_method")
                     else ":"), "",
                  "| heatmap | n | pointing game (95% CI) | mass in boxes | IoU | chance (box area) |",
                  "|---|---|---|---|---|---|"]
        for model, loc in localization.items():
            low, high = loc.get("pointing_game_ci") or (None, None)
            lines.append(f"| {model} | {loc['n']} | {_fmt(loc['pointing_game'])} ({_fmt(low)}–{_fmt(high)}) | "
                         f"{_fmt(loc['mass_in_boxes'])} | {_fmt(loc.get('iou'))} | {_fmt(loc['box_area_fraction'])} |")
    sanity = report.get("sanity")
    if sanity:
        lines += ["", f"Sanity check of the {CAM_METHODS.get(sanity['method'], sanity['method'])} heatmaps (model "
                  "randomization, Adebayo et al. 2018): mean Spearman rank correlation with the trained model's "
                  f"maps on {sanity['images']} test images as the weights are re-initialised from the top:", "",
                  "| member | re-initialised | rank correlation |", "|---|---|---|"]
        for member, stages in sanity["members"].items():
            lines += [f"| {member} | {row['stage']} | {_fmt(row['spearman'])} |" for row in stages]
    val = info.get("validation")
    if val:
        lines += ["", f"Validation (used for the threshold): sensitivity {_fmt(val['recall'])}, "
                  f"specificity {_fmt(val['specificity'])}, AUC {_fmt(val['auc'])}."]
    lines += [
        "",
        "## Limitations",
        *([info["limitations"], ""] if info.get("limitations") else []),
        LIMITATIONS,
        "## Privacy",
        PRIVACY,
    ]
    return "\n".join(lines)


def write_model_card(weights: str | Path | None = None, report: str | Path | None = None,
                     out: str | Path | None = None) -> str:
    """Write the card of the ensemble in `weights`, evaluated in `report` (report.json), to `out`.

    Args:
        weights: the ensemble folder (its manifest is read); default `installed.weights_folder()`.
        report: `report.json` written by `train.evaluate`; default the one installed with the ensemble.
        out: the Markdown file to write; default `MODEL_CARD.md` in the ensemble folder.

    Returns:
        The card's text.
    """
    folder = weights_folder(weights)
    report = Path(report) if report else report_path(folder)
    card = model_card(read_manifest(folder), json.loads(report.read_text()))
    Path(out or folder / MODEL_CARD_FILE).write_text(card)
    return card


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="ensemble folder (default: $MURA_WEIGHTS or the repository's weights/)")
    parser.add_argument("--report", help="report.json (default: the one installed with the ensemble)")
    parser.add_argument("--out", help="Markdown file to write (default: MODEL_CARD.md in the ensemble folder)")
    args = parser.parse_args(argv)
    print(write_model_card(args.weights, args.report, args.out))


if __name__ == "__main__":
    main()
