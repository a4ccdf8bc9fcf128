"""Mixed-task batches: one call codes images for different tasks (or for people), each image
exactly as coding it alone with its task would.

``tasks`` has one entry per image: a task name the codec holds, or None (or "human") for the
plain codec. The images are grouped by task, each task is made active once (``codec.using``)
and its images are coded one at a time, and the outputs are put back in the images' order.

One at a time, not as one batch per task: PyTorch's CPU convolutions pick their kernels by batch
size, so the same image in a batch of two and alone comes out different in the last float bits,
and that is true of the base codec's own layers (GDN, the hyper-synthesis that computes the
entropy parameters), not only of the adapters. Bytes that depend on the batch an image came in
could pick other rANS tables than a decoder that decodes it alone; image by image, every image's
bytes and pixels are those of coding it alone (``tests/test_mixed.py`` checks it bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import InvalidArgumentError
from .tasks import HUMAN

Tasks = Sequence["str | None"]


def task_groups(tasks: Tasks, batch: int) -> dict[str | None, list[int]]:
    """The images' indices for each task, in order of first appearance ("human" is None)."""
    if isinstance(tasks, (str, bytes)) or not isinstance(tasks, Sequence):
        raise InvalidArgumentError(f"tasks= takes a list with one task (or None) per image, got {type(tasks).__name__}")
    if len(tasks) != batch:
        raise InvalidArgumentError(f"tasks= has {len(tasks)} entries for a batch of {batch} images; give one per image")
    groups: dict[str | None, list[int]] = {}
    for index, task in enumerate(tasks):
        if task is not None and not isinstance(task, str):
            raise InvalidArgumentError(f"tasks[{index}] is {task!r}; each entry is a task name or None (people)")
        groups.setdefault(None if task == HUMAN else task, []).append(index)
    return groups


def compress_mixed(codec: Any, x: torch.Tensor, tasks: Tasks) -> dict[str, Any]:
    """``codec.compress(x)`` with image i coded for ``tasks[i]``: strings in the images' order."""
    groups = task_groups(tasks, x.shape[0])
    parts = {task: _each(codec, task, [x[i : i + 1] for i in indices], codec.compress) for task, indices in groups.items()}
    kinds = {len(part["strings"]) for group in parts.values() for part in group}
    if len(kinds) > 1:
        raise InvalidArgumentError("tasks= mixes single-layer and layered (scalable) tasks; code them in separate calls")
    strings: list[list[Any]] = [[None] * x.shape[0] for _ in range(kinds.pop())]
    for task, indices in groups.items():
        for index, part in zip(indices, parts[task]):
            for merged, kind in zip(strings, part["strings"]):
                merged[index] = kind[0]
    return {"strings": strings, "shape": parts[next(iter(groups))][0]["shape"]}


def decompress_mixed(codec: Any, strings: Sequence[Sequence[Any]], shape: Any, tasks: Tasks, **kwargs: Any) -> dict[str, Any]:
    """``codec.decompress`` of ``compress_mixed``'s strings, image i decoded for ``tasks[i]``."""
    groups = task_groups(tasks, len(strings[0]) if strings else 0)
    parts = [_each(codec, task, [[[kind[i]] for kind in strings] for i in indices],
                   lambda one: codec.decompress(one, shape, **kwargs)) for task, indices in groups.items()]
    return _merge(parts, groups)


def forward_mixed(codec: Any, x: torch.Tensor, tasks: Tasks) -> dict[str, Any]:
    """``codec(x)`` (the training / evaluation forward) with image i through ``tasks[i]``'s adapters."""
    groups = task_groups(tasks, x.shape[0])
    return _merge([_each(codec, task, [x[i : i + 1] for i in indices], codec) for task, indices in groups.items()], groups)


def _each(codec: Any, task: str | None, inputs: list[Any], call: Any) -> list[Any]:
    """``call`` on each input with ``task`` active (one switch for all of them)."""
    with codec.using(task):
        return [call(one) for one in inputs]


def _merge(parts: list[list[Any]], groups: dict[str | None, list[int]]) -> Any:
    """The per-image outputs (``parts[g][k]``: group g's k-th image) as one batch in the images'
    order: tensors are concatenated and reordered (autograd flows through), dicts merged key by
    key, anything else is the first image's (values that do not depend on the images)."""
    return _join([output for group in parts for output in group], [i for indices in groups.values() for i in indices])


def _join(outputs: list[Any], order: list[int]) -> Any:
    first = outputs[0]
    if isinstance(first, dict) and any(set(output) != set(first) for output in outputs):
        raise InvalidArgumentError("the tasks in tasks= give different outputs (layered and single-layer); decode them in separate calls")
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs)[torch.argsort(torch.tensor(order, device=first.device))]
    if isinstance(first, dict):
        return {key: _join([output[key] for output in outputs], order) for key in first}
    return first
