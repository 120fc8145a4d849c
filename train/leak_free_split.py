"""Write a split file in which no identical or near-identical images (or patient) straddle two splits.

    python -m train.leak_free_split ROOT --out train/splits/NAME.csv [--format auto]
        [--shares train=0.8,val=0.1,test=0.1] [--seed 0] [--keep-splits] [--max-distance 6]

It finds the leakage in ROOT (`mura_core.datasets.leakage`), groups identical and near-identical files
(and each patient's files) transitively, and deals the groups out to the splits, stratified by label.
``--keep-splits`` keeps the layout's own splits instead (the published split, as it is). Either way,
files that cannot be decoded get no split (training would drop them). It prints the leakage lines of
the split it writes; `index_dataset(ROOT, split_file=OUT)` and `data: [{split_file: OUT}]` read it.
"""

from __future__ import annotations

import argparse
import sys

from mura_core.datasets import index_dataset, layout_names, leakage, write_split_file


def _shares(text: str) -> dict[str, float]:
    shares = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            shares[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected split=share pairs like train=0.8,test=0.2, got {text!r}") from None
    return shares


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="dataset folder")
    parser.add_argument("--format", default="auto", choices=["auto", *layout_names()])
    parser.add_argument("--out", required=True, help="split file to write (CSV path_key,split)")
    parser.add_argument("--shares", type=_shares, default=_shares("train=0.8,val=0.1,test=0.1"),
                        help="the splits and their shares of the images; the first takes what is left")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-splits", action="store_true", help="keep the layout's splits (drop undecodable)")
    parser.add_argument("--max-distance", type=int, default=leakage.NEAR_DISTANCE,
                        help="near-duplicate threshold (pHash Hamming distance of 64 bits)")
    parser.add_argument("--workers", type=int, default=2, help="threads reading and hashing the files")
    args = parser.parse_args(argv)

    table = index_dataset(args.root, args.format).table
    report = leakage.find_leakage(table, args.max_distance, args.workers)
    print("as found:")
    for line in leakage.summary_lines(report):
        print("  " + line)
    if not args.keep_splits:
        table = leakage.leak_free_split(table, report, args.shares, args.seed)
    unreadable = (report.files["error"] != "").to_numpy()
    for path, reason in report.files.loc[unreadable, ["path", "error"]].itertuples(index=False):
        print(f"no split (cannot be decoded): {path}: {reason}", file=sys.stderr)
    table.loc[unreadable, "split"] = ""
    written = write_split_file(table, args.root, args.out)
    after = leakage.find_leakage(table, args.max_distance, prints=report.files)
    print(f"written to {written}:")
    for line in leakage.summary_lines(after):
        print("  " + line)
    print(table.groupby(["split", "label"]).size().rename("images").to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
