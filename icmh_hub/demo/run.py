"""``icmh-hub demo``: the method at work, offline, on a demo zoo that ships with the package.

By default it codes crops of real photographs (the scikit-image photographs the photo zoo was
trained without) with the ``mbt2018-mean-photo`` codec, once for people (no adapters) and once
with its classification adapters, through real bitstreams, and scores both with the real
ImageNet classifier the adapters were trained for (EfficientNet-Lite0: top-1 agreement with its
own top-1 on the uncompressed crop, the photographs having no labels). Without the classifier's
weights package it falls back to the synthetic proxy images and the proxy classifier of
``mbt2018-mean-demo``, and says why. Either way it checks that switching back to human vision
gives the very same bytes as the codec that never saw an adapter, and draws one PNG.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..assemble import build_base, load
from ..codecs.demo import DEMO_CODEC, PHOTO_CODEC
from ..coding import code
from ..core.attach import AdaptedCodec
from ..errors import MissingDependencyError
from ..evaluation.bits import base_and_adapted_bits
from ..evaluation.metrics import psnr
from ..evaluation import plots
from .models import load_model, task_score, top1
from .proxy import ProxyBatch, make_proxy

DEMO_Q = 2
DEMO_SEED = 2026  # not a seed the proxy zoo was trained or evaluated on
SHOWN = 16  # images in the figure, at most (a multiple of the mosaic's 4 columns)


@dataclass
class Scene:
    """What the demo codes, with which codec, and how it scores a decode: ``score`` maps decoded
    images to the share the classifier gets right (``metric`` names what "right" means)."""

    codec: str
    images: torch.Tensor  # (N, 3, H, W), 8-bit values in [0, 1]
    score: Callable[[torch.Tensor], float]
    described: str
    metric: str
    classifier: str
    fallback: str = ""  # why the photo scene was not used


def photo_scene() -> Scene:
    """The held-out photo crops, the photo zoo and EfficientNet-Lite0 (MissingDependencyError
    without its weights package)."""
    from ..core.task_models import build_task_model
    from .photos import HELD_OUT, held_out_crops

    classifier = build_task_model("efficientnet-lite0")
    images, _ = held_out_crops()
    reference = top1(classifier, images, chunk=16)
    return Scene(PHOTO_CODEC, images, lambda x: (top1(classifier, x, chunk=16) == reference).float().mean().item(),
                 f"{len(images)} crops of {len(HELD_OUT)} held-out photographs", "top-1 agreement", "efficientnet-lite0")


def proxy_scene(count: int = 64) -> Scene:
    """Fresh proxy images, the proxy zoo and its proxy classifier (labels known: accuracy)."""
    batch = make_proxy(count, seed=DEMO_SEED).as_8bit()
    classifier = load_model("cls")
    return Scene(DEMO_CODEC, batch.images, lambda x: task_score("cls", classifier, x, batch), f"{count} proxy images",
                 "accuracy", "proxy-cls")


def default_scene(count: int = 64) -> Scene:
    """The photo scene when EfficientNet-Lite0's weights are installed, else the proxy one (saying why)."""
    try:
        return photo_scene()
    except MissingDependencyError as exc:
        return replace(proxy_scene(count), fallback=str(exc))


@dataclass
class Coding:
    """Images coded through real bitstreams: decoded pixels, the strings of each compress()
    call, bits per pixel from their lengths, the score and PSNR of the decoded images."""

    x_hat: torch.Tensor
    strings: list
    bpp: float
    score: float
    psnr: float
    bits: list[float]  # real bits of each image
    pixels: int  # per image

    def bpp_of_first(self, count: int) -> float:
        """Bits per pixel of the first ``count`` images only (what a figure of them shows)."""
        return sum(self.bits[:count]) / (count * self.pixels)


@dataclass
class Shown:
    """What the figure draws and prints, each number measured on the drawn images' own coding:
    real bpp of the shown decodes, and the bit maps with their own mean (entropy-model estimate)."""

    path: Path
    count: int
    bpp: dict[str, float]
    map_bpp: dict[str, float]
    maps: dict[str, torch.Tensor]


def compress_strings(codec: nn.Module, images: torch.Tensor, chunk: int = 64) -> list:
    """compress() of ``images``, ``chunk`` at a time; the strings of each call, in order."""
    with torch.no_grad():
        return [codec.compress(images[i : i + chunk])["strings"] for i in range(0, len(images), chunk)]


def code_images(codec: AdaptedCodec, images: torch.Tensor, score: Callable[[torch.Tensor], float], chunk: int = 64) -> Coding:
    """Code ``images`` with ``codec`` as it is set now (``icmh_hub.coding.code``, ``chunk`` at a
    time) and ``score`` the decoded images."""
    parts = [code(codec, images[i : i + chunk], estimate=False) for i in range(0, len(images), chunk)]
    x_hat = torch.cat([p.x_hat for p in parts])
    bits = [b for p in parts for b in p.bits]
    bpp = sum(bits) / (len(images) * parts[0].pixels)
    return Coding(x_hat, [p.strings for p in parts], bpp, score(x_hat), psnr(images, x_hat), bits, parts[0].pixels)


def code_batch(codec: AdaptedCodec, batch: ProxyBatch, task: str, model: nn.Module, chunk: int = 64) -> Coding:
    """``code_images`` of a proxy batch scored with the proxy ``task`` model against its labels
    (the demo's fallback and ``benchmarks.proxy`` measure every row this way)."""
    return code_images(codec, batch.images, lambda x_hat: task_score(task, model, x_hat, batch), chunk)


def mosaic(images: torch.Tensor, columns: int = 4) -> torch.Tensor:
    """(B, 3, h, w) -> (1, 3, rows*h, columns*w), row-major (B must be a multiple of columns)."""
    rows = [torch.cat(list(images[r : r + columns]), dim=2) for r in range(0, len(images), columns)]
    return torch.cat(rows, dim=1)[None]


def bit_mosaic(codec: AdaptedCodec, images: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Bit maps (human, machine) of each image coded on its own, as the demo codes them, tiled
    like ``mosaic`` tiles the images."""
    maps = [base_and_adapted_bits(codec, image[None], task) for image in images]
    return tuple(mosaic(torch.stack([m[k] for m in maps])[:, None])[0, 0] for k in (0, 1))


def figure(scene: Scene, human: Coding, machine: Coding, codec: AdaptedCodec, out: Path) -> Shown:
    """Original, human decode, machine decode, and the bits per latent position of both, for the
    first images (up to ``SHOWN``). Every number drawn is measured on those images' own coding:
    the decodes' titles are their real bpp, the maps' titles the mean of the maps drawn."""
    count = min(SHOWN, len(scene.images) - len(scene.images) % 4)
    images = scene.images[:count]
    maps = dict(zip(("human", "machine"), bit_mosaic(codec, images, "cls")))
    pixels = count * images.shape[-2] * images.shape[-1]
    shown = Shown(out, count, {"human": human.bpp_of_first(count), "machine": machine.bpp_of_first(count)},
                  {k: float(m.sum()) / pixels for k, m in maps.items()}, maps)
    top = float(max(m.max() for m in maps.values()))
    fig = plots.figure(17.0, 3.9 if count > 8 else 2.6)
    panels = fig.subplots(1, 5)
    drawn = [("original", mosaic(images)), (f"human: {shown.bpp['human']:.3f} bpp", mosaic(human.x_hat[:count])),
             (f"machine (cls): {shown.bpp['machine']:.3f} bpp", mosaic(machine.x_hat[:count]))]
    for axes, (title, image) in zip(panels, drawn):
        axes.imshow(image[0].permute(1, 2, 0).clamp(0, 1).numpy())
        axes.set_title(title, fontsize=9)
    for axes, (name, label) in zip(panels[3:], (("human", "human"), ("machine", "machine (cls)"))):
        image = axes.imshow(maps[name].numpy(), cmap="viridis", vmin=0.0, vmax=top)
        axes.set_title(f"bits, {label}: {shown.map_bpp[name]:.3f} bpp (estimate)", fontsize=9)
    fig.colorbar(image, ax=list(panels[3:]), shrink=0.8, label="bits per latent position")
    for axes in panels:
        axes.set_xticks([])
        axes.set_yticks([])
    fig.suptitle(f"{scene.codec} q{codec.quality}: the first {count} of {scene.described}, each coded on its own "
                 f"through real bitstreams (every figure drawn: these {count})", fontsize=10)
    plots.save(fig, out)
    return shown


def run_demo(out: str | os.PathLike = "icmh-demo.png", count: int = 64, q: int = DEMO_Q, photos: bool | None = None) -> dict:
    """The demo; returns what it printed as numbers (and the figure's path). ``photos``: True
    for the photo scene, False for the proxy one, None for the photo scene when it can run."""
    scene = photo_scene() if photos else proxy_scene(count) if photos is False else default_scene(count)
    codec = load(scene.codec, task="cls", q=q)
    untouched = build_base(scene.codec, q)  # never saw an adapter
    with codec.human():
        human = code_images(codec, scene.images, scene.score)
    machine = code_images(codec, scene.images, scene.score)
    codec.set_task(None)
    again = compress_strings(codec, scene.images)
    codec.set_task("cls")
    shown = figure(scene, human, machine, codec, Path(out))
    return {
        "codec": scene.codec, "q": q, "images": len(scene.images), "described": scene.described, "metric": scene.metric,
        "classifier": scene.classifier, "fallback": scene.fallback,
        "clean_score": scene.score(scene.images),
        "human": {"bpp": human.bpp, "score": human.score, "psnr": human.psnr},
        "machine": {"bpp": machine.bpp, "score": machine.score, "psnr": machine.psnr},
        "human_again_bit_exact": again == human.strings == compress_strings(untouched, scene.images),
        "figure": str(shown.path),
        "figure_images": shown.count,
        "figure_bpp": shown.bpp,  # the real bpp of the images the figure shows
    }
