"""Sweeps over rate points: the base codec's curve and the adapted one, and their Bjontegaard deltas."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..assemble import build_codec
from ..core.tasks import get_task
from ..errors import BDError
from ..hub.index import IndexSpec
from .bd import bd_metric, bd_rate
from .run import evaluate

AdapterFiles = Mapping[int, str | os.PathLike] | Callable[[int], str | os.PathLike | None] | None


def sweep(
    codec: str,
    task: str,
    qualities: Sequence[int],
    data: str | os.PathLike,
    task_model: nn.Module,
    adapters: AdapterFiles = None,
    pretrained: bool = True,
    metric: str | None = None,
    rate: str = "bpp_est",
    method: str = "cubic",
    index: IndexSpec = None,
    device: str | torch.device | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Base (human mode) and adapted curves over ``qualities``, and their BD-rate / BD-metric.

    ``adapters`` maps q -> adapter file (None or missing: the registry's or random adapters,
    per ``pretrained``). A BD value that cannot be computed (too few points, curves that are not
    monotonic) is reported as an error string next to the curves, not invented. ``device``: where
    the codecs run (the task model's device is the caller's). Under torchrun every point is
    measured by all ranks together (``evaluate``); every rank returns the whole result.
    """
    metric = metric or get_task(task).metric
    curves: dict[str, list[dict[str, Any]]] = {"base": [], "adapted": []}
    notes: dict[str, str] = {}
    for q in qualities:
        adapter = adapters(q) if callable(adapters) else (adapters or {}).get(q)
        model = build_codec(codec, q, task, adapter, pretrained=pretrained, index=index)
        if device is not None:
            model = model.to(device)
        for name, human in (("base", True), ("adapted", False)):
            result = evaluate(model, task, data, task_model, human=human, **options)
            curves[name].append({"q": q, **result["metrics"], "images": result["images"], "date": result["date"]})
            notes |= {"top1_of": result["top1_of"]} if "top1_of" in result else {}  # data without labels
    out: dict[str, Any] = {"codec": codec, "task": task, "rate": rate, "metric": metric, "method": method, **curves, **notes}
    try:
        ref, test = ([[p[rate] for p in curves[c]], [p[metric] for p in curves[c]]] for c in ("base", "adapted"))
        out["bd_rate"] = bd_rate(*ref, *test, method=method)
        out["bd_metric"] = bd_metric(*ref, *test, method=method)
    except (BDError, KeyError, TypeError) as exc:
        out["bd_error"] = str(exc)
    return out


def sweep_curves(sweep: Mapping[str, Any]) -> dict[str, dict[str, list[float]]]:
    """The ``base`` / ``adapted`` curves of a ``sweep`` result, in plot form."""
    rate, metric = sweep["rate"], sweep["metric"]
    return {
        name: {"rate": [p[rate] for p in sweep[name]], "metric": [p[metric] for p in sweep[name]], "q": [p["q"] for p in sweep[name]]}
        for name in ("base", "adapted")
        if sweep.get(name)
    }
