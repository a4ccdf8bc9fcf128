"""Why does SFMA not beat the naive adapter on the proxy? Variants and seeds at one rate point.

Runs after ``python -m benchmarks.proxy`` and reuses its base codecs, task models and training
data (same cache). At one rate point per task it trains the adapter variants below with three
seeds each, plus SFMA and naive for four times the steps, and measures every run with real
bitstreams on a fresh held-out set four times the size of the main one (standard error of a
top-1 near 0.7: about 1 point instead of 2). The summary figure per run is the rate saving
against the base codec at the same accuracy: the base's rate at that accuracy is read off its
four measured points (linear in log-rate between neighbours), so no curve fit is involved.

``--size 128`` asks whether the picture changes on larger images (objects scale with the image,
so they cover four times as many latent positions): the same base codecs (convolutional, trained
on 64x64), task models and training data made at that size, SFMA against the naive adapter, two
seeds, on as many held-out pixels as the 64x64 run.

    python -m benchmarks.proxy_ablation              # about 30 min on 2 cores after the main run
    python -m benchmarks.proxy_ablation --size 128   # about 30 min (--q 2: 15 more)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.proxy import (QUALITIES, ROOT, TASKS, Config, codec_folder, log, measure, row_codec,
                              train_adapter, train_task_models, write_folder)
from icmh_hub import build_adapters
from icmh_hub.codecs.demo import DEMO_CODEC
from icmh_hub.demo.proxy import ProxyBatch, make_proxy
from icmh_hub.demo.models import METRICS, load_model
from icmh_hub.hub.index import INDEX_ENV

Q = 1  # the low-rate point: on 64x64 images the adapted accuracies stay inside the base curve's range there
SEEDS = (0, 1, 2)
LONG = 4  # the long runs train this many times the main run's steps
# (label, variant, middle width): SFMA and its two branches alone at the main run's width, the
# naive adapter at matched parameters and at the same width, SFMA as wide as the matched naive one
VARIANTS = (("sfma d16", "sfma", 16), ("naive d56", "naive", 56), ("sma d16", "sma", 16),
            ("fma d16", "fma", 16), ("naive d16", "naive", 16), ("sfma d56", "sfma", 56))
LONG_VARIANTS = (("sfma d16", "sfma", 16), ("naive d56", "naive", 56))


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which runs a study trains: variants x seeds, plus the long runs."""

    variants: tuple[tuple[str, str, int], ...] = VARIANTS
    seeds: tuple[int, ...] = SEEDS
    long_variants: tuple[tuple[str, str, int], ...] = LONG_VARIANTS


SIZE_PLAN = Plan(variants=LONG_VARIANTS, seeds=(0, 1), long_variants=())  # the larger-image study


def saving_vs_base(base: list[dict[str, float]], point: dict[str, float], metric: str) -> float | None:
    """Rate change (%) of ``point`` against the base codec at the same accuracy, or None when
    that accuracy lies outside the base's measured range (no extrapolation)."""
    accuracy = [p[metric] for p in base]
    if not (min(accuracy) <= point[metric] <= max(accuracy)) or np.any(np.diff(accuracy) <= 0):
        return None
    log_rate = np.interp(point[metric], accuracy, np.log([p["bpp"] for p in base]))
    return round(100 * (point["bpp"] / float(np.exp(log_rate)) - 1), 1)


def task_runs(config: Config, task: str, work: Path, test: ProxyBatch, plan: Plan, q: int) -> dict[str, Any]:
    """Train (or reuse) every run of one task, then measure them and the base codec."""
    torch.set_num_threads(1)
    folder = work / "train"
    runs = [(label, variant, dim, seed, config.adapter_steps) for label, variant, dim in plan.variants for seed in plan.seeds]
    runs += [(f"{label}, {LONG}x steps", variant, dim, config.seed, LONG * config.adapter_steps)
             for label, variant, dim in plan.long_variants]
    paths = [train_adapter(config, task, q, variant, dim, folder, work, seed=seed, steps=steps)
             for _, variant, dim, seed, steps in runs]
    model = load_model(task, work / f"proxy-{task}.safetensors")
    base = [{"q": level, **measure(row_codec("base", task, level, None), task, model, test)} for level in QUALITIES]
    measured: dict[str, list[dict[str, Any]]] = {}
    for (label, variant, dim, seed, steps), path in zip(runs, paths):
        point = measure(row_codec(variant, task, q, path), task, model, test)
        point["saving"] = saving_vs_base(base, point, METRICS[task])
        measured.setdefault(label, []).append({"seed": seed, "steps": steps, **point})
    return {"base": base, "runs": measured}


def parameters(variant: str, dim: int) -> int:
    return sum(p.numel() for p in build_adapters(DEMO_CODEC, 1, variant=variant, middle_dim=dim).parameters())


def _mean_sd(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    """One table per task: mean ± standard deviation over seeds."""
    size = {label: (variant, dim) for label, variant, dim in VARIANTS}
    lines = []
    for task, record in results["tasks"].items():
        metric = METRICS[task]
        q = results["q"]
        base = record["base"][q - 1]
        lines += [f"**{task}**, q{q}, {results['size']}x{results['size']} images (base codec: {base['bpp']:.3f} bpp, "
                  f"{metric} {base[metric]:.3f}, {base['object_bits']:.1%} of its bits on the object; "
                  f"{results['test_images']} held-out images)", "",
                  f"| adapter | parameters | runs | bpp | {metric} | bits on the object | rate vs base at equal {metric} |",
                  "|---|---|---|---|---|---|---|"]
        for label, points in record["runs"].items():
            variant, dim = size[label.split(",")[0]]
            savings = [p["saving"] for p in points if p["saving"] is not None]
            saving = _mean_sd(savings, 1) + " %" if len(savings) == len(points) else "n/a (outside the base's range)"
            lines.append(f"| {label} | {parameters(variant, dim):,} | {len(points)} | {_mean_sd([p['bpp'] for p in points], 3)} | "
                         f"{_mean_sd([p[metric] for p in points], 3)} | {_mean_sd([100 * p['object_bits'] for p in points], 1)} % | {saving} |")
        lines.append("")
    return "\n".join(lines)


def prepare_size(config: Config, work: Path) -> None:
    """Training images and task models at ``config.size`` (cached in ``work``), one task per core."""
    train = make_proxy(config.train_images, config.size, seed=config.seed + 1)
    if not (work / "train").is_dir():
        write_folder(train, work / "train")
    train = train.as_8bit()
    test = make_proxy(config.test_images, config.size, seed=config.seed + 2).as_8bit()
    with ProcessPoolExecutor(len(TASKS), mp_context=multiprocessing.get_context("fork")) as pool:
        records = list(pool.map(train_task_models, [config] * len(TASKS), [train] * len(TASKS), [test] * len(TASKS),
                                [work] * len(TASKS), [(task,) for task in TASKS]))
    log(f"task models at {config.size}x{config.size}: {records}")


def run(config: Config, out: Path, size: int, q: int = Q) -> dict[str, Any]:
    work = out / "work"
    if not codec_folder(config, work).is_dir():
        raise SystemExit(f"no trained proxy zoo under {work}; run `python -m benchmarks.proxy` first")
    started = time.time()
    os.environ[INDEX_ENV] = str(work / "index.json")  # the base codecs of the main run, at any size
    plan, count, name = Plan(), 4 * config.test_images, "ablation"
    if size != config.size:
        count = max(1, 4 * config.test_images * config.size**2 // size**2)  # as many held-out pixels
        config, work, plan, name = dataclasses.replace(config, size=size), work / f"size{size}", SIZE_PLAN, f"ablation-size{size}"
        work.mkdir(exist_ok=True)
        prepare_size(config, work)
    name += "" if q == Q else f"-q{q}"
    test = make_proxy(count, config.size, seed=config.seed + 3).as_8bit()  # not the main run's test set
    with ProcessPoolExecutor(len(TASKS), mp_context=multiprocessing.get_context("fork")) as pool:  # one core per task
        done = list(pool.map(task_runs, [config] * len(TASKS), TASKS, [work] * len(TASKS), [test] * len(TASKS),
                             [plan] * len(TASKS), [q] * len(TASKS)))
    results = {"q": q, "size": config.size, "test_images": len(test.images), "tasks": dict(zip(TASKS, done)),
               "seconds": round(time.time() - started)}
    (out / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    log(f"done in {results['seconds']} s; results in {out / f'{name}.json'}")
    print(markdown(results))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "proxy")
    parser.add_argument("--size", type=int, default=Config().size, help="image side (default: the main run's)")
    parser.add_argument("--q", type=int, choices=QUALITIES, default=Q, help="the rate point the adapters are trained at")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run(Config(), args.out, args.size, args.q)


if __name__ == "__main__":
    main()
