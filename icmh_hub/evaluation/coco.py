"""Detection and segmentation on COCO-format data: images resized to the protocol's short side,
coded, detected at that size, detections mapped back to the original image, COCO AP / AP50 /
AP75 (bbox; and segm for ``seg``) with pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import DataError, MissingFileError
from .protocol import MAX_TO_SHORT, check_limit, image_size, resized_shape


def load_coco(annotations: str | os.PathLike) -> Any:
    """A pycocotools COCO object (its chatter on stdout swallowed), with a clear error."""
    from pycocotools.coco import COCO

    path = Path(annotations)
    if not path.is_file():
        raise MissingFileError(f"COCO annotations {str(path)!r} do not exist; give a COCO-format json (e.g. instances_val2017.json)")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except Exception as exc:  # json errors, missing keys
        raise DataError(f"cannot read {path} as COCO annotations ({type(exc).__name__}: {exc})") from None


class CocoData:
    """The evaluation images of a COCO json: item ``i`` is (image (1, 3, h, w) at the protocol's
    size, {"image_id", "original": (H, W)})."""

    def __init__(self, annotations: str | os.PathLike, images: str | os.PathLike | None = None, task: str = "det",
                 size: int | None = None, limit: int | None = None) -> None:
        self.coco = load_coco(annotations)
        self.folder = Path(images) if images is not None else Path(annotations).parent
        self.short = image_size(task, size)
        self.max_size = round(self.short * MAX_TO_SHORT)
        ids = sorted(self.coco.getImgIds())
        if not ids:
            raise DataError(f"{annotations} lists no images")
        self.image_ids = ids[: check_limit(limit)] if limit else ids

    def __len__(self) -> int:
        return len(self.image_ids)

    def item(self, position: int) -> tuple[torch.Tensor, dict[str, Any]]:
        from PIL import Image
        from torchvision.transforms import functional as TF

        image_id = self.image_ids[position]
        path = self.folder / self.coco.loadImgs(image_id)[0]["file_name"]
        if not path.is_file():
            raise MissingFileError(f"image {str(path)!r} named in the COCO json does not exist; give the image folder with --images")
        try:
            with Image.open(path) as picture:
                picture = picture.convert("RGB")
        except (OSError, ValueError) as exc:  # UnidentifiedImageError is an OSError
            raise DataError(f"cannot read {path} ({type(exc).__name__}); fix or remove it") from None
        h0, w0 = picture.height, picture.width
        h1, w1 = resized_shape(h0, w0, self.short, self.max_size)
        x = TF.to_tensor(TF.resize(picture, [h1, w1])).unsqueeze(0)
        return x, {"image_id": int(image_id), "original": (h0, w0)}


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
        raise DataError("the evaluated images have no (non-crowd) annotations; AP is undefined - use more images")
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
def detector_size(detector: nn.Module, short: int, max_size: int) -> Iterator[None]:
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


def detect(detector: nn.Module, x_hat: torch.Tensor, meta: Mapping[str, Any]) -> dict[str, Any]:
    """One reconstruction's record: its detections in COCO form, in the original image's pixels."""
    output = detector([x_hat[0]])[0]
    return {"detections": detections_to_coco(output, meta["image_id"], meta["original"], tuple(x_hat.shape[-2:]))}


def average_precision(data: CocoData, records: Sequence[Mapping[str, Any]], task: str) -> dict[str, Any]:
    detections = [d for r in records for d in r["detections"]]
    metrics: dict[str, Any] = {"detections": len(detections)}
    for iou_type in ("bbox", "segm") if task == "seg" else ("bbox",):
        for name, value in coco_evaluate(data.coco, detections, iou_type, data.image_ids).items():
            metrics[f"{iou_type}_{name}"] = value
    return metrics
