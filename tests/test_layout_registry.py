"""Adding a dataset layout is one module: a layout defined only here is detected, indexed, and offered
by the CLI, `train.evaluate` and the Dataset explorer, with no other change to the product."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from mura_core import cli
from mura_core.datasets import base, detect_format, get_layout, index_dataset, layout_names, load_boxes
from tests.data import FRACATLAS


class ListedLayout(base.Layout):
    """A test-only layout: `labels.tsv` (file, label, x, y, w, h) beside a `scans/` folder."""

    name = "listed"
    title = "Listed scans"
    description = "`labels.tsv` beside `scans/`"
    notes = "Boxes are optional."

    def detect(self, root: Path) -> bool:
        return (root / "labels.tsv").is_file() and (root / "scans").is_dir()

    def index(self, root: Path):
        rows = pd.read_csv(root / "labels.tsv", sep="\t")
        problems = [base.IndexProblem(str(root / "scans" / f), "listed but missing")
                    for f in rows["file"] if not (root / "scans" / f).is_file()]
        rows = rows[[(root / "scans" / f).is_file() for f in rows["file"]]]
        table = base.make_table(path=[str(root / "scans" / f) for f in rows["file"]], split="test",
                                study=["listed:" + f for f in rows["file"]], label=rows["label"].tolist(),
                                dataset="listed")
        return table, problems

    def boxes(self, root):
        rows = pd.read_csv(Path(root) / "labels.tsv", sep="\t").dropna()
        return {r.file: [(r.x, r.y, r.w, r.h)] for r in rows.itertuples()}


@pytest.fixture
def listed(monkeypatch, tmp_path):
    """The layout registered for this test only, and a tiny dataset in its layout."""
    monkeypatch.setitem(base._LAYOUTS, ListedLayout.name, ListedLayout())
    (tmp_path / "scans").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("L", (40, 40), 90).save(tmp_path / "scans" / name)
    (tmp_path / "labels.tsv").write_text("file\tlabel\tx\ty\tw\th\na.png\t1\t4\t5\t10\t12\n"
                                         "b.png\t0\t\t\t\t\nc.png\t0\t\t\t\t\n")
    return tmp_path


def test_a_registered_layout_is_detected_indexed_and_gives_boxes(listed):
    assert "listed" in layout_names() and get_layout("listed").title == "Listed scans"
    assert detect_format(listed) == "listed"
    index = index_dataset(listed)
    assert index.format == "listed"
    assert sorted(Path(p).name for p in index.table["path"]) == ["a.png", "b.png"]
    assert index.table["label"].tolist() == [1, 0]
    assert [Path(p.path).name for p in index.problems] == ["c.png"]
    assert load_boxes(listed) == {"a.png": [(4.0, 5.0, 10.0, 12.0)]}


def test_the_cli_and_evaluate_offer_it(listed, tmp_path, capsys):
    out = tmp_path / "index.csv"
    assert cli.main(["index", str(listed), "--format", "listed", "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 2
    from train import evaluate

    with pytest.raises(SystemExit):  # argparse lists the choices on --help
        evaluate.main(["--help"])
    assert "listed" in capsys.readouterr().out


def test_unknown_layout_names_the_known_ones(listed):
    with pytest.raises(ValueError, match="listed"):
        index_dataset(listed, "nonesuch")


def test_layouts_without_boxes_say_none(tmp_path):
    for name in ("good", "bad"):
        (tmp_path / "train" / "normal").mkdir(parents=True, exist_ok=True)
        Image.new("L", (40, 40), 90).save(tmp_path / "train" / "normal" / f"{name}.png")
    assert detect_format(tmp_path) == "folders"
    assert load_boxes(tmp_path) is None
    assert load_boxes(FRACATLAS)
