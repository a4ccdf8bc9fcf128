"""Figures: rate-accuracy curves and bit-allocation maps (the paper's Fig. 2 idea), as PNG files.

matplotlib's object API on the Agg canvas: no display, no pyplot global state, safe in servers
and tests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_path
from ..errors import InvalidArgumentError

Curve = Mapping[str, Sequence[float]]  # {"rate": [...], "metric": [...]} (optionally "q": [...])

METRIC_LABELS = {
    "top1": "top-1 accuracy (%)",
    "bbox_AP": "box AP (%)", "bbox_AP50": "box AP50 (%)", "bbox_AP75": "box AP75 (%)",
    "segm_AP": "mask AP (%)", "segm_AP50": "mask AP50 (%)", "segm_AP75": "mask AP75 (%)",
    "psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM",
    "bpp_est": "bits per pixel (estimated)", "bpp_actual": "bits per pixel (bitstream)",
}


def figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Any, out: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG, atomically."""
    out = Path(out)
    with atomic_path(out) as temporary:
        fig.savefig(temporary, format="png", bbox_inches="tight")
    return out


def plot_rate_accuracy(
    curves: Mapping[str, Curve],
    out: str | os.PathLike,
    metric: str = "top1",
    rate: str = "bpp_est",
    title: str | None = None,
) -> Path:
    """One line per named curve (e.g. ``base``, ``adapted``, any other codec), metric vs rate."""
    if not curves:
        raise InvalidArgumentError("no curves to plot; give at least one {name: {'rate': [...], 'metric': [...]}}")
    fig = figure(5.0, 3.8)
    axes = fig.add_subplot()
    for name, curve in curves.items():
        rates, values = list(curve["rate"]), list(curve["metric"])
        if len(rates) != len(values) or not rates:
            raise InvalidArgumentError(f"curve {name!r} has {len(rates)} rates and {len(values)} metric values; give one of each per point")
        points = sorted(zip(rates, values, curve.get("q", [None] * len(rates))))
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        for r, v, q in points:
            if q is not None:
                axes.annotate(f"q{q}", (r, v), textcoords="offset points", xytext=(4, -10), fontsize=7)
    axes.set_xlabel(METRIC_LABELS.get(rate, rate))
    axes.set_ylabel(METRIC_LABELS.get(metric, metric))
    axes.grid(True, alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title)
    return save(fig, out)


def plot_bit_allocation(
    image: torch.Tensor, base_bits: torch.Tensor, adapted_bits: torch.Tensor, out: str | os.PathLike, title: str | None = None
) -> Path:
    """Image, then bits per latent position of the base codec and of the adapted one, side by
    side on one colour scale (so where the adapters save or spend bits shows directly)."""
    if base_bits.shape != adapted_bits.shape:
        raise InvalidArgumentError(f"bit maps differ in shape ({tuple(base_bits.shape)} vs {tuple(adapted_bits.shape)}); use the same image")
    pixels = image.shape[-2] * image.shape[-1]
    top = float(max(base_bits.max(), adapted_bits.max()))
    fig = figure(11.0, 3.6)
    panels = fig.subplots(1, 3)
    panels[0].imshow(image[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
    panels[0].set_title("input")
    for axes, (name, bits) in zip(panels[1:], (("base", base_bits), ("adapted", adapted_bits))):
        shown = axes.imshow(bits.cpu().numpy(), cmap="viridis", vmin=0.0, vmax=top)
        axes.set_title(f"{name}: {float(bits.sum()) / pixels:.3f} bpp (y)")
    fig.colorbar(shown, ax=list(panels[1:]), shrink=0.8, label="bits per latent position")
    for axes in panels:
        axes.set_xticks([])
        axes.set_yticks([])
    if title:
        fig.suptitle(title)
    return save(fig, out)
