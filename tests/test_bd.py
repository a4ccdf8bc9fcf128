"""Bjontegaard deltas: known answers, a published worked example, and the errors on bad curves."""

from __future__ import annotations

import math

import pytest

from icmh_hub import IcmhError, bd_metric, bd_rate

RATES = [0.1, 0.2, 0.4, 0.8]
ACC = [50.0, 60.0, 66.0, 70.0]
METHODS = ["cubic", "pchip"]


@pytest.mark.parametrize("method", METHODS)
def test_same_curve_is_zero(method):
    assert bd_rate(RATES, ACC, RATES, ACC, method=method) == pytest.approx(0.0, abs=1e-9)
    assert bd_metric(RATES, ACC, RATES, ACC, method=method) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_half_the_rate_is_minus_fifty_percent(method):
    half = [r / 2 for r in RATES]
    assert bd_rate(RATES, ACC, half, ACC, method=method) == pytest.approx(-50.0, abs=1e-6)
    # and the other way round: twice the bits
    assert bd_rate(half, ACC, RATES, ACC, method=method) == pytest.approx(100.0, abs=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_constant_metric_shift(method):
    shifted = [a + 3.5 for a in ACC]
    assert bd_metric(RATES, ACC, RATES, shifted, method=method) == pytest.approx(3.5, abs=1e-9)
    assert bd_metric(RATES, shifted, RATES, ACC, method=method) == pytest.approx(-3.5, abs=1e-9)


def test_order_of_points_does_not_matter():
    order = [2, 0, 3, 1]
    shuffled_r, shuffled_m = [RATES[i] for i in order], [ACC[i] for i in order]
    half = [r / 2 for r in RATES]
    assert bd_rate(shuffled_r, shuffled_m, half, ACC) == pytest.approx(bd_rate(RATES, ACC, half, ACC))


def test_better_curve_saves_bits_and_gains_accuracy():
    better = [a + 5 for a in ACC]
    assert bd_rate(RATES, ACC, RATES, better) < 0
    assert bd_metric(RATES, ACC, RATES, better) > 0


# Published worked example: google/compare-codecs, lib/visual_metrics_unittest.py
# (test_bdsnr / test_bdrate). Four (rate, metric) points on a line, rates 10..40; the "slope=2"
# set has metric = 2 * rate. Expected there: BD-PSNR(set1 -> set2) = 21.6 +- 0.5,
# BD-rate(set1 -> set2) = -50 +- 0.5 and BD-rate(set2 -> set1) = 100 +- 2, constant offset 2 -> 2.0.
# That implementation is the VCEG-M33 cubic fit over log-rate, i.e. our method="cubic".
GOOGLE_RATES = [10.0, 20.0, 30.0, 40.0]
GOOGLE_SET1 = [10.0, 20.0, 30.0, 40.0]
GOOGLE_SET2 = [20.0, 40.0, 60.0, 80.0]
GOOGLE_SET3 = [12.0, 22.0, 32.0, 42.0]


def test_published_example_compare_codecs():
    assert bd_metric(GOOGLE_RATES, GOOGLE_SET1, GOOGLE_RATES, GOOGLE_SET2) == pytest.approx(21.6, abs=0.5)
    assert bd_metric(GOOGLE_RATES, GOOGLE_SET2, GOOGLE_RATES, GOOGLE_SET1) == pytest.approx(-21.6, abs=0.5)
    assert bd_metric(GOOGLE_RATES, GOOGLE_SET1, GOOGLE_RATES, GOOGLE_SET3) == pytest.approx(2.0, abs=1e-9)
    assert bd_rate(GOOGLE_RATES, GOOGLE_SET1, GOOGLE_RATES, GOOGLE_SET2) == pytest.approx(-50.0, abs=0.5)
    assert bd_rate(GOOGLE_RATES, GOOGLE_SET2, GOOGLE_RATES, GOOGLE_SET1) == pytest.approx(100.0, abs=2.0)


def test_pchip_differs_from_cubic_where_the_cubic_overshoots():
    # a curve that saturates: the cubic through 4 points bends, pchip stays monotone
    rates, acc = [0.05, 0.1, 0.2, 0.8], [10.0, 60.0, 70.0, 71.0]
    test = [a + 1 for a in acc]
    cubic, pchip = bd_rate(rates, acc, rates, test, "cubic"), bd_rate(rates, acc, rates, test, "pchip")
    assert math.isfinite(cubic) and math.isfinite(pchip) and cubic != pytest.approx(pchip, abs=1e-3)


@pytest.mark.parametrize(
    "r_test, m_test, message",
    [
        ([0.1, 0.2, 0.4], [50, 60, 66], "at least 4"),
        ([0.1, 0.2, 0.4, 0.8], [50, 60, 66], "one of each"),
        ([0.1, 0.2, 0.4, 0.8], [50, 66, 60, 70], "monotonic"),
        ([0.1, 0.2, 0.2, 0.8], [50, 60, 66, 70], "monotonic"),
        ([0.0, 0.2, 0.4, 0.8], [50, 60, 66, 70], "positive"),
        ([0.1, 0.2, 0.4, 0.8], [50, 60, float("nan"), 70], "NaN"),
    ],
)
def test_bad_curves_raise(r_test, m_test, message):
    for function in (bd_rate, bd_metric):
        with pytest.raises(IcmhError, match=message):
            function(RATES, ACC, r_test, m_test)


def test_no_overlap_raises():
    with pytest.raises(IcmhError, match="do not overlap"):
        bd_rate(RATES, ACC, RATES, [a + 100 for a in ACC])  # metric ranges are disjoint
    with pytest.raises(IcmhError, match="do not overlap"):
        bd_metric(RATES, ACC, [r * 100 for r in RATES], ACC)  # rate ranges are disjoint


def test_unknown_method():
    with pytest.raises(IcmhError, match="did you mean 'pchip'"):
        bd_rate(RATES, ACC, RATES, ACC, method="pchp")
