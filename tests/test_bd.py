"""Bjontegaard deltas: known answers, a published worked example, and the errors on bad curves."""

from __future__ import annotations

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


def test_a_cubic_that_overshoots_is_refused_and_pchip_is_not():
    # a curve that saturates: the cubic through 4 points bends back, pchip stays monotone
    rates, acc = [0.05, 0.1, 0.2, 0.8], [10.0, 60.0, 70.0, 71.0]
    test = [a + 1 for a in acc]
    with pytest.raises(IcmhError, match="pchip"):
        bd_rate(rates, acc, rates, test, "cubic")
    assert -100 < bd_rate(rates, acc, rates, test, "pchip") < 0


def test_proxy_curve_that_once_gave_a_wild_cubic():
    # measured in the proxy experiment (seg, base codec vs naive adapter): the test curve's top two
    # points are 0.0003 apart, and the cubic through it reaches rates of 10^37 bpp (BD-rate +2e22 %)
    base = ([0.3368, 0.5772, 1.117, 1.4632], [52.21, 61.36, 66.60, 68.08])
    naive = ([0.2553, 0.4912, 1.0386, 1.4356], [52.02, 65.85, 69.48, 69.51])
    with pytest.raises(IcmhError, match="not monotonic"):
        bd_rate(*base, *naive, method="cubic")
    assert -60 < bd_rate(*base, *naive, method="pchip") < -20
    assert 0 < bd_metric(*base, *naive, method="pchip") < 10


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
