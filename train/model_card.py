"""Write the model card of an installed ensemble from its manifest and its evaluation report.

    python -m train.model_card --weights weights --report weights/report/report.json --out weights/MODEL_CARD.md

Every number in the card is read from `report.json` (written by `train.evaluate`) or the manifest:
nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mura_core.ensemble import DISCLAIMER, read_manifest


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
        info.get("intended_use", ""),
        "",
        "## Model",
        f"Ensemble (mean of probabilities) of {members}. Decision threshold {manifest['threshold']:.4f} "
        f"({info.get('threshold_rule', '')}, chosen on the validation split, never on test).",
        "",
        "## Training data",
        info.get("trained_on", ""),
        "",
        f"Attribution: {info.get('attribution', '')}",
        "",
        f"License: {info.get('license', '')}",
        "",
        "## Evaluation",
        f"Test split of {data.get('root')} ({data.get('split')}): {data['n_images']} images, evaluated once "
        f"with `train.evaluate` on {report['created']}. Image level, threshold {report['threshold']:.4f}, "
        "95% bootstrap confidence intervals:",
        "",
        *_metric_rows(report["image_level"]),
    ]
    if report.get("localization"):
        lines += ["", "Grad-CAM localization on fractured test images with boxes (pointing game: the heatmap's "
                  "maximum inside a fracture box; mass: share of the heatmap inside boxes; chance: the boxes' "
                  "share of the image):", "",
                  "| heatmap | n | pointing game (95% CI) | mass in boxes | chance (box area) |",
                  "|---|---|---|---|---|"]
        for model, loc in report["localization"].items():
            low, high = loc.get("pointing_game_ci") or (None, None)
            lines.append(f"| {model} | {loc['n']} | {_fmt(loc['pointing_game'])} ({_fmt(low)}–{_fmt(high)}) | "
                         f"{_fmt(loc['mass_in_boxes'])} | {_fmt(loc['box_area_fraction'])} |")
    val = info.get("validation")
    if val:
        lines += ["", f"Validation (used for the threshold): sensitivity {_fmt(val['recall'])}, "
                  f"specificity {_fmt(val['specificity'])}, AUC {_fmt(val['auc'])}."]
    lines += [
        "",
        "## Limitations",
        info.get("limitations", ""),
        "",
        "## Privacy",
        "Uploads to the dashboard are processed in memory and never written to disk. DICOM patient "
        "identifiers (name, ID, birth date, accession number, ...) are never read into results, reports, "
        "logs or downloads: only the pixels and BodyPartExamined are kept.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(weights: str | Path, report: str | Path, out: str | Path) -> str:
    """Write the card of the ensemble in `weights`, evaluated in `report` (report.json), to `out`.

    Args:
        weights: the ensemble folder (its manifest is read).
        report: `report.json` written by `train.evaluate`.
        out: the Markdown file to write.

    Returns:
        The card's text.
    """
    card = model_card(read_manifest(weights), json.loads(Path(report).read_text()))
    Path(out).write_text(card)
    return card


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="weights")
    parser.add_argument("--report", default="weights/report/report.json")
    parser.add_argument("--out", default="weights/MODEL_CARD.md")
    args = parser.parse_args(argv)
    print(write_model_card(args.weights, args.report, args.out))


if __name__ == "__main__":
    main()
