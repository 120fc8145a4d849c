"""The report `train.evaluate` writes: its threshold table agrees with its metrics at the operating point."""

from __future__ import annotations

import pytest

from mura_core import reports
from tests.conftest import build_report


@pytest.mark.parametrize("level", ["image", "study"])
def test_threshold_table_holds_the_operating_threshold(level):
    threshold = 0.4567  # off the 0.01 grid, as a threshold chosen on validation is
    report = build_report(["a", "b"], threshold)
    table = reports.threshold_frame(report, level)
    assert len(table) == 102 and table["threshold"].is_monotonic_increasing
    row = reports.threshold_at(table, threshold)
    assert row["threshold"] == threshold
    ensemble = report[f"{level}_level"]["ensemble"]
    assert row["sensitivity"] == pytest.approx(ensemble["recall"])
    assert row["specificity"] == pytest.approx(ensemble["specificity"])
    assert (row["tp"], row["fp"], row["tn"], row["fn"]) == (ensemble["tp"], ensemble["fp"], ensemble["tn"],
                                                            ensemble["fn"])
