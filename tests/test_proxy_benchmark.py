"""The proxy benchmark's own arithmetic: BD rows against the base, and the one-point rate saving."""

from __future__ import annotations

import pytest

from benchmarks.proxy import bd_table
from benchmarks.proxy_ablation import saving_vs_base

BASE = [{"bpp": 0.25, "top1": 0.5}, {"bpp": 0.5, "top1": 0.6}, {"bpp": 1.0, "top1": 0.7}, {"bpp": 2.0, "top1": 0.75}]


def test_saving_is_read_off_the_base_points():
    assert saving_vs_base(BASE, {"bpp": 0.25, "top1": 0.6}, "top1") == pytest.approx(-50.0)
    # halfway in accuracy between 0.5 and 1.0 bpp is their geometric mean (linear in log-rate)
    assert saving_vs_base(BASE, {"bpp": 0.5 ** 0.5, "top1": 0.65}, "top1") == pytest.approx(0.0)
    assert saving_vs_base(BASE, {"bpp": 4.0, "top1": 0.75}, "top1") == pytest.approx(100.0)


def test_no_saving_outside_the_base_range():
    assert saving_vs_base(BASE, {"bpp": 0.3, "top1": 0.8}, "top1") is None
    assert saving_vs_base(BASE, {"bpp": 0.1, "top1": 0.4}, "top1") is None


def test_bd_table_measures_rows_against_base_and_reports_bad_curves():
    curves = {"base": BASE,
              "shifted": [{"bpp": p["bpp"] / 2, "top1": p["top1"]} for p in BASE],
              "bent": [{"bpp": p["bpp"], "top1": t} for p, t in zip(BASE, (0.6, 0.7, 0.65, 0.8))]}
    table = bd_table(curves, "top1")
    assert table["shifted"]["bd_rate"] == pytest.approx(-50.0, abs=0.01)
    assert table["shifted"]["bd_top1"] > 0
    assert table["bent"] == {"bd_rate": None, "bd_top1": None}  # not monotonic: n/a, not a number
