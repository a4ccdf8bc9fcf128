"""Evaluation in the paper's protocol (DESIGN.md section 5): rate, task accuracy, image quality.

- Classification (reference protocol ``"256"``): Resize(256) short side, CenterCrop(256), code
  the 256x256 image, classify the whole reconstruction; ``"256/224"`` (the common ImageNet
  protocol) classifies the center 224x224 of the reconstruction instead. Data: a folder of class
  folders (ImageFolder layout; class index = position of the folder name in sorted order, which
  is torchvision's index for ImageNet synset folders).
- Detection / segmentation: a COCO-format json and its image folder; short side 800 (max 1333),
  pad to the codec's ``pad_multiple`` (zeros, right and bottom), code, crop back, run the
  detector at that size, map detections back to the original image, COCO AP / AP50 / AP75 with
  pycocotools (bbox; plus segm for ``seg``).
- bpp over the unpadded resized pixels, per image, averaged over images: ``bpp_est`` from the
  likelihoods (what the paper reports) and ``bpp_actual`` from the real ``compress()`` strings.
- PSNR and MS-SSIM (pytorch_msssim; None where the image is too small for its 5 scales) of the
  reconstruction against the resized original.

``human=True`` evaluates the base codec (adapters off): the curve adapters are compared with.
Every number returned was measured here; results are plain dicts ready for JSON.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .codecs import get_codec
from .errors import IcmhError, unknown_name
from .rate import estimated_bits, string_bytes

PROTOCOLS = ("256", "256/224")
TASKS = ("cls", "det", "seg")
DEFAULT_SIZE = {"cls": 256, "det": 800, "seg": 800}
MAX_TO_SHORT = 1333 / 800  # COCO protocol: short side 800, long side at most 1333
PRIMARY_METRIC = {"cls": "top1", "det": "bbox_AP50", "seg": "segm_AP50"}  # the paper plots mAP@0.5
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
SUBSET_SEED = 0


# -- coding ------------------------------------------------------------------------------------
@dataclass
class Coded:
    """One image through the codec: its reconstruction (unpadded) and its two rates."""

    x_hat: torch.Tensor
    bpp_est: float
    bpp_actual: float | None


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad on the right and bottom up to a multiple of ``multiple`` (what the codec needs)."""
    height, width = x.shape[-2:]
    return F.pad(x, (0, -width % multiple, 0, -height % multiple))


@torch.no_grad()
def code_image(codec: nn.Module, x: torch.Tensor, pad_multiple: int = 64, bitstream: bool = True) -> Coded:
    """Code one (1, 3, H, W) image in [0, 1] with ``codec`` as it is set now (task or human).

    ``bitstream=True`` really entropy-codes and decodes (the reconstruction is the decoded one,
    ``bpp_actual`` the string lengths); otherwise the forward pass's rounded reconstruction is
    used and ``bpp_actual`` is None. Both rates count the H x W pixels, not the padding.
    """
    height, width = x.shape[-2:]
    padded = pad_to_multiple(x, pad_multiple)
    out = codec(padded)
    bpp_est = float(estimated_bits(out["likelihoods"]).sum()) / (height * width)
    bpp_actual = None
    x_hat = out["x_hat"]
    if bitstream:
        compressed = codec.compress(padded)
        bpp_actual = string_bytes(compressed["strings"]) * 8 / (height * width)
        x_hat = codec.decompress(compressed["strings"], compressed["shape"])["x_hat"]
    return Coded(x_hat[..., :height, :width].clamp(0, 1), bpp_est, bpp_actual)


@torch.no_grad()
def bits_per_position(codec: nn.Module, x: torch.Tensor, pad_multiple: int = 64) -> torch.Tensor:
    """(h, w) map of the bits the entropy model spends on y at each latent position
    (-log2 likelihood summed over channels), as in the paper's bit-allocation figure."""
    likelihoods = codec(pad_to_multiple(x, pad_multiple))["likelihoods"]
    if "y" not in likelihoods:
        raise IcmhError(f"the codec's likelihoods have no 'y' entry (found {sorted(likelihoods)}); cannot map bits")
    return -torch.log2(likelihoods["y"][0]).sum(dim=0)


# -- metrics -----------------------------------------------------------------------------------
def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of two [0, 1] images (inf for identical ones)."""
    mse = F.mse_loss(x.float(), y.float()).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """MS-SSIM (pytorch_msssim, 5 scales, window 11), or None for an image too small for it."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    if min(x.shape[-2:]) <= (11 - 1) * 2**4:
        return None
    return float(_ms_ssim(x.float(), y.float(), data_range=1.0))


def top1_correct(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """How many rows of ``logits`` have their largest value at the label."""
    return int((logits.argmax(dim=1) == labels.to(logits.device)).sum())


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


class _Quality:
    """Running per-image rate and image-quality numbers."""

    def __init__(self) -> None:
        self.bpp_est: list[float] = []
        self.bpp_actual: list[float | None] = []
        self.psnr: list[float] = []
        self.ms_ssim: list[float | None] = []

    def add(self, x: torch.Tensor, coded: Coded) -> None:
        self.bpp_est.append(coded.bpp_est)
        self.bpp_actual.append(coded.bpp_actual)
        self.psnr.append(psnr(x, coded.x_hat))
        self.ms_ssim.append(ms_ssim(x, coded.x_hat))

    def summary(self) -> dict[str, float | None]:
        return {
            "bpp_est": _mean(self.bpp_est),
            "bpp_actual": _mean(self.bpp_actual),
            "psnr": _mean([p for p in self.psnr if math.isfinite(p)]),
            "ms_ssim": _mean(self.ms_ssim),
        }


def _progress(items: Iterable, total: int, label: str, show: bool | None) -> Iterable:
    """A tqdm bar on stderr (by default only when it is a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=label, unit="img", disable=None if show is None else not show, leave=False)


# -- classification ----------------------------------------------------------------------------
def classification_dataset(root: str | os.PathLike, size: int = 256) -> Any:
    """ImageFolder of ``root`` with Resize(size) short side and CenterCrop(size)."""
    from torchvision import datasets, transforms

    root = Path(root)
    if not root.is_dir():
        raise IcmhError(f"classification data {str(root)!r} is not a folder; give a folder of class folders (ImageFolder layout)")
    transform = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()])
    try:
        return datasets.ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, RuntimeError) as exc:
        raise IcmhError(f"cannot read {root} as class folders of images ({exc})") from None


def _subset(count: int, limit: int | None) -> list[int]:
    """All indices, or ``limit`` of them drawn with a fixed seed (so a subset spans the classes)."""
    if limit is None or limit >= count:
        return list(range(count))
    if limit < 1:
        raise IcmhError(f"--limit must be at least 1, got {limit}")
    generator = torch.Generator().manual_seed(SUBSET_SEED)
    return sorted(torch.randperm(count, generator=generator)[:limit].tolist())


@torch.no_grad()
def evaluate_classification(
    codec: nn.Module,
    classifier: nn.Module,
    data: str | os.PathLike,
    protocol: str = "256",
    size: int | None = None,
    limit: int | None = None,
    bitstream: bool = True,
    pad_multiple: int = 64,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Top-1 (%) of ``classifier`` on the codec's reconstructions, with rate and quality."""
    if protocol not in PROTOCOLS:
        raise unknown_name("classification protocol", protocol, PROTOCOLS)
    size = size or DEFAULT_SIZE["cls"]
    crop = round(size * 224 / 256) if protocol == "256/224" else None
    dataset = classification_dataset(data, size)
    indices = _subset(len(dataset), limit)
    quality, correct = _Quality(), 0
    for index in _progress(indices, len(indices), "cls", progress):
        image, label = dataset[index]
        x = image.unsqueeze(0).to(_device(codec))
        coded = code_image(codec, x, pad_multiple, bitstream)
        quality.add(x, coded)
        seen = coded.x_hat if crop is None else _center_crop(coded.x_hat, crop)
        correct += top1_correct(classifier(seen), torch.tensor([label]))
    return {"images": len(indices), "top1": 100.0 * correct / len(indices), **quality.summary()}


def _device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    height, width = x.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return x[..., top : top + size, left : left + size]


# -- detection / segmentation ------------------------------------------------------------------
def load_coco(annotations: str | os.PathLike) -> Any:
    """A pycocotools COCO object (its chatter on stdout swallowed), with a clear error."""
    from pycocotools.coco import COCO

    path = Path(annotations)
    if not path.is_file():
        raise IcmhError(f"COCO annotations {str(path)!r} do not exist; give a COCO-format json (e.g. instances_val2017.json)")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except Exception as exc:  # json errors, missing keys
        raise IcmhError(f"cannot read {path} as COCO annotations ({type(exc).__name__}: {exc})") from None


def resized_shape(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """(h, w) with the short side ``short`` unless the long side would pass ``max_size``
    (detectron2's ResizeShortestEdge rule, rounding to the nearest pixel)."""
    scale = short / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def _read_image(path: Path) -> Any:
    from PIL import Image

    if not path.is_file():
        raise IcmhError(f"image {str(path)!r} named in the COCO json does not exist; give the image folder with --images")
    with Image.open(path) as image:
        return image.convert("RGB")


def detections_to_coco(
    output: Mapping[str, torch.Tensor], image_id: int, original_hw: tuple[int, int], input_hw: tuple[int, int]
) -> list[dict[str, Any]]:
    """torchvision detector output for an input of ``input_hw`` -> COCO result dicts in the
    original image's pixels (boxes scaled; masks resized, thresholded at 0.5, RLE-encoded).
    torchvision's COCO detectors use COCO category ids as labels."""
    from pycocotools import mask as mask_utils

    (h0, w0), (h1, w1) = original_hw, input_hw
    scale = torch.tensor([w0 / w1, h0 / h1, w0 / w1, h0 / h1])
    boxes = output["boxes"].detach().float().cpu() * scale
    results = []
    for i, (box, score, label) in enumerate(zip(boxes.tolist(), output["scores"].tolist(), output["labels"].tolist())):
        x1, y1, x2, y2 = box
        result = {"image_id": int(image_id), "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)}
        if "masks" in output:
            probability = output["masks"][i : i + 1].float().cpu()
            if probability.shape[-2:] != (h0, w0):
                probability = F.interpolate(probability, size=(h0, w0), mode="bilinear", align_corners=False)
            binary = np.asfortranarray((probability[0, 0] > 0.5).numpy().astype(np.uint8))
            rle = mask_utils.encode(binary)
            rle["counts"] = rle["counts"].decode("ascii")  # JSON-ready
            result["segmentation"] = rle
        results.append(result)
    return results


def coco_evaluate(coco_gt: Any, detections: Sequence[Mapping[str, Any]], iou_type: str, image_ids: Sequence[int]) -> dict[str, float]:
    """COCO AP, AP50, AP75 (in %) of ``detections`` on ``image_ids`` (pycocotools COCOeval)."""
    from pycocotools.cocoeval import COCOeval

    if not coco_gt.getAnnIds(imgIds=list(image_ids), iscrowd=False):
        raise IcmhError("the evaluated images have no (non-crowd) annotations; AP is undefined - use more images")
    if not detections:  # nothing detected: recall 0 at every threshold
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    results = copy.deepcopy(list(detections))
    if iou_type == "segm":  # area from the mask, not the box (as detectron2 does)
        for result in results:
            result.pop("bbox", None)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
        evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ap, ap50, ap75 = (max(float(s), 0.0) * 100 for s in evaluator.stats[:3])  # -1 = no GT in a class
    return {"AP": ap, "AP50": ap50, "AP75": ap75}


@contextlib.contextmanager
def _detector_size(detector: nn.Module, short: int, max_size: int):
    """Run torchvision's detector at our protocol size (it resizes inside to min_size/max_size)."""
    transform = getattr(detector, "transform", None)
    if transform is None:
        yield
        return
    saved = transform.min_size, transform.max_size
    transform.min_size, transform.max_size = (short,), max_size
    try:
        yield
    finally:
        transform.min_size, transform.max_size = saved


@torch.no_grad()
def evaluate_detection(
    codec: nn.Module,
    detector: nn.Module,
    annotations: str | os.PathLike,
    images: str | os.PathLike | None = None,
    task: str = "det",
    size: int | None = None,
    limit: int | None = None,
    bitstream: bool = True,
    pad_multiple: int = 64,
    progress: bool | None = None,
) -> dict[str, Any]:
    """COCO AP of ``detector`` on the codec's reconstructions (bbox; bbox and segm for ``seg``)."""
    from torchvision.transforms import functional as TF

    short = size or DEFAULT_SIZE[task]
    max_size = round(short * MAX_TO_SHORT)
    coco = load_coco(annotations)
    folder = Path(images) if images is not None else Path(annotations).parent
    image_ids = sorted(coco.getImgIds())
    if not image_ids:
        raise IcmhError(f"{annotations} lists no images")
    image_ids = image_ids[:limit] if limit else image_ids
    quality, detections = _Quality(), []
    with _detector_size(detector, short, max_size):
        for image_id in _progress(image_ids, len(image_ids), task, progress):
            info = coco.loadImgs(image_id)[0]
            picture = _read_image(folder / info["file_name"])
            h0, w0 = picture.height, picture.width
            h1, w1 = resized_shape(h0, w0, short, max_size)
            x = TF.to_tensor(TF.resize(picture, [h1, w1])).unsqueeze(0).to(_device(codec))
            coded = code_image(codec, x, pad_multiple, bitstream)
            quality.add(x, coded)
            output = detector([coded.x_hat[0]])[0]
            detections += detections_to_coco(output, image_id, (h0, w0), (h1, w1))
    metrics: dict[str, Any] = {"images": len(image_ids), "detections": len(detections)}
    for iou_type in ("bbox", "segm") if task == "seg" else ("bbox",):
        for name, value in coco_evaluate(coco, detections, iou_type, image_ids).items():
            metrics[f"{iou_type}_{name}"] = value
    return {**metrics, **quality.summary()}


# -- the whole run -----------------------------------------------------------------------------
def build_eval_codec(
    codec: str, q: int, task: str, adapter: str | os.PathLike | None = None, pretrained: bool = True
) -> nn.Module:
    """The AdaptedCodec to evaluate: adapters from ``adapter`` (a file) on the base codec, or the
    registry's entry (``pretrained=True``), or deterministic random weights (``pretrained=False``)."""
    from .adapter_files import load_adapters
    from .attach import attach
    from .loading import RANDOM_WEIGHTS_SEED, load

    spec = get_codec(codec)
    spec.check_quality(q)
    if adapter is None:
        return load(spec.name, task, q, pretrained=pretrained)
    adapters = load_adapters(adapter)
    if adapters.task not in (None, task):
        raise IcmhError(f"{adapter} holds {adapters.task!r} adapters, not {task!r}; pass --task {adapters.task}")
    if pretrained:
        base = spec.build(q, pretrained=True)
    else:  # the same random codec in every process, as load(pretrained=False) gives
        with torch.random.fork_rng():
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            base = spec.build(q, pretrained=False)
    base.update(force=True)
    return attach(base, spec.name, {task: adapters}, quality=q).eval()


def build_task_model(task: str, weights: str | os.PathLike | None = "DEFAULT") -> nn.Module:
    """The frozen recognition model of ``task`` (``weights=None``: random, for trials of the plumbing)."""
    from .task_models import build_classifier, build_detector

    if task not in TASKS:
        raise unknown_name("task", task, TASKS)
    return build_classifier(weights) if task == "cls" else build_detector(task, weights)


def evaluate(
    codec: nn.Module,
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
    if task not in TASKS:
        raise unknown_name("task", task, TASKS)
    if limit is not None and limit < 1:
        raise IcmhError(f"--limit must be at least 1, got {limit}")
    spec = get_codec(codec.codec)
    mode = codec.human() if human else codec.using(task)
    common = {"limit": limit, "bitstream": bitstream, "pad_multiple": spec.pad_multiple, "progress": progress, "size": size}
    with mode:
        if task == "cls":
            metrics = evaluate_classification(codec, task_model, data, protocol=protocol, **common)
        else:
            metrics = evaluate_detection(codec, task_model, data, images=images, task=task, **common)
    return {
        "codec": spec.name,
        "q": codec.quality,
        "task": task,
        "mode": "human" if human else "adapted",
        "dataset": dataset or default_dataset_name(data),
        "images": metrics.pop("images"),
        "protocol": protocol_label(task, protocol, size),
        "size": size or DEFAULT_SIZE[task],
        "date": datetime.date.today().isoformat(),
        "metrics": metrics,
    }


def protocol_label(task: str, protocol: str = "256", size: int | None = None) -> str:
    """How the images were prepared, in words short enough for a table: "256", "256/224", or
    "short side 800" (with the size actually used when it was overridden)."""
    if task != "cls":
        return f"short side {size or DEFAULT_SIZE[task]}"
    size = size or DEFAULT_SIZE["cls"]
    return f"{size}/{round(size * 224 / 256)}" if protocol == "256/224" else str(size)


def default_dataset_name(data: str | os.PathLike) -> str:
    path = Path(data)
    return path.stem if path.is_file() else path.name


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


METRIC_ORDER = (
    "top1", "bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75",
    "bpp_est", "bpp_actual", "psnr", "ms_ssim",
)


def sweep(
    codec: str,
    task: str,
    qualities: Sequence[int],
    data: str | os.PathLike,
    task_model: nn.Module,
    adapters: Mapping[int, str | os.PathLike] | Callable[[int], str | os.PathLike | None] | None = None,
    pretrained: bool = True,
    metric: str | None = None,
    rate: str = "bpp_est",
    method: str = "cubic",
    **options: Any,
) -> dict[str, Any]:
    """Base (human mode) and adapted curves over ``qualities``, and their BD-rate / BD-metric.

    ``adapters`` maps q -> adapter file (None or missing: the registry's or random adapters,
    per ``pretrained``). A BD value that cannot be computed (too few points, curves that are not
    monotonic) is reported as an error string next to the curves, not invented.
    """
    from .bd import bd_metric, bd_rate

    metric = metric or PRIMARY_METRIC[task]
    curves: dict[str, list[dict[str, Any]]] = {"base": [], "adapted": []}
    for q in qualities:
        adapter = adapters(q) if callable(adapters) else (adapters or {}).get(q)
        model = build_eval_codec(codec, q, task, adapter, pretrained=pretrained)
        for name, human in (("base", True), ("adapted", False)):
            result = evaluate(model, task, data, task_model, human=human, **options)
            curves[name].append({"q": q, **result["metrics"], "images": result["images"], "date": result["date"]})
    out: dict[str, Any] = {"codec": codec, "task": task, "rate": rate, "metric": metric, "method": method, **curves}
    try:
        points = [[p[rate] for p in curves[c]] + [p[metric] for p in curves[c]] for c in ("base", "adapted")]
        n = len(qualities)
        ref, test = points
        out["bd_rate"] = bd_rate(ref[:n], ref[n:], test[:n], test[n:], method=method)
        out["bd_metric"] = bd_metric(ref[:n], ref[n:], test[:n], test[n:], method=method)
    except (IcmhError, KeyError, TypeError) as exc:
        out["bd_error"] = str(exc)
    return out
