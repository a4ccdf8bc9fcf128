"""The pixel limit's memory figures are not understated: compress and decompress of a 1 MP image,
each in a fresh process as the CLI runs them, stay within the fixed part plus the table's MB per
megapixel (what ``pixel_limit`` assumes)."""

from __future__ import annotations

import pytest

from benchmarks.memory import measure
from icmh_hub.coding import FIXED_MB, memory_per_megapixel


@pytest.mark.slow
@pytest.mark.parametrize("codec, quality", [("mbt2018-mean", 3), ("mbt2018-mean-demo", 4)])
def test_coding_stays_within_what_the_limit_assumes(tmp_path, codec, quality):
    peaks = measure(codec, quality, False, 1024, 1024, threads=2, folder=str(tmp_path))
    bound = FIXED_MB + memory_per_megapixel(codec) * 1024 * 1024 / 1e6
    for operation, peak in peaks.items():
        assert peak["peak_mb"] <= bound, (operation, peak["peak_mb"], bound)
