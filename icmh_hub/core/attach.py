"""Attach adapters to a CompressAI codec, switch tasks, detach.

The base codec's modules, parameters and state_dict are never modified. Each insertion point
gets one dispatcher: a forward hook that hands the module's output to the active task's adapters,
or (for methods that work inside a module, such as TransTIC's prompts) the module's forward
replaced on the instance by one that runs the active method's version with the module's own
weights. With no task active (human vision) both leave the module exactly as it is. Detaching
removes them, which gives back the base codec bit for bit. Switching tasks changes one attribute,
so it is instant and needs no reload.

The adapted codec is a CompressAI ``CompressionModel``: attributes it lacks are the base codec's,
its state_dict is the base codec's plus ``adapters.TASK.*``, and the base is frozen while attached
(``requires_grad`` given back on detach), so only adapters train, as in PEFT.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .._compressai import compressai  # noqa: F401  (first, without its import warning)
from compressai.models import CompressionModel

from ..errors import AttachError, unknown_name
from . import mixed
from .adapter_set import AdapterSet
from .spec import get_codec
from .tasks import HUMAN as HUMAN_NAME

HUMAN = None  # the active task of the plain codec
ADAPTERS_PREFIX = "adapters."  # of the adapters' keys in an AdaptedCodec's state_dict
_ATTACHED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


class AdaptedCodec(CompressionModel):
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
        self._hooks: list[Any] = []  # RemovableHandles and _ReplacedForwards
        self._hooked: set[tuple[str, str]] = set()  # (module path, kind)
        self._requires_grad = [p.requires_grad for p in base.parameters()]  # given back by detach
        base.requires_grad_(False)  # frozen: only adapters train
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

    @property
    def layered(self) -> bool:
        """Whether the active task codes in two layers (a scalable method); never in human mode."""
        adapters = self.adapters
        return adapters is not None and adapters.layered

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
        self._hook_points(adapters)
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

    # -- CompressAI's interface, the active method's way ------------------------------------------
    # A method may code its own way (the scalable ones in two layers, icmh_hub.core.scalable):
    # the active adapter set's codec_* methods decide; with no task active, the base codec's.
    # ``tasks=`` (one task name or None per image) codes a mixed batch, each image exactly as
    # alone with its task (icmh_hub.core.mixed).
    def forward(self, x: torch.Tensor, tasks: Sequence[str | None] | None = None) -> dict[str, Any]:
        if tasks is not None:
            return mixed.forward_mixed(self, x, tasks)
        adapters = self.adapters
        return self.base(x) if adapters is None else adapters.codec_forward(self, x)

    def compress(self, x: torch.Tensor, tasks: Sequence[str | None] | None = None) -> dict[str, Any]:
        if tasks is not None:
            return mixed.compress_mixed(self, x, tasks)
        adapters = self.adapters
        return self.base.compress(x) if adapters is None else adapters.codec_compress(self, x)

    def decompress(self, strings: Any, shape: Any, tasks: Sequence[str | None] | None = None, **kwargs: Any) -> dict[str, Any]:
        if tasks is not None:
            return mixed.decompress_mixed(self, strings, shape, tasks, **kwargs)
        adapters = self.adapters
        return self.base.decompress(strings, shape, **kwargs) if adapters is None else adapters.codec_decompress(self, strings, shape, **kwargs)

    def update(self, scale_table: Any = None, force: bool = False, **kwargs: Any) -> bool:
        return self.base.update(scale_table=scale_table, force=force, **kwargs)

    def aux_loss(self) -> torch.Tensor:
        return self.base.aux_loss()

    # -- the wrapped CompressAI model, as PEFT wraps a model -----------------------------------
    def __getattr__(self, name: str) -> Any:
        """Attributes the adapted codec lacks are the base codec's (g_a, entropy_bottleneck, N, ...)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            base = self._modules.get("base")
            if base is None or name.startswith("__"):
                raise
            return getattr(base, name)

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> dict[str, Any]:
        """The base codec's state_dict, unprefixed (it loads into a plain model of the family), plus
        each task's adapters under ``adapters.TASK.``."""
        state = self.base.state_dict(prefix=prefix, keep_vars=keep_vars)
        for task, adapters in self.adapter_sets.items():
            state.update(adapters.state_dict(prefix=f"{prefix}{ADAPTERS_PREFIX}{task}.", keep_vars=keep_vars))
        if destination is not None:
            destination.update(state)
            return destination
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """The inverse of ``state_dict``: base keys into the base codec, ``adapters.TASK.`` keys into
        the adapters held for TASK (a task not held is an error under ``strict``)."""
        base = {k: v for k, v in state_dict.items() if not k.startswith(ADAPTERS_PREFIX)}
        result = self.base.load_state_dict(base, strict=strict)
        for task, adapters in self.adapter_sets.items():
            part = f"{ADAPTERS_PREFIX}{task}."
            adapters.load_state_dict({k[len(part):]: v for k, v in state_dict.items() if k.startswith(part)}, strict=strict)
        stray = [k for k in state_dict if k.startswith(ADAPTERS_PREFIX) and k.split(".")[1] not in self.adapter_sets]
        if stray and strict:
            raise AttachError(f"the state_dict has adapters of tasks this codec does not hold ({stray[:2]}); add them first")
        return result

    def trainable_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts: the base codec is frozen, the adapters train."""
        parameters = list(self.parameters())
        return sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)

    def print_trainable_parameters(self) -> None:
        trainable, total = self.trainable_parameters()
        print(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / max(total, 1):.4f}")

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

    def _hook_points(self, adapters: AdapterSet) -> None:
        """One dispatcher per (module, kind) any held set uses: it asks the active set, if any."""
        modules = dict(self.base.named_modules())
        for path in sorted(adapters.points.values()):
            kind = adapters.hook_kind(path)
            if (path, kind) in self._hooked:
                continue
            if kind == "output":
                self._hooks.append(modules[path].register_forward_hook(self._output_hook(path)))
            elif kind == "forward":
                self._hooks.append(_ReplacedForward(modules[path], self._forward_dispatch(path)))
            else:
                raise AttachError(f"{type(adapters).__name__} attaches {path} as {kind!r}; a method attaches points as 'output' or 'forward'")
            self._hooked.add((path, kind))

    def _active_for(self, path: str, kind: str) -> AdapterSet | None:
        adapters = self.adapters
        if adapters is None or path not in adapters.keys_by_path or adapters.hook_kind(path) != kind:
            return None
        return adapters

    def _output_hook(self, path: str):
        owner = weakref.ref(self)

        def apply_active_adapter(module: nn.Module, inputs: Any, output: Any):
            codec = owner()
            adapters = None if codec is None else codec._active_for(path, "output")
            return None if adapters is None else adapters.adapt_output(path, module, inputs, output)  # None: untouched

        return apply_active_adapter

    def _forward_dispatch(self, path: str):
        owner = weakref.ref(self)

        def forward(module: nn.Module, own: Any, *args: Any, **kwargs: Any) -> Any:
            codec = owner()
            adapters = None if codec is None else codec._active_for(path, "forward")
            return own(*args, **kwargs) if adapters is None else adapters.adapt_forward(path, module, own, *args, **kwargs)

        return forward

    def _remove_hooks(self) -> nn.Module:
        self._check_attached()
        for handle in reversed(self._hooks):
            handle.remove()
        self._hooks.clear()
        self._hooked.clear()
        base = self.base
        for parameter, flag in zip(base.parameters(), self._requires_grad):
            parameter.requires_grad_(flag)
        _ATTACHED.discard(base)
        del self.base
        self.base = None
        self._task = HUMAN
        return base


class _ReplacedForward:
    """A module's forward replaced on the instance (its class, weights and state_dict untouched)
    by ``dispatch(module, own_forward, *args)``; ``remove()`` puts the module's own forward back."""

    def __init__(self, module: nn.Module, dispatch: Any) -> None:
        self.module = module
        self.own = module.__dict__.get("forward")  # an instance forward set before us, if any
        own = self.own or type(module).forward.__get__(module)
        module.forward = lambda *args, **kwargs: dispatch(module, own, *args, **kwargs)

    def remove(self) -> None:
        if self.own is None:
            del self.module.forward
        else:
            self.module.forward = self.own


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
