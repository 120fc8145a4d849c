"""Command line: `python -m mura_core {index,predict,models}`.

    python -m mura_core index ROOT [--format auto|mura|fracatlas|folders] --out index.csv [--duplicates pairs.csv]
    python -m mura_core predict [--weights FOLDER] [--out FILE.csv] [--explain-dir DIR [--cam-method M]]
        [--regions FILE.csv] PATH...
    python -m mura_core predict --pacs URL (--study UID ... | --since YYYYMMDD) [--store-results] [--out FILE.csv]
    python -m mura_core models

`predict` exits 0 when every input was read, 1 when some could not be (their rows carry the
reason in the `error` column), 2 when nothing could run (no weights, bad arguments). The `warning`
column says when a row's verdict is not meaningful: its body part is outside what the ensemble was
trained on (or unknown), or the image is in strong colour. With `--explain-dir`, each readable image's
fused heatmap (the ensemble's default method: its lesion map when every member has one, else
Grad-CAM; `--cam-method` picks another) is drawn over it into DIR, and the CSV's `heatmap` column
names that file. With `--regions FILE`, each suspected region read off that default map is one row of
FILE (`path, x0, y0, x1, y1, score, finding`: box corners in the image's pixels, x1 and y1 exclusive;
`finding` as the Diagnose page shows it, never where the verdict is withheld), formula-safe like every CSV.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    from .datasets import layout_names
    from .vocabulary import CAM_METHODS

    parser = argparse.ArgumentParser(prog="python -m mura_core", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    index = sub.add_parser("index", help="index a dataset folder into one CSV table")
    index.add_argument("root")
    index.add_argument("--format", default="auto", choices=["auto", *layout_names()])
    index.add_argument("--split-file", help="CSV path_key,split assigning splits (e.g. train/configs' split)")
    index.add_argument("--out", required=True, help="CSV file to write")
    index.add_argument("--duplicates", help="CSV file for the identical and near-duplicate pairs across splits")
    index.add_argument("--no-leakage", action="store_true", help="skip the leakage check (it reads every file)")
    predict = sub.add_parser("predict", help="predict images or folders with an installed ensemble")
    predict.add_argument("paths", nargs="*", metavar="PATH", help="image files or folders (searched recursively)")
    pacs = predict.add_argument_group("PACS (DICOMweb) instead of files; credentials from MURA_PACS_USER/"
                                      "MURA_PACS_PASSWORD or .streamlit/secrets.toml")
    pacs.add_argument("--pacs", metavar="URL", help="DICOMweb root of the PACS (e.g. $MURA_PACS_URL)")
    pacs.add_argument("--study", action="append", default=[], metavar="UID", help="a StudyInstanceUID (repeatable)")
    pacs.add_argument("--since", metavar="YYYYMMDD", help="every radiograph study (CR/DX) dated on or after")
    pacs.add_argument("--store-results", action="store_true",
                      help="store each study's result in it as a DICOM SR and heatmap secondary captures")
    predict.add_argument("--weights", help="ensemble folder (default: $MURA_WEIGHTS or the repository's weights/)")
    predict.add_argument("--runtime", choices=["auto", "onnx", "keras"],
                         help="what runs the members: ONNX Runtime where the ensemble has ONNX graphs (auto), "
                              "or one of them only (default: $MURA_RUNTIME, else auto)")
    predict.add_argument("--out", help="CSV file to write (default: standard output)")
    predict.add_argument("--batch-size", type=int, default=16)
    predict.add_argument("--explain-dir", help="folder for each image's fused heatmap drawn over it (JPEG)")
    predict.add_argument("--cam-method", choices=list(CAM_METHODS),
                         help="heatmap method for --explain-dir (default: the ensemble's own default)")
    predict.add_argument("--regions", metavar="FILE",
                         help="CSV file for the suspected regions, one row per region (path, x0, y0, x1, y1, "
                              "score, finding; image pixels), from the default heatmap method's fused map")
    sub.add_parser("models", help="list the registered architectures")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "index":
        return _index(args)
    if args.command == "predict":
        return _predict(args)
    from .registry import get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        print(f"{name:16s} family={spec.family:12s} input={spec.input_size} gradcam_layer={spec.gradcam_layer}")
    return EXIT_OK


def _index(args) -> int:
    from .csvsafe import write_csv
    from .datasets import DatasetError, index_dataset, leakage, summarize

    try:
        index = index_dataset(args.root, args.format, args.split_file)
    except (DatasetError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    write_csv(index.table, args.out)
    table = index.table
    print(f"{args.root}: {index.format} layout, {len(table)} images, {table['study'].nunique()} studies, "
          f"{table['patient'][table['patient'] != ''].nunique()} patients -> {args.out}")
    per_split, per_part = summarize(table)
    print(per_split.to_string())
    print("images per body part:")
    print(per_part.to_string())
    if index.format == "mura":
        from .mura_facts import MATCH_TEXT, compare_with_published, comparison_summary

        comparison = compare_with_published(table)
        print("MURA v1.1 found vs published (images must match; study folders may exceed the paper's count "
              "slightly):")
        print(comparison.to_string(index=False))
        for line in comparison_summary(comparison) or [MATCH_TEXT]:
            print(line)
    if not args.no_leakage:
        leakage.print_leakage(table, args.duplicates)
    for problem in index.problems:
        print(f"problem: {problem.path}: {problem.reason}", file=sys.stderr)
    return EXIT_OK


def collect_inputs(paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Expand files and folders (recursively) into image paths; missing paths are returned as errors.

    In folders, files with a supported image ending are taken, and files without an ending when they
    are DICOM (PACS exports often have none); other files are ignored. Files named directly are
    always taken (and reported if unreadable).
    """
    from .imaging import is_dicom_file, is_image_name

    def wanted(p: Path) -> bool:
        if not p.is_file() or p.name.startswith("."):
            return False
        return is_image_name(p) or (not p.suffix and is_dicom_file(p))

    files, missing = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if wanted(p))
            if not found:
                missing.append((raw, "folder holds no image files"))
            files += [str(p) for p in found]
        elif path.is_file():
            files.append(str(path))
        else:
            missing.append((raw, "file not found"))
    return files, missing


def study_table(files: list[str]):
    """Group files into studies by folder; MURA paths also give body part and patient."""
    import pandas as pd

    from .datasets import parse_mura_path

    rows = []
    for file in files:
        parsed = parse_mura_path(file)
        rows.append({"path": file, "study": str(Path(file).parent), "patient": parsed["patient"],
                     "mura_body_part": parsed["body_part"]})
    return pd.DataFrame(rows, columns=["path", "study", "patient", "mura_body_part"])


def _predict(args) -> int:
    import pandas as pd

    from .csvsafe import write_csv
    from .ensemble import EnsembleLoadError, load_ensemble, weights_installed

    if bool(args.pacs) == bool(args.paths) or (args.pacs and not (args.study or args.since)) or \
            ((args.study or args.since or args.store_results) and not args.pacs):
        print("error: give image files or folders, or --pacs URL with --study UID and/or --since YYYYMMDD "
              "(--store-results only with --pacs)", file=sys.stderr)
        return EXIT_ERROR
    if args.since and not (len(args.since) == 8 and args.since.isdigit()):
        print(f"error: --since {args.since!r}: expected a date as YYYYMMDD", file=sys.stderr)
        return EXIT_ERROR
    if args.weights is None and not weights_installed():
        print("error: no ensemble is installed in weights/ - pass --weights FOLDER, set MURA_WEIGHTS, or "
              "install one (see docs/hosting-and-privacy.md: 'Installing other weights')", file=sys.stderr)
        return EXIT_ERROR
    try:
        ensemble = load_ensemble(args.weights, runtime=args.runtime)
    except EnsembleLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.regions and args.cam_method not in (None, ensemble.default_cam_method):
        print(f"error: --regions come from the ensemble's default heatmap ({ensemble.default_cam_method}); "
              f"leave --cam-method out or set it to that", file=sys.stderr)
        return EXIT_ERROR
    on_result, explain = None, bool(args.regions)
    if args.pacs:
        inputs = _pacs_inputs(args)
        if inputs is None:
            return EXIT_ERROR
        files, missing, on_result = inputs
        explain = explain or args.store_results  # the stored secondary captures draw the fused heatmap
    else:
        paths, missing = collect_inputs(args.paths)
        files = study_table(paths)
    regions = [] if args.regions else None
    try:
        table = prediction_table(ensemble, files, args.batch_size, sys.stderr.isatty(),
                                 args.explain_dir, args.cam_method, explain, on_result, regions)
    except ValueError as exc:  # a heatmap method some member does not offer
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if regions is not None:
        write_csv(pd.DataFrame(regions, columns=list(REGION_CSV_COLUMNS)), args.regions, float_format="%.6f")
    if missing:
        table = pd.concat([table, pd.DataFrame([{"path": p, "error": e} for p, e in missing])], ignore_index=True)
    table = table.reindex(columns=_columns(ensemble.names, bool(args.explain_dir)))
    table[["warning", "error"]] = table[["warning", "error"]].fillna("")
    write_csv(table, args.out or sys.stdout, float_format="%.6f")
    failed = table[table["error"] != ""]
    for _, row in failed.iterrows():
        print(f"error: {row['path']}: {row['error']}", file=sys.stderr)
    print(f"{len(table) - len(failed)} of {len(table)} inputs predicted"
          f"{f', {len(failed)} failed' if len(failed) else ''}. {_notice()}", file=sys.stderr)
    return EXIT_SOME_FAILED if len(failed) else EXIT_OK


REGION_CSV_COLUMNS = ("path", "x0", "y0", "x1", "y1", "score", "finding")
"""Columns of `predict --regions`: one row per suspected region, box corners in the image's pixels."""


def _columns(members: list[str], heatmaps: bool = False) -> list[str]:
    return ["path", "study", "body_part", "patient", *members, "ensemble", "study_probability", "threshold",
            "verdict", "warning", "error", *(["heatmap_method", "heatmap"] if heatmaps else [])]


def prediction_table(ensemble, files, batch_size: int = 16, show_progress: bool = False,
                     explain_dir: str | None = None, cam_method: str | None = None, explain: bool = False,
                     on_result=None, regions: list | None = None):
    """One row per file of `study_table(files)`, predicted study by study through `Ensemble.predict_studies`.

    A study's body part is its MURA folder's when the path has one, else detected from its images.
    When `files` has a `source` column (e.g. DICOM bytes fetched from a PACS) the images are read from
    it, and `path` only names them. With `explain_dir`, each readable image's fused heatmap
    (`cam_method`, default the ensemble's) is drawn over it into that folder as `<n>_<file stem>.jpg`;
    `explain` computes heatmaps without drawing them. `on_result(study, result)`, when given, is
    called with each study's `StudyResult`. `regions`, when a list, gets one dict per suspected region
    (`REGION_CSV_COLUMNS`) of the images explained with the default method.
    """
    import pandas as pd
    from PIL import Image

    from .heatmaps import overlay
    from .results import Study

    if explain_dir:
        Path(explain_dir).mkdir(parents=True, exist_ok=True)
    groups = list(files.groupby("study", sort=False))
    column = "source" if "source" in files.columns else "path"
    studies = (Study(group[column].tolist(), [Path(p).name for p in group["path"]],
                     group["mura_body_part"].iloc[0] or None) for _, group in groups)
    rows, total = [], len(files)
    results = ensemble.predict_studies(studies, bool(explain_dir) or explain, cam_method, batch_size)
    for (study, group), result in zip(groups, results):
        if on_result is not None:
            on_result(study, result)
        for path, patient, image in zip(group["path"], group["patient"], result.images):
            row = {"path": path, "study": study, "body_part": result.body_part, "patient": patient,
                   "warning": result.image_warning(image), "error": image.error or ""}
            if image.ok:
                row.update({**image.probabilities, "ensemble": image.ensemble,
                            "study_probability": result.probability, "threshold": result.threshold,
                            "verdict": result.verdict or ""})
                if regions is not None:
                    regions += [{"path": path, **region.to_dict(), "finding": result.is_finding(region)}
                                for region in image.regions]
                if explain_dir:
                    picture = Path(explain_dir) / f"{len(rows) + 1:05d}_{Path(path).stem}.jpg"
                    Image.fromarray(overlay(image.image, image.heatmaps["ensemble"])).save(picture, quality=90)
                    row.update({"heatmap_method": result.cam_method, "heatmap": str(picture)})
            rows.append(row)
        if show_progress:
            print(f"\r{len(rows)}/{total} images", end="", file=sys.stderr)
    if show_progress:
        print(file=sys.stderr)
    return pd.DataFrame(rows, columns=_columns(ensemble.names, bool(explain_dir)))


def _pacs_inputs(args):
    """The PACS studies as `prediction_table` input: (files with a `source` column, failures, on_result),
    or None when the PACS cannot be searched.

    Each image row is named by its WADO-RS URL and carries the instance's DICOM bytes; no patient
    identifier is read. With `--store-results`, `on_result` stores each study's SR and heatmap
    captures in it.
    """
    import pandas as pd

    from .installed import model_identity
    from .pacs import PacsClient, PacsError, pacs_config

    config = pacs_config(args.pacs)
    client = PacsClient(config)
    try:
        uids = list(dict.fromkeys(args.study + (client.find_radiograph_studies(args.since) if args.since else [])))
    except PacsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    if not uids:
        print(f"error: no radiograph study (CR/DX) dated {args.since} or later on the PACS", file=sys.stderr)
        return None
    rows, missing, opened = [], [], {}
    for uid in uids:
        where = f"{config.shown_url}/studies/{uid}"
        try:
            study = client.open_study(uid)
        except PacsError as exc:
            missing.append((where, str(exc)))
            continue
        for name, reason in study.skipped:
            print(f"note: {where}: {name} left out: {reason}", file=sys.stderr)
        opened[uid] = study
        rows += [{"path": f"{where}/series/{image.series_uid}/instances/{image.sop_uid}", "study": uid,
                  "patient": "", "mura_body_part": "", "source": image.data} for image in study.images]
    files = pd.DataFrame(rows, columns=["path", "study", "patient", "mura_body_part", "source"])
    if not args.store_results:
        return files, missing, None
    identity = model_identity(args.weights)

    def store(uid, result) -> None:
        where = f"{config.shown_url}/studies/{uid}"
        if result.probability is None:
            return
        try:
            stored = client.store_result(result, [image.data for image in opened[uid].images], identity)
            print(f"stored in {where}: a structured report and {stored - 1} heatmap image(s)", file=sys.stderr)
        except (PacsError, ValueError) as exc:
            missing.append((where, f"results not stored: {exc}"))

    return files, missing, store



def _notice() -> str:
    from .notices import DISCLAIMER

    return DISCLAIMER
