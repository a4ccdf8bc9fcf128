"""Per-image measurements and their averages: PSNR, MS-SSIM, top-1, rates."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of two [0, 1] images (inf for identical ones)."""
    mse = F.mse_loss(x.float(), y.float()).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """MS-SSIM (pytorch_msssim, 5 scales, window 11), or None for an image too small for it."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    if min(x.shape[-2:]) <= (11 - 1) * 2**4:
        return None
    return float(_ms_ssim(x.float(), y.float(), data_range=1.0))


def top1_correct(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """How many rows of ``logits`` have their largest value at the label."""
    return int((logits.argmax(dim=1) == labels.to(logits.device)).sum())


def mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def image_quality(x: torch.Tensor, x_hat: torch.Tensor, bpp_est: float | None, bpp_actual: float | None) -> dict[str, Any]:
    """One image's rate and quality record."""
    return {"bpp_est": bpp_est, "bpp_actual": bpp_actual, "psnr": psnr(x, x_hat), "ms_ssim": ms_ssim(x, x_hat)}


def quality_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Per-image rates and qualities averaged over images (identical images' infinite PSNR left out;
    the whole file's rate and PSNR too for layered coding)."""
    summary = {
        "bpp_est": mean(r["bpp_est"] for r in records),
        "bpp_actual": mean(r["bpp_actual"] for r in records),
        "psnr": mean(r["psnr"] for r in records if math.isfinite(r["psnr"])),
        "ms_ssim": mean(r["ms_ssim"] for r in records),
    }
    if any("bpp_full" in r for r in records):  # layered coding: the whole file and its human picture
        summary["bpp_full"] = mean(r.get("bpp_full") for r in records)
        summary["psnr_full"] = mean(r["psnr_full"] for r in records if math.isfinite(r.get("psnr_full", math.nan)))
    return summary
