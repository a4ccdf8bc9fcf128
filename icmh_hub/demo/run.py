"""``icmh-hub demo``: the method at work, offline, on the demo zoo that ships with the package.

Codes a few freshly made proxy images with the small mbt2018-mean-demo codec, once for people
(no adapters) and once with the classification adapters, through real bitstreams; prints bpp and
the proxy classifier's accuracy side by side; checks that switching back to human vision gives
the very same bytes as the codec that never saw an adapter; and draws one PNG.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..assemble import build_base, load
from ..codecs.demo import DEMO_CODEC
from ..coding import code
from ..core.attach import AdaptedCodec
from ..evaluation.bits import base_and_adapted_bits
from ..evaluation.metrics import psnr
from ..evaluation import plots
from .models import load_model, task_score
from .proxy import ProxyBatch, make_proxy

DEMO_Q = 2
DEMO_SEED = 2026  # not a seed the zoo was trained or evaluated on
SHOWN = 16  # images in the figure


@dataclass
class Coding:
    """A batch coded through real bitstreams: decoded pixels, the strings of each compress()
    call, bits per pixel from their lengths, the task score and PSNR of the decoded images."""

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
    bpp: dict[str, float]
    map_bpp: dict[str, float]
    maps: dict[str, torch.Tensor]


def compress_strings(codec: nn.Module, images: torch.Tensor, chunk: int = 64) -> list:
    """compress() of ``images``, ``chunk`` at a time; the strings of each call, in order."""
    with torch.no_grad():
        return [codec.compress(images[i : i + chunk])["strings"] for i in range(0, len(images), chunk)]


def code_batch(codec: AdaptedCodec, batch: ProxyBatch, task: str, model: nn.Module, chunk: int = 64) -> Coding:
    """Code ``batch`` with ``codec`` as it is set now (``icmh_hub.coding.code``, ``chunk`` images
    at a time) and score the decoded images with the proxy ``task`` model (the demo and
    ``benchmarks.proxy`` measure every row this way)."""
    parts = [code(codec, batch.images[i : i + chunk], estimate=False) for i in range(0, len(batch.images), chunk)]
    x_hat = torch.cat([p.x_hat for p in parts])
    bits = [b for p in parts for b in p.bits]
    bpp = sum(bits) / (len(batch.images) * parts[0].pixels)
    return Coding(x_hat, [p.strings for p in parts], bpp, task_score(task, model, x_hat, batch), psnr(batch.images, x_hat),
                  bits, parts[0].pixels)


def mosaic(images: torch.Tensor, columns: int = 4) -> torch.Tensor:
    """(B, 3, h, w) -> (1, 3, rows*h, columns*w), row-major (B must be a multiple of columns)."""
    rows = [torch.cat(list(images[r : r + columns]), dim=2) for r in range(0, len(images), columns)]
    return torch.cat(rows, dim=1)[None]


def bit_mosaic(codec: AdaptedCodec, images: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Bit maps (human, machine) of each image coded on its own, as the demo codes them, tiled
    like ``mosaic`` tiles the images."""
    maps = [base_and_adapted_bits(codec, image[None], task) for image in images]
    return tuple(mosaic(torch.stack([m[k] for m in maps])[:, None])[0, 0] for k in (0, 1))


def figure(batch: ProxyBatch, human: Coding, machine: Coding, codec: AdaptedCodec, out: Path) -> Shown:
    """Original, human decode, machine decode, and the bits per latent position of both, for the
    first ``SHOWN`` images. Every number drawn is measured on those images' own coding: the
    decodes' titles are their real bpp, the maps' titles the mean of the maps drawn."""
    images = batch.images[:SHOWN]
    maps = dict(zip(("human", "machine"), bit_mosaic(codec, images, "cls")))
    pixels = SHOWN * images.shape[-2] * images.shape[-1]
    shown = Shown(out, {"human": human.bpp_of_first(SHOWN), "machine": machine.bpp_of_first(SHOWN)},
                  {k: float(m.sum()) / pixels for k, m in maps.items()}, maps)
    top = float(max(m.max() for m in maps.values()))
    fig = plots.figure(17.0, 3.9)
    panels = fig.subplots(1, 5)
    drawn = [("original", mosaic(images)), (f"human: {shown.bpp['human']:.3f} bpp", mosaic(human.x_hat[:SHOWN])),
             (f"machine (cls): {shown.bpp['machine']:.3f} bpp", mosaic(machine.x_hat[:SHOWN]))]
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
    fig.suptitle(f"{DEMO_CODEC} q{codec.quality}: the first {SHOWN} of {len(batch.images)} proxy images, each coded on its own "
                 f"through real bitstreams (every figure drawn: these {SHOWN})", fontsize=10)
    plots.save(fig, out)
    return shown


def run_demo(out: str | os.PathLike = "icmh-demo.png", count: int = 64, q: int = DEMO_Q) -> dict:
    """The demo; returns what it printed as numbers (and the figure's path)."""
    batch = make_proxy(count, seed=DEMO_SEED).as_8bit()
    codec = load(DEMO_CODEC, task="cls", q=q)
    untouched = build_base(DEMO_CODEC, q)  # never saw an adapter
    classifier = load_model("cls")
    with codec.human():
        human = code_batch(codec, batch, "cls", classifier)
    machine = code_batch(codec, batch, "cls", classifier)
    codec.set_task(None)
    again = compress_strings(codec, batch.images)
    codec.set_task("cls")
    shown = figure(batch, human, machine, codec, Path(out))
    return {
        "codec": DEMO_CODEC, "q": q, "images": count,
        "clean_accuracy": task_score("cls", classifier, batch.images, batch),
        "human": {"bpp": human.bpp, "accuracy": human.score, "psnr": human.psnr},
        "machine": {"bpp": machine.bpp, "accuracy": machine.score, "psnr": machine.psnr},
        "human_again_bit_exact": again == human.strings == compress_strings(untouched, batch.images),
        "figure": str(shown.path),
        "figure_bpp": shown.bpp,  # the real bpp of the images the figure shows
    }
