"""One evaluation: a codec (with a task's adapters, or none) on a task's data, every number measured.

Each image is coded through ``icmh_hub.coding.code`` (the bytes ``icmh-hub compress`` writes),
then measured: ``bpp_est`` from the likelihoods (what the paper reports) and ``bpp_actual`` from
the real strings, over the unpadded pixels; PSNR and MS-SSIM (None where the image is too small
for MS-SSIM's 5 scales) against the prepared original; and the task's accuracy (top-1 in %, or
COCO AP / AP50 / AP75 in %). Per-image records are averaged over images. ``human=True``
evaluates the base codec (adapters off): the curve adapters are compared with.

Scalable adapters (two layers): the rates, PSNR and accuracy are the base layer's (the machine
picture, what the task receives); ``bpp_full`` and ``psnr_full`` are the whole file's (the human
picture, the base codec's own).

Under torchrun (an initialised process group, see ``core.distributed``) each rank measures every
N-th image and the per-image records are gathered before they are averaged, so the metrics are
those of one process on the same images (same records, same order).
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..coding import code
from ..core import distributed
from ..core.attach import AdaptedCodec
from ..core.identity import base_digest
from ..core.recognition import build_detector
from ..core.task_models import build_task_model as build_registered, default_task_model, get_task_model
from ..core.tasks import get_task
from .classification import UNLABELLED, ClassificationData, classify, top1
from .coco import CocoData, average_precision, detect, detector_size
from .metrics import image_quality, psnr, quality_summary
from .protocol import check_limit, check_protocol, default_dataset_name, image_size, protocol_label

METRIC_ORDER = (
    "top1", "bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75",
    "bpp_est", "bpp_actual", "psnr", "ms_ssim", "bpp_full", "psnr_full",
)


def build_task_model(task: str, weights: str | os.PathLike | None = "DEFAULT", model: str | None = None) -> nn.Module:
    """The frozen recognition model of ``task``: the registered task model ``model`` (default:
    the task's, ``resnet50`` with the IMAGENET1K_V1 weights training uses, for cls; torchvision's
    R50-FPN detector for det / seg). ``weights``: "DEFAULT" = the model's pretrained weights, a
    file, or None (random, for trials of the plumbing)."""
    name = model or default_task_model(task)
    if name is not None:
        get_task_model(name, task)
        return build_registered(name, weights)
    return build_detector(task, get_task(task).weights if weights == "DEFAULT" else weights)


def task_data(task: str, data: str | os.PathLike, images: str | os.PathLike | None = None, size: int | None = None,
              limit: int | None = None) -> ClassificationData | CocoData:
    """The prepared evaluation images of ``task`` (what evaluation and its figures see)."""
    if get_task(task).name == "cls":
        return ClassificationData(data, size, limit)
    return CocoData(data, images, task, size, limit)


def _device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.no_grad()
def image_records(codec: AdaptedCodec, task: str, prepared: ClassificationData | CocoData, task_model: nn.Module,
                  positions: Iterable[int], protocol: str = "256", bitstream: bool = True, progress: bool | None = None) -> list[dict[str, Any]]:
    """One record per image at ``positions`` of ``prepared``, coded with ``codec`` as it is set now."""
    from .._io import progress as bar

    positions = list(positions)
    records = []
    device = _device(codec)
    context = detector_size(task_model, prepared.short, prepared.max_size) if task != "cls" else contextlib.nullcontext()
    with context:
        for position in bar(positions, total=len(positions), desc=task, unit="img", enabled=progress):
            x, meta = prepared.item(position)
            x = x.to(device)
            coded = code(codec, x, bitstream=bitstream)
            record = image_quality(x, coded.x_hat, coded.bpp_est, coded.bpp if bitstream else None)
            if coded.x_full is not None:  # a layered codec: the human picture from both layers
                record |= {"bpp_full": coded.bpp_full, "psnr_full": psnr(x, coded.x_full)}
            if task == "cls":
                record |= classify(task_model, coded.x_hat, meta, protocol, prepared.size, original=x)
            else:
                record |= detect(task_model, coded.x_hat, meta)
            records.append({"position": position, **record})
    return records


def summarize(task: str, prepared: ClassificationData | CocoData, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The averaged metrics of an evaluation's records."""
    accuracy = top1(records) if task == "cls" else average_precision(prepared, records, task)
    return accuracy | quality_summary(records)


def evaluate(
    codec: AdaptedCodec,
    task: str,
    data: str | os.PathLike,
    task_model: nn.Module,
    images: str | os.PathLike | None = None,
    human: bool = False,
    protocol: str = "256",
    size: int | None = None,
    limit: int | None = None,
    bitstream: bool = True,
    progress: bool | None = None,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``codec`` (an AdaptedCodec) on ``task``: with its ``task`` adapters, or with none
    (``human=True``, the base codec). Returns a JSON-ready dict of measured numbers."""
    get_task(task)
    check_protocol(protocol)
    check_limit(limit)
    prepared = task_data(task, data, images, size, limit)
    world = distributed.current()
    records, error = [], None
    try:
        with codec.human() if human else codec.using(task):
            records = image_records(codec, task, prepared, task_model, world.shard(range(len(prepared))), protocol,
                                    bitstream, progress if world.main else False)
    except Exception as exc:  # every rank stops with it (agree)
        error = exc
    distributed.agree(error, world, f"evaluating {task}")
    records = sorted(itertools.chain.from_iterable(distributed.gather(records, world)), key=lambda r: r["position"])
    return result_dict(codec, task, data, prepared, records, human, protocol, size, dataset)


def result_dict(codec: AdaptedCodec, task: str, data: str | os.PathLike, prepared: ClassificationData | CocoData,
                records: list[dict[str, Any]], human: bool, protocol: str, size: int | None, dataset: str | None) -> dict[str, Any]:
    return {
        "codec": codec.codec,
        "q": codec.quality,
        "task": task,
        "mode": "human" if human else "adapted",
        "dataset": dataset or default_dataset_name(data),
        "images": len(records),
        "protocol": protocol_label(task, protocol, size),
        "size": image_size(task, size),
        "base_digest": base_digest(codec.base),
        "date": datetime.date.today().isoformat(),
        "metrics": summarize(task, prepared, records),
    } | ({"top1_of": UNLABELLED} if task == "cls" and not prepared.labelled else {})


def card_results(result: Mapping[str, Any], metrics: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The measured numbers of one ``evaluate`` result as model-card / registry metric dicts."""
    names = list(metrics) if metrics is not None else [m for m in METRIC_ORDER if m in result["metrics"]]
    label = f"{result['dataset']} ({result['protocol']})" if result["task"] == "cls" else result["dataset"]
    return [
        {
            "dataset": label,
            "images": result["images"],
            "metric": name,
            "value": round(float(result["metrics"][name]), 4),
            "date": result["date"],
            "source": "measured",
        }
        for name in names
        if result["metrics"].get(name) is not None
    ]
