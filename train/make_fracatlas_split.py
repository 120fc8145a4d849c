"""Write the committed FracAtlas train / val / test split (stratified by label and body part, fixed seed).

    python -m train.make_fracatlas_split --root ../shared/data/fracatlas --out train/splits/fracatlas.csv

FracAtlas has no patient ids, so the split is by image (stated in the model card as a limitation).
"""

from __future__ import annotations

import argparse

from sklearn.model_selection import train_test_split

from mura_core.datasets import index_dataset, write_split_file


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="../shared/data/fracatlas")
    parser.add_argument("--out", default="train/splits/fracatlas.csv")
    parser.add_argument("--val", type=float, default=0.15)
    parser.add_argument("--test", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    table = index_dataset(args.root, "fracatlas").table
    strata = table["label"].astype(str) + "_" + table["body_part"]
    rest, test = train_test_split(table, test_size=args.test, stratify=strata, random_state=args.seed)
    rest_strata = rest["label"].astype(str) + "_" + rest["body_part"]
    train, val = train_test_split(rest, test_size=args.val / (1 - args.test), stratify=rest_strata,
                                  random_state=args.seed)
    table = table.assign(split="")
    for name, part in (("train", train), ("val", val), ("test", test)):
        table.loc[part.index, "split"] = name
    write_split_file(table, args.root, args.out)
    print(table.groupby(["split", "label"]).size().to_string())


if __name__ == "__main__":
    main()
