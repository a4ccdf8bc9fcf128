"""Training a base (human-vision) codec for MSE, as CompressAI's example trainer does.

Used for the demo zoo (small codecs that train on a CPU); users with real codecs take them from
CompressAI's zoo. Loss: CompressAI's ``RateDistortionLoss`` (``lambda * 255**2 * MSE + bpp``);
the entropy bottleneck's quantiles are fitted by their own optimizer on ``aux_loss``, as in
CompressAI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .._compressai import compressai

# lambdas of CompressAI's MSE models at quality 1..8 (their training table)
MSE_LAMBDAS = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130, 5: 0.0250, 6: 0.0483, 7: 0.0932, 8: 0.1800}


@dataclass
class CodecStep:
    loss: float
    bpp: float
    mse: float


def rate_distortion_loss(model: nn.Module, images: torch.Tensor, lmbda: float) -> tuple[torch.Tensor, CodecStep]:
    """CompressAI's MSE rate-distortion loss for one batch, with its parts."""
    parts = compressai.losses.RateDistortionLoss(lmbda=lmbda)(model(images), images)
    return parts["loss"], CodecStep(parts["loss"].item(), parts["bpp_loss"].item(), parts["mse_loss"].item())


def train_codec(
    model: nn.Module,
    batches: Callable[[int], torch.Tensor],
    lmbda: float,
    steps: int,
    lr: float = 1e-4,
    aux_lr: float = 1e-3,
    milestones: tuple[int, ...] = (),
    log: Callable[[int, CodecStep], None] | None = None,
) -> nn.Module:
    """Train every parameter of ``model`` for ``steps`` steps; ``batches(step)`` gives the images.

    Returns the model in eval mode with its entropy tables updated, ready for ``compress``.
    """
    aux_names = {n for n, _ in model.named_parameters() if n.endswith(".quantiles")}
    main = [p for n, p in model.named_parameters() if n not in aux_names]
    aux = [p for n, p in model.named_parameters() if n in aux_names]
    optimizer = torch.optim.Adam(main, lr=lr)
    aux_optimizer = torch.optim.Adam(aux, lr=aux_lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma=0.1)
    model.train()
    for step in range(steps):
        loss, record = rate_distortion_loss(model, batches(step), lmbda)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(main, 1.0)
        optimizer.step()
        scheduler.step()
        aux_optimizer.zero_grad(set_to_none=True)
        model.aux_loss().backward()
        aux_optimizer.step()
        if log is not None:
            log(step, record)
    model.eval()
    model.update(force=True)
    return model
