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
from .core.identity import base_digest
from .core.methods import get_method, method_name
from .core.spec import CodecSpec, get_codec
from .core.names import check_name, check_names
from .core.tasks import HUMAN
from .errors import AdapterMismatchError, BitstreamError, CheckpointError, DownloadError, IcmhError, InvalidArgumentError
from .formats.adapter_files import load_adapters
from .formats.reference import codec_state, load_codec_state
from .hub.fetch import fetch, fetch_base
from .hub.index import IndexSpec, find_by_sha256, load_index, resolve

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


def random_adapters(codec: str, q: int, task: str, method: str | None = None) -> AdapterSet:
    """One task's seeded random adapters of ``method`` (PyTorch's default init, so they do change
    the output), drawn from a seed of their own: the same whichever other tasks are loaded beside
    them (a decoder rebuilds only the task a file was coded with)."""
    found = get_method(method_name(method))
    options = {"init": "reference"} if found.has_option("init") else {}
    with torch.random.fork_rng():
        torch.manual_seed(RANDOM_WEIGHTS_SEED + zlib.crc32(task.encode()))
        return build_adapters(codec, q, method=found.name, options=options, task=task)


def registry_adapters(codec: str, task: str, q: int, lmbda: float | None = None, revision: str | None = None,
                      index: IndexSpec = None, method: str | None = None) -> AdapterSet:
    """The registry's adapters for ``task``: resolved, downloaded, verified, checked against the entry."""
    entry = resolve(codec, task, q, lmbda=lmbda, revision=revision, index=index, method=method)
    adapters = load_adapters(fetch(entry))
    if (adapters.codec, adapters.quality, adapters.method) != (entry.codec, entry.q, entry.method) or adapters.task not in (None, entry.task):
        raise AdapterMismatchError(
            f"the file of {entry.id} holds {adapters.method} adapters for {adapters.codec} q{adapters.quality} "
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
    method: str | None = None,
) -> AdaptedCodec:
    """The codec ``codec`` at quality ``q`` with the adapters of ``task`` (or several tasks).

    The first task is active; ``task=None`` gives the human-vision codec with no adapters.
    ``pretrained=True`` resolves each task in the registry index, downloads and verifies its
    adapter file and builds the base codec with its published weights. ``pretrained=False``
    needs no network: seeded random codec and adapters, what tests and trials of the plumbing
    need. ``method`` (``variant`` is its 0.1 name) picks entries of that adapter method (e.g.
    "transtic", or "scalable-sfma" for two-layer coding); by default the registry's SFMA ones.
    """
    spec = get_codec(codec)
    spec.check_quality(q)
    method = method_name(method, variant)
    tasks = check_names("task", task)
    if pretrained:
        adapters = {name: registry_adapters(spec.name, name, q, lmbda, revision, index, method) for name in tasks}
    else:
        adapters = {name: random_adapters(spec.name, q, name, method) for name in tasks}
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
    index: IndexSpec = None, variant: str | None = None, method: str | None = None,
) -> AdaptedCodec:
    """The codec to code or evaluate with: the base codec plus the adapters of ``task`` from
    ``adapter`` (a file or an AdapterSet), else from the registry, else (``pretrained=False``)
    seeded random ones. With an adapter and no task, the task is the one the adapter names;
    ``task`` None or "human" without an adapter gives the plain codec."""
    spec = get_codec(codec)
    spec.check_quality(q)
    if task is not None:
        check_name("task", task)
    if task == HUMAN:
        if adapter is not None:
            raise InvalidArgumentError("an adapter was given with task 'human'; drop one of them (human vision uses no adapters)")
        task = None
    asked, method = method or variant, method_name(method, variant)
    if adapter is None:
        return load(spec.name, task, q, pretrained=pretrained, index=index, method=method)
    adapters = adapter_set(adapter)
    task = task or adapters.task
    if not task:
        raise InvalidArgumentError("the adapter file names no task; say which with --task (e.g. --task cls)")
    if asked and adapters.method != method:
        raise AdapterMismatchError(f"the adapter file holds {adapters.method} adapters, not {method}; drop --method or give the matching file")
    if adapters.task and adapters.task != task:
        raise AdapterMismatchError(f"the adapter file is for task {adapters.task!r}, not {task!r}; pass --task {adapters.task} or give the matching file")
    return attach(build_base(spec.name, q, pretrained, index), spec.name, {task: adapters}, quality=q).eval()


# -- what a bitstream names (the decoder's one resolver) -------------------------------------


def codec_for_bitstream(codec: str, q: int, pretrained: bool, digest: str, index: IndexSpec = None) -> AdaptedCodec:
    """The human-vision codec whose base weights have ``digest``, as a .icmh header names them;
    other weights are refused, never decoded into a wrong picture."""
    model = load(codec, None, q, pretrained=pretrained, index=index)
    found = base_digest(model.base)
    if found != digest:
        kind = "pretrained" if pretrained else "seeded random"
        raise BitstreamError(
            f"the {kind} {codec} q{q} weights here (digest {found[:12]}) are not the ones the file was coded with "
            f"(digest {digest[:12]}); decode with the same base weights (same icmh-hub, CompressAI and torch "
            "versions, or the same checkpoint)"
        )
    return model


def adapters_for_bitstream(codec: str, q: int, task: str, method: str | None, kind: str, ident: str,
                           pretrained: bool, index: IndexSpec = None) -> AdapterSet:
    """The adapters a .icmh header names: the seeded random ones (``kind`` "tensors" with random
    base weights), else the registry entry whose file has the sha256 ``ident``."""
    if kind == "tensors":
        if pretrained:
            raise BitstreamError(
                "this file was coded with adapters that were never saved to a file; "
                "decode in Python with the same adapters (adapter=AdapterSet, or codecs=[the codec])"
            )
        return random_adapters(codec, q, task, method)
    entry = find_by_sha256(ident, index)
    if entry is None:
        raise BitstreamError(
            f"no registry entry has the adapter sha256 {ident[:12]}... this file was coded with "
            f"({codec} q{q} task {task}); pass --adapter PATH"
        )
    return load_adapters(fetch(entry))


def task_adapters(codec: str, q: int, task: str, pretrained: bool, index: IndexSpec = None, method: str | None = None) -> AdapterSet:
    """A task's default adapters: the registry's for pretrained weights, else the seeded random ones."""
    if not pretrained:
        return random_adapters(codec, q, task, method)
    return registry_adapters(codec, task, q, index=index, method=method)
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
