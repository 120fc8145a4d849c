"""Tests for mura_core.metrics against hand-computed values and scikit-learn."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, f1_score, precision_score

from mura_core import metrics
from mura_core.decision import aggregate_studies
from mura_core.localization import (
    boxes_to_mask,
    localization_summary,
    map_reliability,
    mass_in_boxes,
    pointing_game,
    reliability_counts,
)
from mura_core.metrics import (
    binary_metrics,
    bootstrap_ci,
    calibration,
    metrics_with_ci,
    per_group_metrics,
    roc_points,
    threshold_for_sensitivity,
    threshold_table,
)
from mura_core.pipeline import class_weights
from mura_core.vocabulary import METRICS

# 4 positives, 6 negatives. At 0.5: TP=3 (0.9, 0.8, 0.6), FN=1 (0.3),
# FP=2 (0.7, and 0.5 exactly: prob >= threshold is positive), TN=4.
Y10 = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
P10 = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.5, 0.4, 0.2, 0.1, 0.0])


def _noisy_scores(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.35 * y + 0.65 * rng.random(n), 0.0, 1.0)
    return y, p


# ------------------------------------------------------------------ binary_metrics


def test_binary_metrics_hand_computed():
    m = binary_metrics(Y10, P10, threshold=0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 2, 4, 1)
    assert (m["n"], m["positives"], m["negatives"]) == (10, 4, 6)
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    # 20 of the 24 positive/negative pairs are ranked correctly.
    assert m["auc"] == pytest.approx(20 / 24)
    # p_o = 0.7, p_e = 0.4 * 0.5 + 0.6 * 0.5 = 0.5 -> kappa = 0.2 / 0.5.
    assert m["kappa"] == pytest.approx(0.4)
    assert m["threshold"] == 0.5
    json.dumps(m)
    assert all(type(m[k]) is int for k in ("n", "tp", "fp", "tn", "fn"))


def test_binary_metrics_threshold_is_inclusive():
    m = binary_metrics([0, 1], [0.3, 0.3], threshold=0.3)
    assert (m["tp"], m["fp"]) == (1, 1)


def test_auc_is_one_for_separable_and_none_for_single_class():
    assert binary_metrics([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])["auc"] == 1.0
    assert binary_metrics([1, 1, 1], [0.1, 0.2, 0.8])["auc"] is None


def test_kappa_zero_for_constant_predictions_and_none_when_undefined():
    m = binary_metrics([0, 1, 0, 1, 1], [0.9] * 5)
    assert m["kappa"] == pytest.approx(0.0)
    assert m["specificity"] == 0.0
    assert binary_metrics([0, 0, 0], [0.1, 0.2, 0.3])["kappa"] is None


def test_binary_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="length"):
        binary_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match="0 and 1"):
        binary_metrics([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match="empty"):
        binary_metrics([], [])


def test_count_formulas_agree_with_sklearn():
    # The vectorised bootstrap and threshold table use these; check against sklearn.
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        pred = rng.integers(0, 2, 40)
        tp = np.sum((y == 1) & (pred == 1))
        fp = np.sum((y == 0) & (pred == 1))
        tn = np.sum((y == 0) & (pred == 0))
        fn = np.sum((y == 1) & (pred == 0))
        rates = metrics._rates_from_counts(tp, fp, tn, fn)
        assert rates["kappa"] == pytest.approx(cohen_kappa_score(y, pred))
        assert rates["f1"] == pytest.approx(f1_score(y, pred))
        assert rates["precision"] == pytest.approx(precision_score(y, pred))


# -------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_point_estimate_and_shrinks_with_more_data():
    y, p = _noisy_scores(200)
    point = binary_metrics(y, p)
    small = bootstrap_ci(y, p, n_boot=300, seed=1)
    large = bootstrap_ci(np.tile(y, 10), np.tile(p, 10), n_boot=300, seed=1)
    assert set(small) == set(METRICS)
    for name in METRICS:
        lo, hi = small[name]
        assert lo <= point[name] <= hi, name
        lo_l, hi_l = large[name]
        assert lo_l <= point[name] <= hi_l, name
        assert hi_l - lo_l < 0.6 * (hi - lo), name


def test_group_bootstrap_is_deterministic_and_respects_clusters():
    y, p = _noisy_scores(150, seed=2)
    # Five identical images per study: a row bootstrap treats them as independent
    # and is too narrow; resampling studies gives the width of the 150 studies.
    y5, p5, groups = np.repeat(y, 5), np.repeat(p, 5), np.repeat(np.arange(150), 5)
    a = bootstrap_ci(y5, p5, n_boot=200, seed=7, groups=groups)
    b = bootstrap_ci(y5, p5, n_boot=200, seed=7, groups=groups)
    c = bootstrap_ci(y5, p5, n_boot=200, seed=8, groups=groups)
    naive = bootstrap_ci(y5, p5, n_boot=200, seed=7)
    assert a == b
    assert a != c
    for name in ("accuracy", "auc", "kappa"):
        assert a[name][1] - a[name][0] > 1.5 * (naive[name][1] - naive[name][0])
    # Any hashable ids work; string ids give the same clusters in the same order.
    string_groups = [f"study{g}" for g in groups]
    assert bootstrap_ci(y5, p5, n_boot=200, seed=7, groups=string_groups) == a


def test_bootstrap_ci_skips_undefined_metrics():
    ci = bootstrap_ci([0, 0, 0, 0], [0.1, 0.7, 0.2, 0.3], n_boot=50)
    assert ci["auc"] == (None, None)
    assert ci["recall"] == (None, None)
    assert ci["specificity"][0] is not None
    assert ci["accuracy"][0] <= 0.75 <= ci["accuracy"][1]


def test_metrics_with_ci_adds_ci():
    result = metrics_with_ci(Y10, P10, n_boot=100, seed=0, groups=list("aabbccddee"))
    assert result["accuracy"] == pytest.approx(0.7)
    assert set(result["ci"]) == set(METRICS)
    json.dumps(result)


# ----------------------------------------------------------------------- tables


def test_aggregate_studies_means_probabilities_per_study():
    table = pd.DataFrame(
        {
            "path": ["a1.png", "a2.png", "b1.png", "c1.png", "d1.png"],
            "study": ["A", "A", "B", "", None],
            "label": [1, 1, 0, 0, 1],
            "body_part": ["XR_HAND", "XR_HAND", "XR_WRIST", "XR_HAND", "XR_ELBOW"],
            "patient": ["p1", "p1", "p2", "p3", "p4"],
            "prob_densenet": [0.2, 0.6, 0.1, 0.3, 0.9],
            "prob_resnet": [0.5, 0.7, 0.2, 0.4, 0.8],
        }
    )
    out = aggregate_studies(table, ["prob_densenet", "prob_resnet"])
    assert list(out["study"]) == ["A", "B", "c1.png", "d1.png"]
    assert list(out["n_images"]) == [2, 1, 1, 1]
    assert list(out["label"]) == [1, 0, 0, 1]
    assert out["prob_densenet"].tolist() == pytest.approx([0.4, 0.1, 0.3, 0.9])
    assert out["prob_resnet"].tolist() == pytest.approx([0.6, 0.2, 0.4, 0.8])
    assert list(out["body_part"]) == ["XR_HAND", "XR_WRIST", "XR_HAND", "XR_ELBOW"]
    assert list(out["patient"]) == ["p1", "p2", "p3", "p4"]


def test_aggregate_studies_without_path_or_extras():
    table = pd.DataFrame(
        {"study": ["s", "", "s", ""], "label": [0, 1, 1, 0], "p": [0.2, 0.5, 0.4, 0.1]}
    )
    out = aggregate_studies(table, "p")
    assert len(out) == 3
    assert out.loc[out["study"] == "s", "p"].item() == pytest.approx(0.3)
    assert out.loc[out["study"] == "s", "label"].item() == 1
    with pytest.raises(ValueError, match="missing_col"):
        aggregate_studies(table, "missing_col")


def test_per_group_metrics_has_groups_and_all_row():
    table = pd.DataFrame(
        {
            "body_part": ["XR_HAND"] * 6 + ["XR_WRIST"] * 4,
            "label": Y10,
            "prob": P10,
        }
    )
    out = per_group_metrics(table, "prob")
    assert list(out.index) == ["XR_HAND", "XR_WRIST", "ALL"]
    assert out.index.name == "body_part"
    assert list(out.columns) == list(metrics.GROUP_METRIC_COLUMNS)
    assert out.loc["ALL", "n"] == 10
    assert out.loc["ALL", "accuracy"] == pytest.approx(0.7)
    hand = binary_metrics(Y10[:6], P10[:6])
    assert out.loc["XR_HAND", "f1"] == pytest.approx(hand["f1"])
    # The wrist rows are all negative: AUC undefined -> NaN.
    assert np.isnan(out.loc["XR_WRIST", "auc"])


# ------------------------------------------------------------ curves, thresholds


def test_roc_points_are_json_ready():
    roc = roc_points(Y10, P10)
    assert roc["auc"] == pytest.approx(20 / 24)
    assert np.isfinite(roc["thresholds"]).all()
    assert roc["thresholds"][0] == pytest.approx(1.9)
    assert roc["fpr"][0] == 0.0 and roc["tpr"][-1] == 1.0
    json.dumps(roc)
    assert roc_points([1, 1], [0.2, 0.3]) == {
        "fpr": [],
        "tpr": [],
        "thresholds": [],
        "auc": None,
    }


def test_calibration_bins_counts_and_brier():
    y = [0, 0, 1, 1, 1]
    p = [0.05, 0.15, 0.15, 0.85, 0.95]
    cal = calibration(y, p, n_bins=2)
    assert cal["counts"] == [3, 2]
    assert cal["prob_true"] == pytest.approx([1 / 3, 1.0])
    assert cal["prob_pred"] == pytest.approx([0.35 / 3, 0.9])
    expected = np.mean((np.array(p) - np.array(y)) ** 2)
    assert cal["brier"] == pytest.approx(expected)
    json.dumps(cal)
    # Empty bins are left out of all three lists.
    cal10 = calibration(y, p, n_bins=10)
    assert sum(cal10["counts"]) == 5
    assert len(cal10["counts"]) == len(cal10["prob_true"]) == 4


def test_threshold_table_matches_binary_metrics():
    y, p = _noisy_scores(120, seed=4)
    table = threshold_table(y, p)
    assert len(table) == 101
    assert table["threshold"].iloc[0] == 0.0
    assert table["sensitivity"].iloc[0] == 1.0
    for t in (0.0, 0.25, 0.5, 0.73, 1.0, 0.5 + 1e-9):
        row = threshold_table(y, p, thresholds=[t]).iloc[0]
        m = binary_metrics(y, p, threshold=t)
        assert row["sensitivity"] == pytest.approx(m["recall"])
        assert row["specificity"] == pytest.approx(m["specificity"])
        assert row["precision"] == pytest.approx(m["precision"])
        assert row["f1"] == pytest.approx(m["f1"])
        assert row["youden"] == pytest.approx(m["recall"] + m["specificity"] - 1)
        assert (row["tp"], row["fn"]) == (m["tp"], m["fn"])


def test_threshold_for_sensitivity_meets_target_and_is_highest():
    y, p = _noisy_scores(300, seed=5)
    for target in (0.5, 0.8, 0.95, 1.0):
        t = threshold_for_sensitivity(y, p, target)
        assert binary_metrics(y, p, threshold=t)["recall"] >= target
        higher = p[p > t]
        if higher.size:
            next_up = higher.min()
            assert binary_metrics(y, p, threshold=next_up)["recall"] < target
    # 4 positives: 0.8 needs 4/4 (3/4 = 0.75), so the lowest positive score, 0.3.
    assert threshold_for_sensitivity(Y10, P10, 0.8) == 0.3
    assert threshold_for_sensitivity(Y10, P10, 0.75) == 0.6
    with pytest.raises(ValueError, match="positives"):
        threshold_for_sensitivity([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="target"):
        threshold_for_sensitivity(Y10, P10, 0.0)


def test_class_weights_balanced():
    w = class_weights([0, 0, 0, 1])
    assert w == pytest.approx({0: 4 / 6, 1: 2.0})
    assert set(w) == {0, 1} and all(type(k) is int for k in w)
    assert all(type(v) is float for v in w.values())
    with pytest.raises(ValueError, match="positive"):
        class_weights([0, 0])
    with pytest.raises(ValueError, match="negative"):
        class_weights(np.array([1, 1]))


# ------------------------------------------------------------------ localization


def test_boxes_to_mask_clips_and_covers_partial_pixels():
    mask = boxes_to_mask((4, 5), [(3, 2, 10, 10), (-2, -2, 3, 3)])
    expected = np.zeros((4, 5), dtype=bool)
    expected[2:, 3:] = True
    expected[0, 0] = True
    np.testing.assert_array_equal(mask, expected)
    assert boxes_to_mask((4, 5, 3), [(0.5, 0.5, 1.0, 1.0)]).sum() == 4
    assert not boxes_to_mask((4, 5), []).any()


def test_pointing_game_and_mass_on_synthetic_heatmap():
    heatmap = np.zeros((20, 20))
    heatmap[5, 5] = 1.0  # the peak
    heatmap[15, 15] = 0.5
    box_on_peak = [(4, 4, 3, 3)]
    box_elsewhere = [(14, 14, 3, 3)]
    assert pointing_game(heatmap, box_on_peak)
    assert not pointing_game(heatmap, box_elsewhere)
    assert not pointing_game(heatmap, [(7, 7, 2, 2)])
    assert pointing_game(heatmap, [(7, 7, 2, 2)], tolerance=2)
    assert not pointing_game(np.zeros((8, 8)), [(0, 0, 8, 8)])

    assert mass_in_boxes(heatmap, box_on_peak) == pytest.approx(1.0 / 1.5)
    assert mass_in_boxes(heatmap, box_elsewhere) == pytest.approx(0.5 / 1.5)
    assert mass_in_boxes(heatmap, box_on_peak + box_elsewhere) == pytest.approx(1.0)
    assert mass_in_boxes(np.zeros((8, 8)), box_on_peak) == 0.0
    # Negative values carry no mass.
    assert mass_in_boxes(heatmap - 0.1 * (heatmap == 0), box_on_peak) == pytest.approx(
        1.0 / 1.5
    )
    # A uniform map scores the boxes' area fraction.
    uniform = np.ones((20, 20))
    assert mass_in_boxes(uniform, box_on_peak) == pytest.approx(9 / 400)


def test_localization_summary():
    records = [
        {"hit": True, "mass": 0.6, "box_area_fraction": 0.1},
        {"hit": False, "mass": 0.2, "box_area_fraction": 0.3},
        {"hit": True, "mass": 0.4, "box_area_fraction": 0.2},
        {"hit": True, "mass": 0.8, "box_area_fraction": 0.2},
    ]
    s = localization_summary(records)
    assert s["n"] == 4
    assert s["pointing_game"] == pytest.approx(0.75)
    lo, hi = s["pointing_game_ci"]
    assert 0.0 <= lo <= 0.75 <= hi <= 1.0
    assert s["mass_in_boxes"] == pytest.approx(0.5)
    assert s["box_area_fraction"] == pytest.approx(0.2)
    json.dumps(s)
    assert localization_summary(iter(records)) == s
    empty = localization_summary([])
    assert empty["n"] == 0 and empty["pointing_game"] is None


def test_map_reliability_compares_each_bin_of_map_values_with_the_share_inside_boxes():
    # 10 x 10 image: a 2 x 5 box where the map says 0.7, 0.7 on 10 more pixels outside, 0.05 elsewhere
    heat = np.full((10, 10), 0.05)
    heat[0:2, 0:5] = 0.7
    heat[5, :] = 0.7
    counts = reliability_counts(heat, [(0, 0, 5, 2)], (10, 10))
    assert counts.shape == (8, 3) and counts[:, 0].sum() == 100 and counts[:, 2].sum() == 10
    normal = reliability_counts(np.ones((5, 5)), [], (10, 10))  # resized to the image; 1.0 is in the last bin
    table = map_reliability([counts, normal])
    assert [(b["low"], b["high"]) for b in table][0] == (0.0, 0.01) and table[-1]["high"] == 1.0
    by_low = {b["low"]: b for b in table}
    assert by_low[0.03] == {"low": 0.03, "high": 0.1, "pixels": 80, "mean": pytest.approx(0.05), "in_boxes": 0.0}
    assert by_low[0.6]["pixels"] == 20 and by_low[0.6]["in_boxes"] == pytest.approx(0.5)
    assert by_low[0.6]["mean"] == pytest.approx(0.7)
    assert by_low[0.8] == {"low": 0.8, "high": 1.0, "pixels": 100, "mean": pytest.approx(1.0), "in_boxes": 0.0}
    assert by_low[0.0]["mean"] is None and by_low[0.0]["in_boxes"] is None
