"""The Dataset explorer's figures without a dataset: MURA's published counts and a training split."""

from __future__ import annotations

import pandas as pd

from mura_core import data_overview, mura_facts


def test_mura_figures_show_the_published_counts():
    totals = data_overview.mura_totals()
    assert totals.loc["train", "images"] == 36808 and totals.loc["valid", "images"] == 3197
    assert totals.loc["total", "studies"] == totals.loc["train", "studies"] + totals.loc["valid", "studies"]
    table = data_overview.mura_study_table()
    assert list(table.index) == ["Elbow", "Finger", "Forearm", "Hand", "Humerus", "Shoulder", "Wrist"]
    assert table.loc["Humerus", "valid studies abnormal"] == 67
    assert table["train images"].sum() == 36808
    images = data_overview.mura_images_figure()
    assert sum(sum(trace.y) for trace in images.data) == 36808 + 3197
    studies = data_overview.mura_studies_figure()
    assert {trace.name for trace in studies.data} == {"normal", "abnormal"}
    assert sum(sum(t.y) for t in studies.data) == mura_facts.published_studies()["studies"].sum()


def test_training_split_figure_and_balance():
    counts = pd.DataFrame([("train", "XR_HAND", "negative", 8), ("train", "XR_HAND", "positive", 2),
                           ("test", "LEG", "negative", 3), ("val", "LEG", "positive", 1)],
                          columns=["split", "body_part", "label", "images"])
    balance = data_overview.training_balance(counts, "fracture")
    assert list(balance.index) == ["train", "val", "test", "total"]
    assert balance.loc["train"].tolist() == [10, 8, 2, "20.0%"]
    assert balance.loc["total", "images"] == 14
    figure = data_overview.training_split_figure(counts, "fracture")
    assert {t.name for t in figure.data} == {"no fracture", "fracture"}
    assert sum(sum(t.y) for t in figure.data) == 14
