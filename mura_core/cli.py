"""Command line: `python -m mura_core {index,predict,models}`.

    python -m mura_core index ROOT [--format auto|mura|fracatlas|folders] --out index.csv
    python -m mura_core predict [--weights FOLDER] [--out FILE.csv] [--explain-dir DIR] PATH...
    python -m mura_core models

`predict` exits 0 when every input was read, 1 when some could not be (their rows carry the
reason in the `error` column), 2 when nothing could run (no weights, bad arguments). The `warning`
column says when a row's verdict is not meaningful: its body part is outside what the ensemble was
trained on (or unknown), or the image is in strong colour.
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

    parser = argparse.ArgumentParser(prog="python -m mura_core", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    index = sub.add_parser("index", help="index a dataset folder into one CSV table")
    index.add_argument("root")
    index.add_argument("--format", default="auto", choices=["auto", *layout_names()])
    index.add_argument("--split-file", help="CSV path_key,split assigning splits (e.g. train/configs' split)")
    index.add_argument("--out", required=True, help="CSV file to write")
    predict = sub.add_parser("predict", help="predict images or folders with an installed ensemble")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    predict.add_argument("--weights", help="ensemble folder (default: $MURA_WEIGHTS or the repository's weights/)")
    predict.add_argument("--out", help="CSV file to write (default: standard output)")
    predict.add_argument("--batch-size", type=int, default=16)
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
    from .datasets import DatasetError, index_dataset, summarize

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

    from .body_parts import detect_body_part
    from .coverage import coverage_warning
    from .csvsafe import write_csv
    from .decision import study_probability, verdict
    from .ensemble import EnsembleLoadError, load_ensemble, weights_installed

    if args.weights is None and not weights_installed():
        print("error: no ensemble is installed in weights/ - pass --weights FOLDER, set MURA_WEIGHTS, or "
              "install one (see README: 'Installing other weights')", file=sys.stderr)
        return EXIT_ERROR
    try:
        ensemble = load_ensemble(args.weights)
    except EnsembleLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    files, missing = collect_inputs(args.paths)
    table = study_table(files)
    progress = (lambda done, total: print(f"\r{done}/{total} images", end="", file=sys.stderr)) \
        if sys.stderr.isatty() else None
    predictions = ensemble.predict_files(files, args.batch_size, progress)
    if progress:
        print(file=sys.stderr)
    table = table.merge(predictions, on="path", how="left")
    table["body_part"] = table["mura_body_part"].where(table["mura_body_part"] != "", table["body_part"])
    table["body_part"] = [part or detect_body_part([path])[0] for part, path in zip(table["body_part"],
                                                                                   table["path"])]
    read = table["ensemble"].notna()  # a file that wasn't read takes no part in its study's verdict
    study_prob = table.groupby("study")["ensemble"].transform(study_probability).where(read)
    table["study_probability"] = study_prob
    table["verdict"] = study_prob.map(lambda p: verdict(p, ensemble.threshold) or "")
    table["threshold"] = pd.Series(ensemble.threshold, index=table.index).where(read)
    coverage = ensemble.coverage
    table["warning"] = [" ".join(w for w in (coverage_warning(coverage, part), image) if w) if ok else ""
                        for part, image, ok in zip(table["body_part"], table["warning"], read)]
    if missing:
        table = pd.concat([table, pd.DataFrame([{"path": p, "error": e} for p, e in missing])], ignore_index=True)
    columns = ["path", "study", "body_part", "patient", *ensemble.names, "ensemble", "study_probability",
               "threshold", "verdict", "warning", "error"]
    table = table.reindex(columns=columns)
    table[["warning", "error"]] = table[["warning", "error"]].fillna("")
    write_csv(table, args.out or sys.stdout, float_format="%.6f")
    failed = table[table["error"] != ""]
    for _, row in failed.iterrows():
        print(f"error: {row['path']}: {row['error']}", file=sys.stderr)
    print(f"{len(table) - len(failed)} of {len(table)} inputs predicted"
          f"{f', {len(failed)} failed' if len(failed) else ''}. {_notice()}", file=sys.stderr)
    return EXIT_SOME_FAILED if len(failed) else EXIT_OK


def _notice() -> str:
    from .notices import DISCLAIMER

    return DISCLAIMER
