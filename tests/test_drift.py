"""Drift figures: histograms, quantiles and the population stability index on known cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reviewpipe import drift


def test_histogram_bins_are_left_closed_with_one_bin_past_the_last_edge():
    values = np.array([0, 9, 10, 19, 20, 100])
    assert drift.histogram(values, [10, 20]) == [pytest.approx(2 / 6), pytest.approx(2 / 6), pytest.approx(2 / 6)]
    assert drift.histogram(np.array([]), [10]) == [0.0, 0.0]


def test_psi_is_zero_for_equal_shares_and_follows_its_definition():
    assert drift.psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    want = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert drift.psi([0.5, 0.5], [0.8, 0.2]) == pytest.approx(want, abs=1e-6)
    # an empty bin is floored at EPS, so the index stays finite
    floored = (drift.EPS - 0.5) * math.log(drift.EPS / 0.5) + (1 - 0.5) * math.log(1 / 0.5)
    assert drift.psi([0.5, 0.5], [0.0, 1.0]) == pytest.approx(floored, abs=1e-6)


def test_training_profile_and_comparison():
    lengths = np.arange(1, 101)  # 1..100
    oov = np.ones(100, np.int64)
    probs = np.linspace(0, 1, 11)  # 0.0, 0.1, ..., 1.0
    p = drift.training_profile(lengths, oov, probs, threshold=0.5)
    assert p["rows"] == 100 and p["oov_rate"] == round(100 / 5050, 6)
    assert p["length_quantiles"] == {"p5": 5.95, "p25": 25.75, "p50": 50.5, "p75": 75.25, "p95": 95.05}
    assert p["length_edges"] == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert p["length_histogram"] == [0.09] + [0.1] * 8 + [0.11]
    assert p["share_positive"] == round(6 / 11, 6) and sum(p["probability_histogram"]) == pytest.approx(1)
    same = {"length_histogram": p["length_histogram"], "probability_histogram": p["probability_histogram"]}
    assert drift.compare(p, same, 0.2) == {"psi_length": 0.0, "psi_probability": 0.0, "threshold": 0.2,
                                           "drift": False}
    longer = {**same, "length_histogram": [0.0] * 9 + [1.0]}  # every review past the longest decile
    got = drift.compare(p, longer, 0.2)
    assert got["drift"] is True and got["psi_length"] > 5 and got["psi_probability"] == 0.0
