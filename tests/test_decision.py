"""The decision rules have one home: the verdict at the threshold, and how members and images combine."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mura_core import decision
from mura_core.vocabulary import LEVELS, METRIC_LABELS, METRICS, label_text, level_key


def test_verdict_at_the_threshold_is_abnormal():
    assert decision.verdict(0.5, 0.5) == "abnormal" and decision.verdict(0.4999, 0.5) == "normal"
    assert decision.verdict(None, 0.5) is None and decision.verdict(math.nan, 0.5) is None
    assert decision.is_abnormal(0.5, 0.5) is True
    assert decision.predicted_labels([0.2, 0.5, 0.9], 0.5).tolist() == [0, 1, 1]


def test_study_probability_is_the_mean_of_readable_images():
    assert decision.study_probability([0.2, None, 0.6, math.nan]) == pytest.approx(0.4)
    assert decision.study_probability([None]) is None
    assert decision.ensemble_probability([0.1, 0.3]) == pytest.approx(0.2)


def test_aggregate_studies_uses_the_same_rule():
    table = pd.DataFrame({"study": ["s1", "s1", "s2", ""], "label": [1, 1, 0, 0], "path": ["a", "b", "c", "d"],
                          "p": [0.2, 0.6, 0.3, 0.9]})
    out = decision.aggregate_studies(table, "p")
    assert out["study"].tolist() == ["s1", "s2", "d"]
    assert out["p"].tolist() == pytest.approx([decision.study_probability([0.2, 0.6]), 0.3, 0.9])
    assert out["n_images"].tolist() == [2, 1, 1]


def test_vocabulary():
    assert [level_key(level) for level in LEVELS] == ["image_level", "study_level"]
    with pytest.raises(ValueError, match="image"):
        level_key("patient")
    assert set(METRIC_LABELS) == set(METRICS)
    assert label_text("fractured") == "abnormal" and label_text(np.int64(0)) == "normal" and label_text("?") == ""


def test_a_members_probability_weighs_its_classifier_and_its_lesion_maps_peak():
    assert decision.member_probability(0.64, 0.25, 0.0) == pytest.approx(0.64)  # the classifier alone
    assert decision.member_probability(0.64, 0.25, 1.0) == pytest.approx(0.25)  # the map alone
    assert decision.member_probability(0.64, 0.25, 0.5) == pytest.approx(0.4)  # sqrt(0.64 * 0.25)
    np.testing.assert_allclose(decision.member_probability([0.9, 0.9], [0.0, 1.0], 0.5), [0.0, 0.9 ** 0.5])
    with pytest.raises(ValueError, match="map_evidence must lie in"):
        decision.member_probability(0.5, 0.5, 1.5)
