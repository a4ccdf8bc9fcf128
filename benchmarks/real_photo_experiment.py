"""Real photographs, a real ImageNet classifier: does SFMA save bits at equal top-1 agreement?

    python -m benchmarks.real_photo_experiment                  # CPU, about half an hour on 2 cores
    python -m benchmarks.real_photo_experiment --device cuda    # the same on a GPU
    python -m benchmarks.real_photo_experiment --scale 0.05     # a smoke run (too short to mean anything)

The photographs come from ``benchmarks.real_photos`` (built into the work folder when missing),
split by photograph. A codec of the demo family (``mbt2018-mean-demo``'s architecture, named
``mbt2018-mean-photo``) is trained for people (MSE) at four rate points on random crops of the training photographs; then,
per rate point, SFMA adapters, the naive adapter with about the same parameters, and full
fine-tuning are trained with the EfficientNet-Lite0 feature distortion (``benchmarks.proxy``'s
machinery, a real classifier in place of the proxy model). Every row is measured on all held-out
256x256 crops through real bitstreams: bpp from the strings, top-1 agreement (the classifier's
top-1 on the decoded crop equals its top-1 on the uncompressed crop: the photographs have no
labels), the feature distortion, PSNR; each with its standard error over the crops, and BD-rate /
BD-agreement against the human codec with standard errors from a paired bootstrap over crops.
Results and the rate-agreement figure go to docs/real_photos/. ``--ship`` copies the base
codecs and the SFMA adapters, with cards holding the held-out figures, into adapters/photo/
(index adapters/photo.json): the photo zoo that ``icmh-hub demo`` uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.io import decode_image

from benchmarks import proxy
from benchmarks.real_photos import build as build_photos
from icmh_hub.codecs.demo import PHOTO_CODEC
from icmh_hub.coding import code
from icmh_hub.core.task_models import get_task_model, task_model_features
from icmh_hub.core.tasks import get_task
from icmh_hub.evaluation.plots import plot_rate_accuracy
from icmh_hub.hub.index import INDEX_ENV

TASK, TASK_MODEL = "cls", "efficientnet-lite0"
ROWS = ("base", "sfma", "naive", "full")
DOCS = proxy.ROOT / "docs" / "real_photos"
SHIP = proxy.ROOT / "adapters" / "photo"  # the photo zoo: base codecs and SFMA cls adapters, index adapters/photo.json
BOOTSTRAP = 200
AGREEMENT_NOTE = "top-1 agreement: EfficientNet-Lite0's top-1 on the decoded crop equals its top-1 on the uncompressed crop (no labels)"
HUMAN_NOTE = "the human codec (no adapters) on the same crops"
UNUSED = ("train_images", "test_images", "task_steps")  # proxy.Config fields this experiment has no use for

CONFIG = dataclasses.replace(proxy.Config(), codec=PHOTO_CODEC, task_model=TASK_MODEL, size=128, codec_steps=3000, codec_finetune_steps=1200, codec_batch=8,
                             adapter_steps=300, adapter_batch=8)  # lambdas: calibrated() once the codecs exist


class Crops:
    """Image tensors of one folder of crops, with the ``.images`` the codec trainer samples."""

    def __init__(self, folder: Path, tile: int | None = None) -> None:
        files = sorted(folder.glob("*.png"))
        images = torch.stack([decode_image(str(f)).float().div(255)[:3] for f in files])
        if tile:  # cut every crop into tile x tile pieces (the codec trains on small random crops)
            images = images.unfold(2, tile, tile).unfold(3, tile, tile).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, tile, tile)
        self.images, self.names = images, [f.name for f in files]


@torch.no_grad()
def per_crop(codec, crops: torch.Tensor, features, reference: dict, chunk: int = 16) -> dict[str, np.ndarray]:
    """Per-crop bpp (real bitstreams), agreement with the uncompressed top-1, feature distortion
    (the training D of each crop) and PSNR; the classifier's logits and features in one pass."""
    out: dict[str, list[float]] = {"bpp": [], "agreement": [], "distortion": [], "psnr": []}
    for start in range(0, len(crops), chunk):
        images = crops[start : start + chunk].to(_device(codec))
        coded = code(codec, images, estimate=False)
        x_hat = coded.x_hat
        out["bpp"] += [b / coded.pixels for b in coded.bits]
        logits, decoded = features.net.with_output(x_hat)
        out["agreement"] += (logits.argmax(1).cpu() == reference["top1"][start : start + chunk]).float().tolist()
        levels = [(f - r.to(f.device)).pow(2).flatten(1).mean(1) for f, r in zip(decoded, reference["features"](start, chunk))]
        out["distortion"] += (get_task(features.task).level_weight * torch.stack(levels).sum(0)).cpu().tolist()
        out["psnr"] += (-10 * torch.log10((x_hat - images).pow(2).flatten(1).mean(1))).cpu().tolist()
    return {k: np.asarray(v) for k, v in out.items()}


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def reference_of(crops: torch.Tensor, features, device: torch.device) -> dict[str, Any]:
    """The classifier's top-1 and the feature maps of the uncompressed held-out crops."""
    top1, maps = [], []
    for start in range(0, len(crops), 16):
        logits, levels = features.net.with_output(crops[start : start + 16].to(device))
        top1.append(logits.argmax(1).cpu())
        maps.append([f.cpu() for f in levels])
    levels = [torch.cat(level) for level in zip(*maps)]
    return {"top1": torch.cat(top1), "features": lambda start, count: [level[start : start + count] for level in levels]}


def summary(values: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean and standard error over crops of every per-crop figure (agreement in %)."""
    scale = {"agreement": 100.0}
    return {name: round(float(v.mean() * scale.get(name, 1)), 4) for name, v in values.items()} | {
        f"{name}_se": round(float(v.std(ddof=1) / np.sqrt(len(v)) * scale.get(name, 1)), 4) for name, v in values.items()}


def bd_with_se(per: dict[str, list[dict[str, np.ndarray]]], draws: int = BOOTSTRAP, seed: int = 0) -> dict[str, dict[str, float | None]]:
    """BD-rate (%) and BD-agreement (points) of every row against the base row (pchip), and their
    standard errors from a paired bootstrap over crops (the same resampled crops for all rows)."""
    def curves(index: np.ndarray | None) -> dict[str, list[dict[str, float]]]:
        pick = (lambda v: v) if index is None else (lambda v: v[index])
        return {row: [{"q": q + 1, "bpp": float(pick(p["bpp"]).mean()), "agreement": float(pick(p["agreement"]).mean())}
                      for q, p in enumerate(points)] for row, points in per.items()}

    table = proxy.bd_table(curves(None), "agreement")
    generator = np.random.default_rng(seed)
    count = len(per["base"][0]["bpp"])
    draws = [proxy.bd_table(curves(generator.integers(0, count, count)), "agreement") for _ in range(draws)]
    for row, figures in table.items():
        for name in list(figures):
            values = [d[row][name] for d in draws if d[row][name] is not None]
            figures[f"{name}_se"] = round(float(np.std(values, ddof=1)), 2) if len(values) > 1 else None
            figures[f"{name}_bootstrap_draws"] = len(values)
    return table


@torch.no_grad()
def calibrated(config: proxy.Config, tiles: torch.Tensor) -> proxy.Config:
    """The config with lambda_q = bpp / D of the human codec at q on training tiles: the rate and
    the weighted distortion start balanced at every rate point. EfficientNet-Lite0's feature MSE
    is on another scale than ResNet-50's, so the paper's lambdas cannot be reused as they are."""
    features = task_model_features(TASK_MODEL, task=TASK)
    reference = features(tiles)
    lambdas = []
    for q in proxy.QUALITIES:
        coded = code(proxy.row_codec("base", TASK, q, None, config.codec), tiles, bitstream=False)
        bpp = sum(coded.bits_est) / (len(tiles) * coded.pixels)
        lambdas.append(round(bpp / float(features.distortion(reference, features(coded.x_hat))), 5))
    proxy.log(f"lambdas (bpp / D of the human codec on {len(tiles)} training tiles): {lambdas}")
    return dataclasses.replace(config, task_lambdas=((TASK, tuple(lambdas)),))


def train_rows_at(config: proxy.Config, q: int, folder: Path, work: Path) -> dict[str, Path]:
    torch.set_num_threads(1)
    return proxy.train_rows(config, TASK, q, folder, work)


def _parallel(function, arguments: list[tuple], device: str) -> list:
    """``function`` over ``arguments`` in two processes (one per core, as benchmarks.proxy does)."""
    with ProcessPoolExecutor(2, mp_context=proxy.pool_context(device)) as pool:
        return list(pool.map(function, *zip(*arguments)))


def measure_rows(rows: dict[int, dict[str, Path]], held: torch.Tensor, device: torch.device, codec: str) -> tuple[dict, dict]:
    features = task_model_features(TASK_MODEL, task=TASK).to(device)
    reference = reference_of(held, features, device)
    per: dict[str, list[dict[str, np.ndarray]]] = {row: [] for row in ROWS}
    for q in proxy.QUALITIES:
        for row in ROWS:
            started = time.time()
            adapted = proxy.row_codec(row, TASK, q, rows[q].get(row), codec).to(device)
            per[row].append(per_crop(adapted, held, features, reference))
            proxy.log(f"measured {row} q{q} on {len(held)} crops in {time.time() - started:.0f} s: {summary(per[row][-1])}")
    curves = {row: [{"q": q + 1, **summary(p)} for q, p in enumerate(points)] for row, points in per.items()}
    return curves, per


def plot(curves: dict, held: int, out: Path) -> Path:
    return plot_rate_accuracy(
        {row: {"rate": [p["bpp"] for p in c], "metric": [p["agreement"] for p in c], "q": [p["q"] for p in c]} for row, c in curves.items()},
        out, metric="top-1 agreement (%)", rate="bpp_actual",
        title=f"{held} held-out photo crops, EfficientNet-Lite0 (agreement with its top-1 on the uncompressed crop)")


def run(config: proxy.Config, work: Path, docs: Path, device: str, limit: int | None = None, ship_to: Path | None = None) -> dict[str, Any]:
    torch.set_num_threads(2 if device == "cpu" else 8)
    started, timings = time.time(), {}
    get_task_model(TASK_MODEL).builder()("DEFAULT")  # a missing weights package stops here, with its one line
    photos = work / "photos"
    if not (photos / "manifest.json").is_file():
        build_photos(photos)
    manifest = json.loads((photos / "manifest.json").read_text())
    train, held = Crops(photos / "train", tile=config.size), Crops(photos / "heldout")
    held.images, held.names = held.images[:limit], held.names[:limit]  # limit: smoke runs only
    proxy.log(f"data: {len(train.names)} training crops ({len(train.images)} tiles of {config.size}), {len(held.names)} held-out crops")
    bases = proxy.train_base_codecs(config, train, work)
    timings["codecs"] = round(time.time() - started)
    os.environ[INDEX_ENV] = str(proxy.write_index(bases, work / "index.json", codec=config.codec))
    config = calibrated(config, train.images[torch.randperm(len(train.images), generator=torch.Generator().manual_seed(0))[:32]])
    rows = dict(zip(proxy.QUALITIES, _parallel(train_rows_at, [(config, q, photos / "train", work) for q in proxy.QUALITIES], config.codec_device)))
    timings["adapters"] = round(time.time() - started) - timings["codecs"]
    curves, per = measure_rows(rows, held.images, torch.device(device), config.codec)
    timings["measure"] = round(time.time() - started) - timings["codecs"] - timings["adapters"]
    results = {"task_model": TASK_MODEL, "accuracy": "top-1 agreement with the classifier's top-1 on the uncompressed crop (no labels)",
               "config": {k: v for k, v in dataclasses.asdict(config).items() if k not in UNUSED}, "device": device, "heldout_crops": len(held.names),
               "photographs": manifest["photographs"], "curves": curves, "bd": bd_with_se(per), "bd_method": proxy.BD_METHOD,
               "bootstrap": BOOTSTRAP, "seconds": timings | {"total": round(time.time() - started)}}
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(curves, len(held.names), docs / "rate-agreement.png")
    proxy.log(f"done in {results['seconds']['total']} s: {docs / 'results.json'}")
    print(markdown(results))
    if ship_to:
        ship(config, bases, rows, results, ship_to)
    return results


def ship(config: proxy.Config, bases: dict[int, Path], rows: dict[int, dict[str, Path]], results: dict[str, Any], folder: Path) -> Path:
    """Copy the base codecs and the SFMA adapters into ``folder`` (below adapters/) with cards
    holding the held-out figures, and write the index beside it (``folder``.json)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shipped = {q: Path(shutil.copy(path, folder / path.name)) for q, path in bases.items()}
    dataset = f"real-photos-heldout ({results['heldout_crops']} crops of {len(results['photographs']['heldout'])} photographs)"
    entries = []
    for point, human in zip(results["curves"]["sfma"], results["curves"]["base"]):
        q = point["q"]
        target = Path(shutil.copy(rows[q]["sfma"], folder / f"{config.codec}-{TASK}-q{q}.safetensors"))
        figures = {**point, "agreement": point["agreement"] / 100, "human_bpp": human["bpp"], "human_agreement": human["agreement"] / 100}
        metrics = proxy.measured(figures, [("bpp_actual", "bpp", dataset), ("top1_agreement", "agreement", dataset), ("psnr", "psnr", dataset),
                                           ("human_bpp_actual", "human_bpp", dataset), ("human_top1_agreement", "human_agreement", dataset)],
                                 results["heldout_crops"])
        for metric in metrics:
            notes = [HUMAN_NOTE] * metric["metric"].startswith("human") + [AGREEMENT_NOTE] * ("agreement" in metric["metric"])
            if notes:
                metric["notes"] = "; ".join(notes)
        entries.append(proxy.shipped_entry(config, TASK, q, "sfma", target, metrics, task_model=TASK_MODEL, index_folder=folder.parent, notes=(
            "photo zoo: trained on crops of real photographs with the EfficientNet-Lite0 feature distortion by "
            "`python -m benchmarks.real_photo_experiment --ship`; measured on held-out photographs")))
    index = proxy.write_index(shipped, folder.with_suffix(".json"), entries, codec=config.codec)
    proxy.log(f"shipped {sum(p.stat().st_size for p in folder.iterdir()) / 1e6:.1f} MB into {folder}, index {index}")
    return index


def markdown(results: dict[str, Any]) -> str:
    """The held-out table: every row's figures per rate point with their SE, and BD figures."""
    lines = ["| row | q | bpp | top-1 agreement (%) | feature distortion | PSNR (dB) |", "|---|---|---|---|---|---|"]
    for row, points in results["curves"].items():
        lines += [f"| {row} | {p['q']} | {p['bpp']:.4f} ± {p['bpp_se']:.4f} | {p['agreement']:.1f} ± {p['agreement_se']:.1f} | "
                  f"{p['distortion']:.4f} ± {p['distortion_se']:.4f} | {p['psnr']:.2f} ± {p['psnr_se']:.2f} |" for p in points]
    lines += ["", "| row | BD-rate (%) | BD-agreement (points) |", "|---|---|---|"]
    for row, f in results["bd"].items():
        cell = lambda key: "n/a" if f[key] is None else f"{f[key]:+.1f} ± {f[key + '_se']}"  # noqa: E731
        lines.append(f"| {row} | {cell('bd_rate')} | {cell('bd_agreement')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=proxy.ROOT / "benchmarks" / "results" / "real_photos", help="photographs, codecs, runs")
    parser.add_argument("--docs", type=Path, default=DOCS, help="where results.json and the figure go")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (training and measurement)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every training length (smoke runs)")
    parser.add_argument("--limit", type=int, help="measure the first N held-out crops only (smoke runs)")
    parser.add_argument("--ship", nargs="?", type=Path, const=SHIP, help=f"copy codecs, SFMA adapters and cards into this folder "
                        f"below adapters/ and write its index (default {SHIP.relative_to(proxy.ROOT)})")
    args = parser.parse_args()
    config = dataclasses.replace(CONFIG.scaled(args.scale), codec_device=args.device)
    run(config, args.work, args.docs, args.device, args.limit, args.ship)


if __name__ == "__main__":
    main()
