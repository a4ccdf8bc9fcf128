"""The machine tasks icmh-hub knows, in one table: what each one measures and with what.

Adapters may be trained for any task name (the registry accepts yours); these three are the
paper's, with the recognition models, metrics and protocol sizes the rest of the package uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import unknown_name


@dataclass(frozen=True)
class Task:
    """``metric``: the headline accuracy (the paper plots mAP at IoU 0.5 for det / seg);
    ``eval_size``: the protocol's image size (cls: resize + center crop; det / seg: short side);
    ``weights``: the torchvision weights of the recognition model; ``level_weight``: the factor
    on the summed per-level feature MSEs in the training distortion; ``hub_type``: the Hub's
    pipeline tag for model cards."""

    name: str
    metric: str
    eval_size: int
    weights: str
    level_weight: float
    hub_type: str


TASKS: dict[str, Task] = {
    "cls": Task("cls", "top1", 256, "IMAGENET1K_V1", 0.25, "image-classification"),
    "det": Task("det", "bbox_AP50", 800, "COCO_V1", 0.2, "object-detection"),
    "seg": Task("seg", "segm_AP50", 800, "COCO_V1", 0.2, "image-segmentation"),
}
TASK_NAMES = tuple(TASKS)
HUMAN = "human"  # the name that means "no adapters" wherever a task can be given


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise unknown_name("task", name, TASK_NAMES)
    return TASKS[name]
