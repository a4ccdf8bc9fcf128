"""Attach adapters to a CompressAI codec with forward hooks, switch tasks, detach.

The base codec's modules, parameters and state_dict are never modified: one forward hook per
insertion point applies the active task's adapter to that module's output, or does nothing when
no task is active (human vision). Detaching removes the hooks, which gives back the base codec
bit for bit. Switching tasks changes one attribute, so it is instant and needs no reload.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import AttachError, unknown_name
from . import scalable
from .adapter_set import AdapterSet, is_scalable
from .spec import get_codec
from .tasks import HUMAN as HUMAN_NAME

HUMAN = None  # the active task of the plain codec
_ATTACHED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


class AdaptedCodec(nn.Module):
    """A base codec plus any number of task adapter sets, at most one of them active.

    ``forward`` / ``compress`` / ``decompress`` / ``update`` / ``aux_loss`` are the base codec's,
    run with the active task's adapters. ``task`` is None for human vision (no adapter runs).
    """

    def __init__(self, base: nn.Module, codec: str, quality: int) -> None:
        super().__init__()
        if base in _ATTACHED:
            raise AttachError("this codec already has adapters attached; detach it first")
        get_codec(codec)
        self.base = base
        self.codec, self.quality = codec, quality
        self.adapter_sets = nn.ModuleDict()
        self._task: str | None = HUMAN
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._hooked_paths: set[str] = set()
        _ATTACHED.add(base)

    # -- tasks ---------------------------------------------------------------------------------
    @property
    def tasks(self) -> list[str]:
        """Names of the task adapter sets held, in the order they were added."""
        return list(self.adapter_sets)

    @property
    def task(self) -> str | None:
        """The active task, or None for the human-vision codec."""
        return self._task

    @property
    def adapters(self) -> AdapterSet | None:
        """The active task's adapter set (None in human mode)."""
        return None if self._task is HUMAN else self.adapter_sets[self._task]

    def add_adapters(self, task: str, adapters: AdapterSet, replace: bool = False) -> "AdaptedCodec":
        """Hold ``adapters`` under ``task`` (checked against the codec first); does not activate it."""
        self._check_attached()
        if not isinstance(task, str) or not task or task == HUMAN_NAME:
            raise AttachError(f"task names are non-empty strings other than 'human', got {task!r}")
        if task in self.adapter_sets and not replace:
            raise AttachError(f"task {task!r} already has adapters; pass replace=True to replace them")
        if not isinstance(adapters, AdapterSet):
            raise AttachError(f"expected an AdapterSet (see icmh_hub.build_adapters), got {type(adapters).__name__}")
        adapters.check_fits(self.codec, self.quality, self.base)
        adapters.info.setdefault("task", task)
        reference = next(self.base.parameters(), None)
        if reference is not None:
            adapters.to(device=reference.device, dtype=reference.dtype)
        self.adapter_sets[task] = adapters
        self._hook_points(adapters.points.values())
        return self

    def remove_adapters(self, task: str) -> AdapterSet:
        """Stop holding ``task``'s adapters and return them (back to human mode if it was active)."""
        adapters = self._get(task)
        if self._task == task:
            self._task = HUMAN
        del self.adapter_sets[task]
        return adapters

    def set_task(self, task: str | None) -> "AdaptedCodec":
        """Activate ``task``'s adapters; None (or "human") turns them all off."""
        self._check_attached()
        if task in (None, HUMAN_NAME):
            task = HUMAN
        else:
            self._get(task)  # raises for an unknown task
        self._task = task
        return self

    @contextlib.contextmanager
    def human(self) -> Iterator["AdaptedCodec"]:
        """Inside the block the codec is the human-vision one; the previous task comes back after."""
        with self.using(HUMAN):
            yield self

    @contextlib.contextmanager
    def using(self, task: str | None) -> Iterator["AdaptedCodec"]:
        """Inside the block ``task`` is active; the previous task comes back after."""
        previous = self._task
        self.set_task(task)
        try:
            yield self
        finally:
            self._task = previous

    # -- CompressAI's interface, passed through ------------------------------------------------
    # A scalable task (ScalableAdapters) codes in two layers (icmh_hub.core.scalable): forward and
    # compress give the base layer's picture and bits, decompress the machine picture from the base
    # layer, or with layer="full" the human picture from both (its decoder adapters off).
    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        if is_scalable(self.adapters):
            return scalable.forward_layers(self.base, self.adapters, x)
        return self.base(x)

    def compress(self, x: torch.Tensor) -> dict[str, Any]:
        if is_scalable(self.adapters):
            return scalable.compress_layers(self.base, self.adapters, x)
        return self.base.compress(x)

    def decompress(self, strings: Any, shape: Any, **kwargs: Any) -> dict[str, Any]:
        adapters = self.adapters
        if is_scalable(adapters):
            layer = kwargs.pop("layer", "base")
            with self.using(None if layer == "full" else self._task):  # the human picture: adapters off
                return scalable.decompress_layers(self.base, adapters, strings, shape, layer)
        return self.base.decompress(strings, shape, **kwargs)

    def update(self, scale_table: Any = None, force: bool = False, **kwargs: Any) -> bool:
        return self.base.update(scale_table=scale_table, force=force, **kwargs)

    def aux_loss(self) -> torch.Tensor:
        return self.base.aux_loss()

    def extra_repr(self) -> str:
        return f"codec={self.codec!r}, quality={self.quality}, tasks={self.tasks}, task={self._task!r}"

    # -- internals ----------------------------------------------------------------------------
    def _get(self, task: str) -> AdapterSet:
        if task not in self.adapter_sets:
            raise unknown_name("task", task, self.tasks, hint="Add it with add_adapters(task, adapters).")
        return self.adapter_sets[task]

    def _check_attached(self) -> None:
        if self.base is None:
            raise AttachError("this AdaptedCodec was detached; attach the codec again to use adapters")

    def _hook_points(self, paths: Any) -> None:
        modules = dict(self.base.named_modules())
        for path in sorted(set(paths) - self._hooked_paths):
            self._hooks.append(modules[path].register_forward_hook(self._make_hook(path)))
            self._hooked_paths.add(path)

    def _make_hook(self, path: str):
        owner = weakref.ref(self)

        def apply_active_adapter(module: nn.Module, inputs: Any, output: torch.Tensor):
            codec = owner()
            adapters = None if codec is None else codec.adapters
            if adapters is None:
                return None  # human vision: the module's output is left exactly as it is
            key = adapters.keys_by_path.get(path)
            return None if key is None else adapters.adapters[key](output)

        return apply_active_adapter

    def _remove_hooks(self) -> nn.Module:
        self._check_attached()
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self._hooked_paths.clear()
        base = self.base
        _ATTACHED.discard(base)
        del self.base
        self.base = None
        self._task = HUMAN
        return base


def attach(
    base: nn.Module,
    codec: str,
    adapters: Mapping[str, AdapterSet] | None = None,
    quality: int | None = None,
    task: str | None = "first",
) -> AdaptedCodec:
    """Attach task adapter sets to ``base`` (a model of the codec family ``codec``).

    ``quality`` defaults to the adapters' quality. The first task given is made active unless
    ``task`` names another one (or None for human mode).
    """
    adapters = dict(adapters or {})
    if quality is None:
        qualities = {a.quality for a in adapters.values()}
        if len(qualities) != 1:
            raise AttachError("give quality= (the base codec's quality level) when attaching")
        quality = qualities.pop()
    get_codec(codec).check_quality(quality)
    adapted = AdaptedCodec(base, codec, quality)
    try:
        for name, adapter_set in adapters.items():
            adapted.add_adapters(name, adapter_set)
    except Exception:
        adapted._remove_hooks()
        raise
    adapted.set_task(next(iter(adapters), None) if task == "first" else task)
    return adapted


def detach(codec: AdaptedCodec) -> nn.Module:
    """Remove every hook and return the base codec, exactly as it was before ``attach``."""
    if not isinstance(codec, AdaptedCodec):
        raise AttachError(f"detach() takes an AdaptedCodec, got {type(codec).__name__}")
    return codec._remove_hooks()
