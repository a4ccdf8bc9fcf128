"""``icmh_hub.load``: a ready AdaptedCodec from a codec name, task(s) and quality."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch

from .adapter_set import build_adapters
from .attach import AdaptedCodec, attach
from .codecs import get_codec

RANDOM_WEIGHTS_SEED = 0


def load(
    codec: str,
    task: str | Sequence[str] | None = None,
    q: int = 3,
    pretrained: bool = True,
    lmbda: float | None = None,
    revision: str | None = None,
) -> AdaptedCodec:
    """The codec ``codec`` at quality ``q`` with the adapters of ``task`` (or several tasks).

    The first task is active; ``task=None`` gives the human-vision codec with no adapters.
    ``pretrained=False`` needs no network: the codec and the adapters get random weights
    (PyTorch's default init, so the adapters do change the output), drawn from a fixed seed so
    that an encoder and a decoder in different processes agree; that is what tests and trials
    of the plumbing need. The codec's entropy tables are updated, so ``compress`` works.
    """
    spec = get_codec(codec)
    spec.check_quality(q)
    tasks = [task] if isinstance(task, str) else list(task or [])
    if pretrained:
        from .registry import load_pretrained  # the registry and hub layer

        return load_pretrained(spec.name, tasks, q, lmbda=lmbda, revision=revision)
    with torch.random.fork_rng():  # same random weights in every process, caller's RNG untouched
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        base = spec.build(q, pretrained=False)
        adapters = {name: _random_adapters(codec, q, name) for name in tasks}
    adapted = attach(base, codec, adapters, quality=q)
    adapted.update(force=True)
    return adapted.eval()


def _random_adapters(codec: str, q: int, task: str):
    """One task's random adapters, drawn from a seed of their own: the same whichever other
    tasks are loaded beside them (a decoder rebuilds only the task a file was coded with)."""
    torch.manual_seed(RANDOM_WEIGHTS_SEED + zlib.crc32(task.encode()))
    return build_adapters(codec, q, init="reference", task=task)
