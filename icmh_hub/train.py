"""Train task adapters on a frozen codec with the paper's loss ``R + lambda * D_task``.

R is the estimated bpp from the codec's likelihoods; D compares the features a frozen
recognition model extracts from the original and from the reconstruction (no labels needed).
Only the adapters are given to the optimizer; the codec and the task model are never changed.

Quantisation during training (``training_forward``), as the paper's released code does it: the
likelihoods see additive uniform noise, the decoder sees straight-through rounded latents
(``round(y - mu) + mu``, ``round(z - median) + median``). Unlike the released code, the frozen
codec runs in eval mode (no dropout or stochastic depth), and the entropy model's quantiles are
never re-optimised. Codecs whose forward we do not mirror fall back to their own forward in
train() mode (noise for the decoder as well).

``FullFinetuner`` is the paper's comparison row: the same loss, but every codec parameter
trains (except the entropy bottleneck quantiles); it saves a whole codec state_dict.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from compressai.models.google import (
    JointAutoregressiveHierarchicalPriors,
    MeanScaleHyperprior,
    ScaleHyperprior,
)
from compressai.ops import quantize_ste
from torch import nn

from .adapter_files import save_adapters
from .adapter_set import STAGES, build_adapters
from .attach import attach
from .codecs import get_codec
from .data import ImageFolder, step_loader
from .errors import IcmhError
from .model_card import write_card
from .rate import estimated_bpp
from .recipes import DEFAULT_RECIPE, Recipe, get_recipe
from .task_models import TaskFeatures

CHECKPOINT = "checkpoint.pt"


# -- the codec's forward during training -----------------------------------------------------
def _hyperprior_z(model: nn.Module, y: torch.Tensor, absolute: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """z likelihoods with noise; z_hat = round(z - median) + median, straight through."""
    z = model.h_a(torch.abs(y) if absolute else y)
    _, z_likelihoods = model.entropy_bottleneck(z, training=True)
    medians = model.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)
    return quantize_ste(z - medians) + medians, z_likelihoods


def _ste_y(y: torch.Tensor, means: torch.Tensor | None) -> torch.Tensor:
    return quantize_ste(y) if means is None else quantize_ste(y - means) + means


def training_forward(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """CompressAI-style output (x_hat, likelihoods) with the training quantisation above.

    Mirrored forwards: ScaleHyperprior (bmshj2018-hyperprior), MeanScaleHyperprior
    (mbt2018-mean) and JointAutoregressiveHierarchicalPriors (mbt2018, cheng2020-*; the context
    model sees the noisy latents, as in CompressAI). Any other model: its own forward, in train().
    """
    forward = type(model).forward
    if forward not in (ScaleHyperprior.forward, MeanScaleHyperprior.forward, JointAutoregressiveHierarchicalPriors.forward):
        return _own_forward(model, x)
    y = model.g_a(x)
    z_hat, z_likelihoods = _hyperprior_z(model, y, absolute=forward is ScaleHyperprior.forward)
    params = model.h_s(z_hat)
    if forward is ScaleHyperprior.forward:
        scales, means = params, None
    elif forward is MeanScaleHyperprior.forward:
        scales, means = params.chunk(2, 1)
    else:
        context = model.context_prediction(model.gaussian_conditional.quantize(y, "noise"))
        scales, means = model.entropy_parameters(torch.cat((params, context), dim=1)).chunk(2, 1)
    _, y_likelihoods = model.gaussian_conditional(y, scales, means=means, training=True)
    return {"x_hat": model.g_s(_ste_y(y, means)), "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}


def _own_forward(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    was_training = model.training
    model.train()
    try:
        return model(x)
    finally:
        model.train(was_training)


def supports_training_forward(model: nn.Module) -> bool:
    """Whether ``training_forward`` mirrors this model (else it falls back to its own forward)."""
    return type(model).forward in (ScaleHyperprior.forward, MeanScaleHyperprior.forward, JointAutoregressiveHierarchicalPriors.forward)


# -- one step's numbers ------------------------------------------------------------------------
@dataclass
class StepResult:
    loss: float
    bpp: float
    distortion: float


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": json.dumps(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Loop:
    """What adapter training and full fine-tuning share: data, loss, schedule, checkpoints.

    Subclasses say which parameters train (``trainable``) and what the result file is (``save``).
    """

    kind = "adapters"

    def __init__(
        self,
        codec: str,
        q: int,
        task: str,
        data: str | Path,
        recipe: str | Recipe = DEFAULT_RECIPE,
        *,
        lmbda: float | None = None,
        steps: int | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        crop: int | None = None,
        lr: float | None = None,
        seed: int | None = None,
        device: str | torch.device | None = None,
        out_dir: str | Path = "runs/train",
        pretrained: bool = True,
        task_weights: str | None = None,
        amp: bool = False,
        checkpoint_every: int = 500,
        workers: int = 0,
        progress: bool = True,
        features: TaskFeatures | None = None,
    ) -> None:
        self.spec = get_codec(codec)
        self.spec.check_quality(q)
        self.q, self.task, self.data_dir = q, task, Path(data)
        if isinstance(recipe, str):
            recipe = get_recipe(recipe, task, q, lmbda)
        self.recipe = recipe.override(lmbda=lmbda, epochs=epochs, batch_size=batch_size, crop=crop, lr=lr, seed=seed, task_weights=task_weights)
        self.device = torch.device(device) if device is not None else default_device()
        if amp and self.device.type != "cuda":
            raise IcmhError("--amp (mixed precision) needs a CUDA device; drop --amp to train on the CPU")
        if steps is not None and steps < 1:
            raise IcmhError(f"steps must be positive, got {steps}")
        self.amp, self.pretrained, self.progress, self.custom_features = amp, pretrained, progress, features
        self.out_dir, self.checkpoint_every, self.workers = Path(out_dir), checkpoint_every, workers
        self.dataset = ImageFolder(self.data_dir, self.recipe.crop, self.recipe.seed)
        images = min(self.recipe.epoch_images or len(self.dataset), len(self.dataset))
        per_epoch = max(1, images // self.recipe.batch_size)
        self.total_steps = steps if steps is not None else self.recipe.epochs * per_epoch
        self.step = 0
        self.last = StepResult(math.nan, math.nan, math.nan)
        torch.manual_seed(self.recipe.seed)
        random.seed(self.recipe.seed)
        self._build()

    # -- set-up --------------------------------------------------------------------------------
    def _build(self) -> None:
        self.codec = self._build_codec().to(self.device)
        features = self.custom_features or TaskFeatures(self.task, weights=self.recipe.task_weights if self.pretrained else None)
        self.features = features.to(self.device)
        params = list(self.trainable())
        if not params:
            raise IcmhError("nothing to train: no trainable parameters")
        self.optimizer = torch.optim.Adam(params, lr=self.recipe.lr)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, self.milestone_steps(), self.recipe.gamma)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)

    def _build_codec(self) -> nn.Module:
        return self.spec.build(self.q, pretrained=self.pretrained)

    def milestone_steps(self) -> list[int]:
        """The recipe's milestones (in epochs) placed at the same fraction of this run's steps."""
        return [max(1, round(m / self.recipe.epochs * self.total_steps)) for m in self.recipe.milestones]

    def trainable(self) -> Iterable[nn.Parameter]:
        raise NotImplementedError

    @property
    def model(self) -> nn.Module:
        """The CompressAI model the training forward runs (with adapters hooked in, if any)."""
        return self.codec

    # -- one step ------------------------------------------------------------------------------
    def loss(self, images: torch.Tensor) -> tuple[torch.Tensor, StepResult]:
        """``R + lambda * D`` for a batch of [0, 1] images, and its parts."""
        with torch.no_grad():
            reference = self.features(images)
        with torch.autocast(self.device.type, enabled=self.amp):
            out = training_forward(self.model, images)
            features = self.features(out["x_hat"])
        likelihoods = {k: v.float() for k, v in out["likelihoods"].items()}
        bpp = estimated_bpp(likelihoods, images.shape[-2] * images.shape[-1])
        distortion = self.features.distortion(reference, features)
        loss = bpp + self.recipe.lmbda * distortion
        return loss, StepResult(loss.item(), bpp.item(), distortion.item())

    def train_step(self, images: torch.Tensor) -> StepResult:
        self.optimizer.zero_grad(set_to_none=True)
        loss, result = self.loss(images.to(self.device, non_blocking=True))
        if not math.isfinite(result.loss):
            raise IcmhError(f"the loss became {result.loss} at step {self.step}; lower the learning rate or use fp32 (no --amp)")
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        self.last = result
        return result

    # -- the run -------------------------------------------------------------------------------
    def fit(self, resume: bool = False, stop_at: int | None = None) -> Path | None:
        """Train to the last step and save the result (returned). ``resume`` continues from
        ``out_dir/checkpoint.pt``; ``stop_at`` stops (with a checkpoint) after that step,
        as an interruption would, and returns None."""
        if resume:
            self.load_checkpoint(self.out_dir / CHECKPOINT)
        stop = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
        self._prepare()
        bar = _progress(self.progress, self.step, self.total_steps, f"{self.spec.name} q{self.q} {self.task}")
        try:
            for images in step_loader(self.dataset, self.recipe.batch_size, self.step, stop, self.workers):
                result = self.train_step(images)
                bar.update(1)
                bar.set_postfix(loss=f"{result.loss:.4f}", bpp=f"{result.bpp:.4f}", D=f"{result.distortion:.4f}")
                if self.checkpoint_every and self.step % self.checkpoint_every == 0 and self.step < stop:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            self.save_checkpoint()
            raise
        finally:
            bar.close()
        self.save_checkpoint()
        return self.save() if self.step >= self.total_steps else None

    def _prepare(self) -> None:
        """Frozen parts in eval mode (no dropout / stochastic depth); the training forward
        chooses noise or rounding itself."""
        self.codec.eval()
        self.features.eval()

    def config(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed by this run."""
        return {"kind": self.kind, "codec": self.spec.name, "q": self.q, "task": self.task, "total_steps": self.total_steps} | self.recipe.as_dict()

    def state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def save_checkpoint(self) -> Path:
        path = self.out_dir / CHECKPOINT
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint = {
            "config": json.dumps(self.config(), sort_keys=True),
            "step": self.step,
            "trained": self.state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
            "last": dataclasses.asdict(self.last),
        }
        partial = path.with_name(path.name + ".partial")
        torch.save(checkpoint, partial)
        partial.replace(path)
        return path

    def load_checkpoint(self, path: Path) -> None:
        if not path.is_file():
            raise IcmhError(f"no checkpoint to resume at {path}; run without --resume, or give the --out of the interrupted run")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling errors come in many types
            raise IcmhError(f"cannot read checkpoint {path} ({type(exc).__name__}); it is damaged, start again without --resume") from None
        saved, ours = json.loads(checkpoint["config"]), self.config()
        different = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
        if different:
            detail = ", ".join(f"{k}: {saved.get(k)!r} there, {ours.get(k)!r} now" for k in different[:4])
            raise IcmhError(f"checkpoint {path} is from a different run ({detail}); use the same settings or another --out")
        self.load_state(checkpoint["trained"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        _set_rng_state(checkpoint["rng"])
        self.step = int(checkpoint["step"])
        self.last = StepResult(**checkpoint["last"])

    def training_record(self) -> dict[str, Any]:
        """The training section of the metadata: recipe, every hyper-parameter, outcome."""
        return {
            "recipe": self.recipe.name,
            "hyperparameters": self.recipe.as_dict() | {"milestone_steps": self.milestone_steps()},
            "steps": self.step,
            "data": self.data_dir.name,
            "images": len(self.dataset),
            "seed": self.recipe.seed,
            "quantisation": "noise likelihoods, straight-through rounding to the decoder"
            if supports_training_forward(self.model)
            else "codec's own train() forward (noise likelihoods and decoder)",
            "pretrained": self.pretrained,
            "task_model": self.recipe.task_weights if self.custom_features is None else "custom",
            "amp": self.amp,
            "final": dataclasses.asdict(self.last),
        }

    def save(self) -> Path:
        raise NotImplementedError


class Trainer(_Loop):
    """Trains one task's adapters (variant, width d and stages by name) on a frozen codec.

    >>> Trainer("mbt2018-mean", 3, "cls", "imagenet/train").fit()   # doctest: +SKIP
    writes ``out_dir/<codec>-<task>-q<q>.safetensors``, its model card ``README.md`` next to it,
    and ``checkpoint.pt`` (for ``fit(resume=True)``).
    """

    def __init__(
        self,
        codec: str,
        q: int,
        task: str,
        data: str | Path,
        recipe: str | Recipe = DEFAULT_RECIPE,
        *,
        variant: str = "sfma",
        middle_dim: int = 64,
        stages: Sequence[int] = STAGES,
        **options: Any,
    ) -> None:
        self.layout = {"variant": variant, "middle_dim": middle_dim, "stages": tuple(stages)}
        super().__init__(codec, q, task, data, recipe, **options)

    def _build_codec(self) -> nn.Module:
        base = super()._build_codec()
        self.adapters = build_adapters(self.spec.name, self.q, init="reference", **self.layout, task=self.task)
        self.base = base
        return attach(base, self.spec.name, {self.task: self.adapters}, quality=self.q)

    @property
    def model(self) -> nn.Module:
        return self.codec.base

    def trainable(self) -> Iterable[nn.Parameter]:
        for parameter in self.base.parameters():
            parameter.requires_grad_(False)
        return list(self.adapters.parameters())

    def _prepare(self) -> None:
        super()._prepare()
        self.adapters.train()

    def config(self) -> dict[str, Any]:
        return super().config() | {"variant": self.layout["variant"], "middle_dim": self.layout["middle_dim"], "stages": list(self.layout["stages"])}

    def state(self) -> dict[str, torch.Tensor]:
        return self.adapters.state_dict()

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.adapters.load_state_dict(state)

    def save(self) -> Path:
        """The adapter file (with the training record in its info) and its model card."""
        self.adapters.eval()
        path = self.out_dir / f"{self.spec.name}-{self.task}-q{self.q}.safetensors"
        save_adapters(self.adapters, path, task=self.task, lmbda=self.recipe.lmbda, training=self.training_record())
        write_card(path, self.out_dir / "README.md")
        return path


class FullFinetuner(_Loop):
    """The paper's full fine-tuning baseline: the whole codec trains for the task loss (the
    entropy bottleneck's quantiles excepted; they would need CompressAI's aux optimizer).
    Saves ``<codec>-<task>-q<q>-full.safetensors``, a whole codec state_dict with fresh CDF tables."""

    kind = "full-finetune"

    def trainable(self) -> Iterable[nn.Parameter]:
        params = []
        for name, parameter in self.codec.named_parameters():
            train = not name.endswith("quantiles")
            parameter.requires_grad_(train)
            if train:
                params.append(parameter)
        return params

    def state(self) -> dict[str, torch.Tensor]:
        return self.codec.state_dict()

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.codec.load_state_dict(state)

    def save(self) -> Path:
        from safetensors.torch import save_file

        self.codec.eval()
        self.codec.update(force=True)
        path = self.out_dir / f"{self.spec.name}-{self.task}-q{self.q}-full.safetensors"
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.codec.state_dict().items()}
        metadata = {"format": "icmh-full-finetune", "codec": self.spec.name, "quality": str(self.q), "task": self.task,
                    "lmbda": str(self.recipe.lmbda), "training": json.dumps(self.training_record(), sort_keys=True)}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=metadata)
        return path


def _progress(enabled: bool, initial: int, total: int, description: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=description, disable=not enabled, dynamic_ncols=True)
