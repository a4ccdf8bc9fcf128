"""The inference path: a codec's transforms and its adapters on channels-last maps.

Inside ``channels_last(codec)`` the analysis and synthesis transforms (``g_a``, ``g_s``) and the
hyper-analysis (``h_a``) hold their convolution weights channels-last, so every convolution and
GDN among them reads and writes channels-last maps (oneDNN's kernels on CPU, cuDNN's NHWC ones
on a GPU) and the adapters hooked on them take their channels-last path
(``ParallelAdapter._forward_channels_last``). The codec and its adapters are the same objects:
the weights go back to their usual layout when the block ends, so training and everything
outside the block see exactly the numbers they saw before.

Why those three and no other module: the decoder must compute the entropy parameters that pick
the rANS tables (the hyper-synthesis ``h_s``, and any context model) exactly as the encoder did,
so those stay on the usual path on both sides, and a file coded inside the block decodes outside
it and the other way round. What the block changes is only where float rounding falls inside
encoder-only (``g_a``, ``h_a``) and decoder-only (``g_s``) transforms: a few latents may round the
other way (the rate stays the same), and decoded pixels differ from the usual path's by float
rounding, never by a wrong table.

The other half of the fastest CPU path is the allocator's: ``icmh_hub.core.memory.keep_freed_memory``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

TRANSFORMS = ("g_a", "g_s", "h_a")  # also TIC's g_a0, g_s3, ...: names start with these


def transforms(model: nn.Module) -> list[nn.Module]:
    """The base codec's modules that the channels-last path converts (see the module's doc)."""
    return [module for name, module in model.named_children() if name.startswith(TRANSFORMS)]


@contextlib.contextmanager
def channels_last(codec: nn.Module) -> Iterator[nn.Module]:
    """Run ``codec`` (an AdaptedCodec or a CompressAI model) on its fastest path inside the block:
    no autograd, and its transforms and adapters on channels-last maps.

    ``compress`` / ``decompress`` / ``forward`` are called as usual inside it; their inputs may be
    in any layout (the first convolution's channels-last weights make its output channels-last).
    Not re-entrant across threads: the block changes the layout of the codec's own weights."""
    modules = transforms(getattr(codec, "base", codec))
    for module in modules:
        module.to(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            yield codec
    finally:
        for module in modules:
            module.to(memory_format=torch.contiguous_format)
