"""Formula-safe CSVs: the writer itself, and every CSV the CLI, the dashboard and train.evaluate write."""

from __future__ import annotations

import csv
import io
import shutil

import numpy as np
import pandas as pd
import pytest

from mura_core import cli, results
from mura_core.csvsafe import FORMULA_PREFIXES, formula_safe, neutralise, write_csv

# File names that a spreadsheet runs as formulas when they start a cell (the four, tab and CR).
HOSTILE = ['=HYPERLINK("http:x","open").jpg', "+SUM(1,2).jpg", "-2+3.jpg", "@A1.jpg"]


def _cells(text: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(text)) for cell in row]


def _assert_safe(text: str) -> None:
    risky = [c for c in _cells(text) if c.startswith(FORMULA_PREFIXES) and not _is_number(c)]
    assert not risky, risky


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("cell", [*HOSTILE, "\tindent", "\rreturn", "=1+1", "-", "@"])
def test_formula_cells_get_a_quote(cell):
    assert neutralise(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["ok.png", "", " =not first", "'quoted", "study 1", "/abs/-x.png"])
def test_other_text_is_unchanged(cell):
    assert neutralise(cell) == cell


def test_numbers_stay_numbers():
    frame = pd.DataFrame({"image": [*HOSTILE, "\tt.png", "\rr.png"], "p": [0.5, -0.25, 1.0, -2.0, 0.0, None],
                          "n": [1, -2, 3, 4, -5, 6], "mixed": [-1.5, "-x", None, "=y", 2, "ok"]})
    text = write_csv(frame)
    _assert_safe(text)
    back = pd.read_csv(io.StringIO(text), keep_default_na=False)
    assert back["image"].tolist() == ["'" + name for name in frame["image"]]
    assert pd.api.types.is_numeric_dtype(back["n"]) and back["n"].tolist() == [1, -2, 3, 4, -5, 6]
    assert back["p"].iloc[1] == "-0.25" or float(back["p"].iloc[1]) == -0.25
    assert back["mixed"].tolist()[:2] == ["-1.5", "'-x"]  # a number in a text column stays a number
    assert formula_safe(frame)["p"].equals(frame["p"])  # numeric columns are not touched
    assert frame["image"].iloc[0] == HOSTILE[0]  # the input table is not changed


def test_column_names_and_files(tmp_path):
    frame = pd.DataFrame({"=cmd": ["a"], "ok": [np.float32(0.5)]})
    path = tmp_path / "t.csv"
    assert write_csv(frame, path, float_format="%.3f") is None
    assert path.read_text().splitlines() == ["'=cmd,ok", "a,0.500"]


def test_study_download_is_safe():
    from mura_core.ensemble import ImageResult, StudyResult

    images = [ImageResult(name, {"m": 0.6}, 0.6) for name in HOSTILE]
    study = StudyResult(images, ["m"], 0.5, 0.6, {"m": 0.6}, "abnormal")
    text = results.study_csv(study, "XR_HAND")
    _assert_safe(text)
    assert [c for c in _cells(text) if c.lstrip("'") in HOSTILE] == ["'" + name for name in HOSTILE]


def test_cli_predictions_are_safe(tiny_weights, tmp_path, monkeypatch):
    sample = next((tiny_weights / "samples").glob("*.jpg"))
    folder = tmp_path / "in"
    folder.mkdir()
    for name in HOSTILE:
        shutil.copy(sample, folder / name)
    monkeypatch.chdir(folder)  # relative paths: the path cells start with the file names
    out = tmp_path / "predictions.csv"
    assert cli.main(["predict", "--weights", str(tiny_weights), "--out", str(out), "."]) == 0
    text = out.read_text()
    _assert_safe(text)
    table = pd.read_csv(out, keep_default_na=False)
    assert sorted(table["path"]) == sorted("'" + name for name in HOSTILE)
    assert pd.api.types.is_float_dtype(table["ensemble"])


def test_evaluation_tables_are_safe(tmp_path, fake_report):
    from mura_core.reports import write_report

    predictions = pd.DataFrame({"path": HOSTILE, "label": [0, 1, 0, 1], "ensemble": [0.1, 0.9, 0.2, 0.8]})
    written = write_report(fake_report, predictions, tmp_path / "report")
    for path in written:
        if path.suffix == ".csv":
            _assert_safe(path.read_text())
    assert pd.read_csv(tmp_path / "report" / "predictions.csv")["path"].str.startswith("'").all()
