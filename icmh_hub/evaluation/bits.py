"""Where a codec spends its bits: -log2 likelihood of y per latent position (the paper's Fig. 2)."""

from __future__ import annotations

import torch

from ..core.attach import AdaptedCodec
from ..core.padding import pad
from ..core.spec import get_codec
from ..errors import InvalidArgumentError


@torch.no_grad()
def bits_per_position(codec: AdaptedCodec, x: torch.Tensor) -> torch.Tensor:
    """(h, w) map of the bits the entropy model spends on y at each latent position of ``x``
    (summed over channels), with the codec as it is set now (its task, or human)."""
    likelihoods = codec(pad(x, get_codec(codec.codec).pad_multiple))["likelihoods"]
    if "y" not in likelihoods:
        raise InvalidArgumentError(f"the codec's likelihoods have no 'y' entry (found {sorted(likelihoods)}); cannot map bits")
    return -torch.log2(likelihoods["y"][0]).sum(dim=0)


def base_and_adapted_bits(codec: AdaptedCodec, x: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Bit maps of ``x`` without and with ``task``'s adapters."""
    with codec.human():
        base = bits_per_position(codec, x)
    with codec.using(task):
        adapted = bits_per_position(codec, x)
    return base, adapted
