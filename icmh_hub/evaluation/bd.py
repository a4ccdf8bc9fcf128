"""Bjontegaard deltas between two rate-metric curves, on top of the PyPI ``bjontegaard`` package.

``bd_rate``: average rate difference (%) at equal metric (negative = the test curve saves bits).
``bd_metric``: average metric difference at equal rate (BD-PSNR with any metric in place of PSNR:
BD-acc, BD-mAP). Both fit over log-rate as VCEG-M33 does; ``method`` is ``"cubic"`` (a cubic
polynomial through the points, the usual choice) or ``"pchip"`` (piecewise cubic Hermite, which
cannot overshoot between 4 points; what the JCT-VC / JVET sheets use).

The package warns and returns NaN on bad curves; here every bad input is an IcmhError that says
what to change, since a silent NaN or a wild cubic would end up in a table: a fit that does not
rise over the integrated interval is refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import bjontegaard
import numpy as np

from ..errors import BDError, unknown_name

METHODS = ("cubic", "pchip")
MIN_POINTS = 4


def _curve(rates: Sequence[float], metrics: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray]:
    """One curve as arrays sorted by rate, after checking it is a usable rate-metric curve."""
    rate = np.asarray(rates, dtype=float).ravel()
    metric = np.asarray(metrics, dtype=float).ravel()
    if rate.size != metric.size:
        raise BDError(f"{name} curve has {rate.size} rates but {metric.size} metric values; give one of each per point")
    if rate.size < MIN_POINTS:
        raise BDError(f"{name} curve has {rate.size} points; a Bjontegaard delta needs at least {MIN_POINTS} (e.g. q1-q4)")
    if not (np.all(np.isfinite(rate)) and np.all(np.isfinite(metric))):
        raise BDError(f"{name} curve has NaN or infinite values: {rate.tolist()} / {metric.tolist()}")
    if np.any(rate <= 0):
        raise BDError(f"{name} curve has a rate <= 0 ({rate.tolist()}); rates must be positive (bpp)")
    order = np.argsort(rate)
    rate, metric = rate[order], metric[order]
    if np.any(np.diff(rate) <= 0) or np.any(np.diff(metric) <= 0):
        raise BDError(
            f"{name} curve is not strictly monotonic (metric must rise with rate): rates {rate.tolist()}, "
            f"metrics {metric.tolist()}; drop the points that break it or evaluate on more images"
        )
    return rate, metric


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise unknown_name("Bjontegaard interpolation method", method, METHODS)
    return method


def _overlap(a: np.ndarray, b: np.ndarray, axis: str) -> None:
    if min(a.max(), b.max()) <= max(a.min(), b.min()):
        raise BDError(
            f"the two curves do not overlap in {axis} ([{a.min():g}, {a.max():g}] vs [{b.min():g}, {b.max():g}]); "
            "evaluate more quality levels so that their ranges overlap"
        )


def _fit(function, ref: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], method: str,
         x_ref: np.ndarray, x_test: np.ndarray) -> float:
    """Call the package (its overlap warning silenced: the overlap is checked here already) and
    check that both fitted curves rise over the interval it integrates. A cubic through a curve
    that saturates can swing far outside the points (rates of 10^30 bpp have been seen), and the
    delta it gives is then meaningless; pchip cannot overshoot."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value, *fits = function(*ref, *test, method, require_matching_points=False, interpolators=True, min_overlap=0.0)
    grid = np.linspace(max(x_ref.min(), x_test.min()), min(x_ref.max(), x_test.max()), 257)
    for name, fitted in zip(("reference", "test"), fits):
        if np.any(np.diff(fitted(grid)) < 0):
            raise BDError(
                f"the {method} fit through the {name} curve is not monotonic over the interval the delta integrates "
                f"(it overshoots between the points, typically where accuracy saturates), so its result would be "
                f"meaningless; use method='pchip', or measure points that are further apart"
            )
    return float(value)


def bd_rate(
    r_ref: Sequence[float], m_ref: Sequence[float], r_test: Sequence[float], m_test: Sequence[float], method: str = "cubic"
) -> float:
    """Bjontegaard delta rate in %: mean rate change of ``test`` vs ``ref`` at equal metric.

    -50 means the test curve needs half the bits for the same accuracy; 0 means the same curve.
    """
    ref, test = _curve(r_ref, m_ref, "reference"), _curve(r_test, m_test, "test")
    _overlap(ref[1], test[1], "metric")
    return _fit(bjontegaard.bd_rate, ref, test, _check_method(method), ref[1], test[1])


def bd_metric(
    r_ref: Sequence[float], m_ref: Sequence[float], r_test: Sequence[float], m_test: Sequence[float], method: str = "cubic"
) -> float:
    """Bjontegaard delta metric: mean metric gain of ``test`` vs ``ref`` at equal rate (BD-PSNR form),
    in the metric's own unit (percentage points for top-1 or mAP in %)."""
    ref, test = _curve(r_ref, m_ref, "reference"), _curve(r_test, m_test, "test")
    _overlap(np.log10(ref[0]), np.log10(test[0]), "rate")
    return _fit(bjontegaard.bd_psnr, ref, test, _check_method(method), np.log10(ref[0]), np.log10(test[0]))
