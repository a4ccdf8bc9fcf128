"""Identities of weights: digests of a module's tensors, so that a bitstream, a training record or
an evaluation result can say exactly which base codec and adapters produced it."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from .adapter_set import AdapterSet

BASE_DIGEST_BYTES = 16  # what .icmh headers, training records and evaluation results store


def tensors_digest(module: nn.Module, extra: str = "") -> str:
    """Hex sha256 of a module's state_dict (names, dtypes, shapes, values) plus ``extra``."""
    import torch

    digest = hashlib.sha256(extra.encode())
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def base_digest(model: nn.Module) -> str:
    """Short identity of a base codec's weights and entropy tables."""
    return tensors_digest(model)[: 2 * BASE_DIGEST_BYTES]


def adapters_digest(adapters: AdapterSet) -> str:
    """Identity of adapters that are not (or not known to be) a file: layout and tensors."""
    return tensors_digest(adapters, json.dumps(adapters.layout(), sort_keys=True))
