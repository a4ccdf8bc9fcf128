"""Scalable coding on the proxy (issue 19; the paper's Sec. 4.6 and App. F): one bitstream, a
machine base layer and a human enhancement layer.

On the demo zoo's frozen base codecs (mbt2018-mean-demo q1..q4, shipped) and the shipped proxy
task models, for cls and seg at the four rate points, trains ``scalable-sfma`` (mask generator +
decoder SFMAs) and ``scalable-mask`` (the mask alone, ICMH-Net's setting) with the loss
``R(base layer) + lambda * D`` (the proxy experiment's lambdas, steps and batch), then measures
on the held-out images with real bitstreams:

- the base layer's rate (z + the masked part of y) and the machine accuracy of its picture,
  against the base codec's rate-accuracy curve (BD-rate, pchip);
- the full stream's rate and the PSNR of the human picture, which must equal the base codec's
  picture bit for bit (checked on every image);
- how the bits split between the layers.

    python -m benchmarks.proxy_scalable [--scale 0.1] [--ship]

``--ship`` copies the scalable-sfma adapters into ``adapters/demo`` with cards and an index
(``adapters/demo-scalable.json``). A rerun reuses its trained runs.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from icmh_hub._io import atomic_write_json
from icmh_hub.assemble import build_base
from icmh_hub.codecs.demo import DEMO_CODEC
from icmh_hub.coding import code
from icmh_hub.core.attach import AdaptedCodec, attach
from icmh_hub.demo.models import METRICS, load_model, task_features, task_score
from icmh_hub.demo.proxy import ProxyBatch, make_proxy
from icmh_hub.demo.run import mosaic
from icmh_hub.evaluation import plots
from icmh_hub.evaluation.metrics import psnr
from icmh_hub.formats.adapter_files import load_adapters
from icmh_hub.training.trainer import Trainer, TrainOptions

from .proxy import (
    BD_METHOD, QUALITIES, SCALABLE_INDEX, SHIP, TASKS, Config, bd_rows, bd_table, command_line, log, measured, shipped_entry,
    write_folder,
)

VARIANTS = ("scalable-sfma", "scalable-mask")
CHUNK = 64


def train_scalable(config: Config, task: str, q: int, variant: str, folder: Path, work: Path) -> Path:
    """One scalable run, cached: runs that differ in a setting land in different folders."""
    tag = f"l{config.lmbda(task, q)}-s{config.adapter_steps}-lr{config.adapter_lr}-d{config.middle_dim}"
    run_dir = work / "runs" / f"{task}-q{q}-{variant}-{tag}"
    done = run_dir / f"{DEMO_CODEC}-{task}-q{q}-{variant}.safetensors"
    if done.is_file():
        return done
    started = time.time()
    options = TrainOptions(lmbda=config.lmbda(task, q), steps=config.adapter_steps, batch_size=config.adapter_batch, crop=config.size,
                           seed=config.seed, lr=config.adapter_lr, out_dir=run_dir, progress=False, checkpoint_every=0, force=True)
    trainer = Trainer(DEMO_CODEC, q, task, folder, options=options, variant=variant, middle_dim=config.middle_dim,
                      features=task_features(task, load_model(task)))
    path = trainer.fit()
    log(f"{task} q{q} {variant}: bpp(base) {trainer.last.bpp:.3f} D {trainer.last.distortion:.4f} ({time.time() - started:.0f} s)")
    return path


@torch.no_grad()
def measure(codec: AdaptedCodec, task: str, model: torch.nn.Module, test: ProxyBatch,
            human: torch.Tensor | None) -> tuple[dict[str, Any], torch.Tensor]:
    """Real bitstreams through ``icmh_hub.coding.code``: rate and task score of the (base-layer)
    picture; for a scalable codec also the full stream's rate, the human picture's PSNR, whether
    it equals ``human`` (the base codec's decode) bit for bit, and the base layer's share of the bits."""
    parts = [code(codec, test.images[i : i + CHUNK], estimate=False) for i in range(0, len(test.images), CHUNK)]
    pixels = len(test.images) * parts[0].pixels
    x_hat = torch.cat([p.x_hat for p in parts])
    point = {"bpp": sum(sum(p.bits) for p in parts) / pixels, METRICS[task]: task_score(task, model, x_hat, test),
             "psnr": psnr(test.images, x_hat)}
    if parts[0].x_full is not None:
        x_full = torch.cat([p.x_full for p in parts])
        full_bits = sum(sum(p.bits_full) for p in parts)
        point |= {"bpp_full": full_bits / pixels, "psnr_full": psnr(test.images, x_full),
                  "human_bit_exact": bool(human is not None and torch.equal(x_full, human)),
                  "base_share": point["bpp"] * pixels / full_bits}
    return point, x_hat


def task_pipeline(config: Config, task: str, work: Path, test: ProxyBatch) -> tuple[str, dict, dict]:
    torch.set_num_threads(1)
    model = load_model(task)
    runs = {q: {v: train_scalable(config, task, q, v, work / "train", work) for v in VARIANTS} for q in QUALITIES}
    curves: dict[str, list[dict[str, Any]]] = {"base": [], **{v: [] for v in VARIANTS}}
    for q in QUALITIES:
        base_point, human = measure(attach(build_base(DEMO_CODEC, q), DEMO_CODEC, {}, quality=q), task, model, test, None)
        curves["base"].append({"q": q, **_rounded(base_point)})
        for variant in VARIANTS:
            codec = attach(build_base(DEMO_CODEC, q), DEMO_CODEC, {task: load_adapters(runs[q][variant])}, quality=q)
            point, _ = measure(codec, task, model, test, human)
            curves[variant].append({"q": q, **_rounded(point)})
    return task, runs, curves


def _rounded(point: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in point.items()}


def figure(task: str, q: int, path: Path, test: ProxyBatch, out: Path) -> Path:
    """The base layer's picture, the full picture and the mask (share of y's channels the base
    layer sends at each latent position) of 16 held-out images coded as one 256x256 mosaic."""
    picture = mosaic(test.images[:16])
    codec = attach(build_base(DEMO_CODEC, q), DEMO_CODEC, {task: load_adapters(path)}, quality=q)
    coded = code(codec, picture, estimate=False)
    with torch.no_grad():
        mask = codec(picture)["mask"][0].float().mean(0)
    fig = plots.figure(13.0, 3.6)
    panels = fig.subplots(1, 4)
    shown = [("original", picture), (f"base layer: {coded.bpp:.3f} bpp", coded.x_hat),
             (f"full: {coded.bpp_full:.3f} bpp (= base codec)", coded.x_full)]
    for axes, (title, image) in zip(panels, shown):
        axes.imshow(image[0].permute(1, 2, 0).clamp(0, 1).numpy())
        axes.set_title(title, fontsize=9)
    shown_mask = panels[3].imshow(mask.numpy(), cmap="magma", vmin=0.0, vmax=1.0)
    panels[3].set_title("mask: share of y sent in the base layer", fontsize=9)
    fig.colorbar(shown_mask, ax=panels[3], shrink=0.8)
    for axes in panels:
        axes.set_xticks([])
        axes.set_yticks([])
    fig.suptitle(f"{DEMO_CODEC} q{q}, scalable-sfma for {task} (16 held-out images coded as one)", fontsize=10)
    return plots.save(fig, out)


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for task, curves in results["curves"].items():
        metric = METRICS[task]
        lines += [f"**{task}**, base layer ({metric} of the proxy {task} model on {results['images']} held-out images; "
                  f"BD against the base codec, {BD_METHOD})", "",
                  *bd_rows(curves, results["bd"][task], metric)]
        lines += ["", f"**{task}**, whole stream (human picture) and the split of its bits", "",
                  "| row | " + " | ".join(f"q{p['q']} bpp / PSNR / base share" for p in curves["base"]) + " | human = base codec |",
                  "|---" * (len(curves["base"]) + 2) + "|"]
        lines.append("| base | " + " | ".join(f"{p['bpp']:.3f} / {p['psnr']:.2f} dB / -" for p in curves["base"]) + " | - |")
        for name in VARIANTS:
            points = curves[name]
            exact = "yes, every image" if all(p["human_bit_exact"] for p in points) else "NO"
            lines.append(f"| {name} | " + " | ".join(f"{p['bpp_full']:.3f} / {p['psnr_full']:.2f} dB / {p['base_share']:.1%}"
                                                    for p in points) + f" | {exact} |")
        lines.append("")
    return "\n".join(lines)


def ship(config: Config, results: dict[str, Any], runs: dict[str, dict]) -> None:
    """The scalable-sfma adapters into adapters/demo, with cards and their own index file."""
    folder = SHIP / "scalable"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    base, full = (f"proxy-heldout-seed{config.seed + 2} ({part})" for part in ("base layer", "full stream"))
    entries = []
    for task in TASKS:
        for q in QUALITIES:
            target = Path(shutil.copy(runs[task][q]["scalable-sfma"], folder / f"{DEMO_CODEC}-{task}-q{q}-scalable-sfma.safetensors"))
            point = next(p for p in results["curves"][task]["scalable-sfma"] if p["q"] == q)
            metrics = measured(point, [("bpp_actual", "bpp", base), (METRICS[task], METRICS[task], base), ("bpp_actual", "bpp_full", full),
                                       ("psnr", "psnr_full", full)], config.test_images)
            entries.append(shipped_entry(config, task, q, "scalable-sfma", target, metrics,
                                         "demo zoo, scalable coding: trained on the proxy data set by `python -m benchmarks.proxy_scalable`"))
    atomic_write_json(SCALABLE_INDEX, {"entries": entries, "base_codecs": []})
    log(f"shipped {len(entries)} scalable entries into {folder}, index {SCALABLE_INDEX}")


def run(config: Config, out: Path, ship_zoo: bool) -> dict[str, Any]:
    torch.set_num_threads(1)
    started = time.time()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    train = make_proxy(config.train_images, config.size, seed=config.seed + 1)
    test = make_proxy(config.test_images, config.size, seed=config.seed + 2).as_8bit()
    if not (work / "train").is_dir():
        write_folder(train, work / "train")
    log(f"data: {config.train_images} training and {config.test_images} held-out images of {config.size}x{config.size}")
    with ProcessPoolExecutor(len(TASKS), mp_context=multiprocessing.get_context("fork")) as pool:  # one core per task
        done = list(pool.map(task_pipeline, [config] * len(TASKS), TASKS, [work] * len(TASKS), [test] * len(TASKS)))
    results: dict[str, Any] = {"config": dataclasses.asdict(config), "images": config.test_images, "curves": {}, "bd": {}}
    runs = {}
    for task, task_runs, curves in done:
        runs[task] = task_runs
        results["curves"][task] = curves
        results["bd"][task] = bd_table(curves, METRICS[task])
        figure(task, 2, task_runs[2]["scalable-sfma"], test, out / f"scalable-{task}.png")
    results["seconds"] = round(time.time() - started)
    atomic_write_json(out / "results.json", results)
    log(f"done in {results['seconds']} s; results in {out / 'results.json'}")
    print(markdown(results))
    if ship_zoo:
        ship(config, results, runs)
    return results


def main() -> None:
    command_line(run, __doc__.splitlines()[0], "proxy_scalable", "copy the scalable-sfma adapters into adapters/demo (index and cards)")


if __name__ == "__main__":
    main()
