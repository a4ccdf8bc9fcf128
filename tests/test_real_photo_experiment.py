"""benchmarks.real_photo_experiment's statistics: per-crop means with standard errors, and BD
figures with paired-bootstrap standard errors (the training itself runs in the benchmark)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bjontegaard")
from benchmarks.real_photo_experiment import bd_with_se, summary  # noqa: E402


def test_summary_reports_mean_and_standard_error_per_crop():
    values = {"bpp": np.array([0.1, 0.3]), "agreement": np.array([1.0, 0.0])}
    out = summary(values)
    assert out["bpp"] == pytest.approx(0.2) and out["bpp_se"] == pytest.approx(0.1)
    assert out["agreement"] == 50.0 and out["agreement_se"] == pytest.approx(50.0)  # in percent


def test_bd_figures_carry_bootstrap_standard_errors():
    rng = np.random.default_rng(0)
    crops = 200
    rates = (0.2, 0.4, 0.8, 1.6)
    accuracy = (0.3, 0.55, 0.75, 0.9)

    def curve(rate_factor: float) -> list[dict[str, np.ndarray]]:
        return [{"bpp": rate * rate_factor * rng.uniform(0.8, 1.2, crops), "agreement": (rng.random(crops) < a).astype(float)}
                for rate, a in zip(rates, accuracy)]

    table = bd_with_se({"base": curve(1.0), "sfma": curve(0.7)}, draws=40)
    sfma = table["sfma"]
    assert sfma["bd_rate"] < -10  # 30% fewer bits at the same agreement, up to sampling noise
    assert sfma["bd_rate_se"] > 0 and sfma["bd_agreement_se"] > 0 and sfma["bd_rate_bootstrap_draws"] >= 32


def test_per_crop_scores_lossless_coding_as_full_agreement(monkeypatch):
    """Against the uncompressed crops' own top-1 and features: a coding that changes nothing
    agrees on every crop with zero feature distortion, and bpp counts the coded bits."""
    from types import SimpleNamespace

    import torch

    from benchmarks import real_photo_experiment as experiment
    from icmh_hub.core.task_models import task_model_features

    crops = torch.rand(5, 3, 64, 64)
    monkeypatch.setattr(experiment, "code", lambda codec, x, estimate: SimpleNamespace(x_hat=x.clone(), bits=[64.0] * len(x), pixels=64 * 64))
    features = task_model_features("proxy-cls", weights=None)
    reference = experiment.reference_of(crops, features, torch.device("cpu"))
    per = experiment.per_crop(torch.nn.Linear(1, 1), crops, features, reference, chunk=2)
    assert per["agreement"].tolist() == [1.0] * 5 and per["distortion"].max() < 1e-9  # batch-size rounding only
    assert per["bpp"].tolist() == [64.0 / (64 * 64)] * 5
    shuffled = experiment.per_crop(torch.nn.Linear(1, 1), crops.flip(0), features, reference, chunk=2)
    assert shuffled["distortion"].max() > 0  # a different crop in each place is measured as such


def test_ship_writes_a_valid_index_with_the_held_out_figures_in_each_entry(tmp_path):
    """``--ship``: base codecs and SFMA adapters copied beside an index that loads, each entry
    with its figures and the human codec's on the same crops, and a card."""
    import shutil
    from importlib.resources import files

    from benchmarks.real_photo_experiment import CONFIG, ship
    from icmh_hub.hub.index import load_index

    demo = files("icmh_hub.index") / "demo"
    work = tmp_path / "work"
    work.mkdir()
    bases, rows = {}, {}
    for q in (1, 2, 3, 4):
        bases[q] = Path(shutil.copy(str(demo / f"mbt2018-mean-demo-q{q}.safetensors"), work / f"mbt2018-mean-photo-q{q}.safetensors"))
        rows[q] = {"sfma": Path(shutil.copy(str(demo / f"mbt2018-mean-demo-cls-q{q}.safetensors"), work / f"a{q}.safetensors"))}
    point = {"bpp": 0.5, "agreement": 80.0, "psnr": 25.0}
    results = {"heldout_crops": 293, "photographs": {"heldout": ["a", "b"]},
               "curves": {"sfma": [{"q": q, **point} for q in (1, 2, 3, 4)], "base": [{"q": q, **point, "bpp": 0.6} for q in (1, 2, 3, 4)]}}
    index = ship(CONFIG, bases, rows, results, tmp_path / "adapters" / "photo")
    loaded = load_index(index)
    entry = loaded.entries["mbt2018-mean-photo/cls/q2"]
    assert entry.codec == "mbt2018-mean-photo" and entry.task_model == "efficientnet-lite0"
    assert {m["metric"]: m["value"] for m in entry.metrics} == {"bpp_actual": 0.5, "top1_agreement": 0.8, "psnr": 25.0,
                                                               "human_bpp_actual": 0.6, "human_top1_agreement": 0.8}
    assert all(m["dataset"].startswith("real-photos-heldout (293 crops of 2") for m in entry.metrics)
    assert (tmp_path / "adapters" / "photo" / "mbt2018-mean-photo-cls-q2.md").is_file()
    assert {("mbt2018-mean-photo", q) for q in (1, 2, 3, 4)} <= set(loaded.bases)
