"""The one place base codecs and adapted codecs are built.

Every path that needs a codec (``icmh_hub.load``, ``compress`` / ``decompress``, training,
evaluation, conversion checks, the demo) comes here, so one (codec, q, index) gives the same
weights everywhere:

- base weights: a ``base_codecs`` item of the index (the built-in one merged with the user's,
  ``$ICMH_HUB_INDEX`` / ``index=``) when there is one, else the builder's own (CompressAI's
  zoo), or, with ``pretrained=False``, random weights drawn from a fixed seed, identical in
  every process (an encoder and a decoder on different machines agree);
- adapters: a file (or AdapterSet) given by the caller, else the registry entry for the task,
  else (``pretrained=False``) seeded random ones.

Every base codec returned is in eval mode with its entropy tables updated, ready for ``compress``.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence

import torch
from torch import nn

from ._io import read_state_dict
from .core.adapter_set import AdapterSet, build_adapters
from .core.attach import AdaptedCodec, attach
from .core.spec import CodecSpec, get_codec
from .core.tasks import HUMAN
from .errors import AdapterMismatchError, CheckpointError, DownloadError, IcmhError, InvalidArgumentError
from .formats.adapter_files import load_adapters
from .formats.reference import codec_state, load_codec_state
from .hub.fetch import fetch, fetch_base
from .hub.index import IndexSpec, load_index, resolve

RANDOM_WEIGHTS_SEED = 0
AdapterArg = str | os.PathLike | AdapterSet | None


def build_base(codec: str, q: int, pretrained: bool = True, index: IndexSpec = None) -> nn.Module:
    """The base codec ``codec`` at quality ``q`` (see the module docstring for where its weights come from)."""
    spec = get_codec(codec)
    spec.check_quality(q)
    if not pretrained:
        with torch.random.fork_rng():  # same random weights in every process, caller's RNG untouched
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            model = spec.build(q, pretrained=False)
    else:
        item = load_index(index).bases.get((spec.name, q))
        model = _builder_weights(spec, q) if item is None else _indexed_weights(spec, q, item)
    model.update(force=True)
    return model.eval()


def _indexed_weights(spec: CodecSpec, q: int, item) -> nn.Module:
    """The weights of a ``base_codecs`` item; adapter tensors in it are left out, so that an index
    may name a reference TIC-SFMA checkpoint as the base codec (its embedded base)."""
    path = fetch_base(item)
    model = spec.build(q, pretrained=False)
    state = codec_state(read_state_dict(path, f"{spec.name} q{q} base weights"))
    return load_codec_state(model, state, f"{spec.name} q{q} base weights {path.name} ({item.origin})")


def _builder_weights(spec: CodecSpec, q: int) -> nn.Module:
    try:
        return spec.build(q, pretrained=True)
    except IcmhError:
        raise
    except OSError as exc:  # urllib's errors while CompressAI downloads
        raise DownloadError(
            f"could not download the pretrained {spec.name} q{q} weights ({type(exc).__name__}: {exc}); check the "
            "network or the torch hub cache, or use random weights (--no-pretrained / pretrained=False)"
        ) from None
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"the pretrained {spec.name} q{q} weights do not load ({type(exc).__name__}: {exc})") from None


def random_adapters(codec: str, q: int, task: str, variant: str = "sfma") -> AdapterSet:
    """One task's seeded random adapters (PyTorch's default init, so they do change the output),
    drawn from a seed of their own: the same whichever other tasks are loaded beside them (a
    decoder rebuilds only the task a file was coded with)."""
    with torch.random.fork_rng():
        torch.manual_seed(RANDOM_WEIGHTS_SEED + zlib.crc32(task.encode()))
        return build_adapters(codec, q, variant=variant, init="reference", task=task)


def registry_adapters(codec: str, task: str, q: int, lmbda: float | None = None, revision: str | None = None,
                      index: IndexSpec = None, variant: str | None = None) -> AdapterSet:
    """The registry's adapters for ``task``: resolved, downloaded, verified, checked against the entry."""
    entry = resolve(codec, task, q, lmbda=lmbda, revision=revision, index=index, variant=variant)
    adapters = load_adapters(fetch(entry))
    if (adapters.codec, adapters.quality, adapters.variant) != (entry.codec, entry.q, entry.variant) or adapters.task not in (None, entry.task):
        raise AdapterMismatchError(
            f"the file of {entry.id} holds {adapters.variant} adapters for {adapters.codec} q{adapters.quality} "
            f"task {adapters.task}; the index entry is wrong, fix it"
        )
    return adapters


def load(
    codec: str,
    task: str | Sequence[str] | None = None,
    q: int = 3,
    pretrained: bool = True,
    lmbda: float | None = None,
    revision: str | None = None,
    index: IndexSpec = None,
    variant: str | None = None,
) -> AdaptedCodec:
    """The codec ``codec`` at quality ``q`` with the adapters of ``task`` (or several tasks).

    The first task is active; ``task=None`` gives the human-vision codec with no adapters.
    ``pretrained=True`` resolves each task in the registry index, downloads and verifies its
    adapter file and builds the base codec with its published weights. ``pretrained=False``
    needs no network: seeded random codec and adapters, what tests and trials of the plumbing
    need. ``variant`` picks entries of that adapter variant (e.g. "scalable-sfma": two-layer
    coding, core.scalable); by default the registry's non-scalable ones.
    """
    spec = get_codec(codec)
    spec.check_quality(q)
    tasks = [task] if isinstance(task, str) else list(task or [])
    if pretrained:
        adapters = {name: registry_adapters(spec.name, name, q, lmbda, revision, index, variant) for name in tasks}
    else:
        adapters = {name: random_adapters(spec.name, q, name, variant or "sfma") for name in tasks}
    return attach(build_base(spec.name, q, pretrained, index), spec.name, adapters, quality=q).eval()


def adapter_set(adapter: AdapterArg) -> AdapterSet:
    """An AdapterSet given as one, or read from an adapter file."""
    if isinstance(adapter, AdapterSet):
        return adapter
    if isinstance(adapter, (str, os.PathLike)):
        return load_adapters(adapter)
    raise InvalidArgumentError(f"adapter must be a path to an adapter file or an AdapterSet, got {type(adapter).__name__}")


def build_codec(
    codec: str, q: int, task: str | None = None, adapter: AdapterArg = None, pretrained: bool = True,
    index: IndexSpec = None, variant: str | None = None,
) -> AdaptedCodec:
    """The codec to code or evaluate with: the base codec plus the adapters of ``task`` from
    ``adapter`` (a file or an AdapterSet), else from the registry, else (``pretrained=False``)
    seeded random ones. With an adapter and no task, the task is the one the adapter names;
    ``task`` None or "human" without an adapter gives the plain codec."""
    spec = get_codec(codec)
    spec.check_quality(q)
    if task == HUMAN:
        if adapter is not None:
            raise InvalidArgumentError("an adapter was given with task 'human'; drop one of them (human vision uses no adapters)")
        task = None
    if adapter is None:
        return load(spec.name, task, q, pretrained=pretrained, index=index, variant=variant)
    adapters = adapter_set(adapter)
    task = task or adapters.task
    if not task:
        raise InvalidArgumentError("the adapter file names no task; say which with --task (e.g. --task cls)")
    if variant and adapters.variant != variant:
        raise AdapterMismatchError(f"the adapter file holds {adapters.variant} adapters, not {variant}; drop --variant or give the matching file")
    if adapters.task and adapters.task != task:
        raise AdapterMismatchError(f"the adapter file is for task {adapters.task!r}, not {task!r}; pass --task {adapters.task} or give the matching file")
    return attach(build_base(spec.name, q, pretrained, index), spec.name, {task: adapters}, quality=q).eval()


def from_hub(
    repo_id: str, filename: str, revision: str | None = None, q: int | None = None, task: str | None = None,
    pretrained: bool = True, index: IndexSpec = None, sha256: str | None = None, retrust: bool = False,
) -> AdaptedCodec:
    """The codec with the adapters of one file in a Hub repo, no registry entry needed.

    The file is downloaded with ``hf_hub_download`` and verified (against ``sha256``, else trust
    on first use: ``hub.fetch.fetch_hub_adapter``); its own metadata says which codec, quality
    and task it fits, so ``q`` and ``task`` only check it. The base codec is ``build_base``'s.
    """
    from .hub.fetch import fetch_hub_adapter

    adapters = load_adapters(fetch_hub_adapter(repo_id, filename, revision, sha256=sha256, retrust=retrust))
    if q is not None and q != adapters.quality:
        raise AdapterMismatchError(
            f"{repo_id}/{filename} holds adapters for {adapters.codec} q{adapters.quality}, not q{q}; drop q or give the matching file"
        )
    return build_codec(adapters.codec, adapters.quality, task, adapters, pretrained=pretrained, index=index)
