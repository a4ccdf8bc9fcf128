"""Train task adapters on a frozen codec with the paper's loss ``R + lambda * D_task``.

R is the estimated bpp from the codec's likelihoods; D compares the features a frozen
recognition model extracts from the original and from the reconstruction (no labels needed).
Only the adapters are given to the optimizer; the codec and the task model are never changed.
The codec's forward during training is ``training_forward`` (noise for the likelihoods,
straight-through rounding for the decoder); unlike the released code, the frozen codec runs in
eval mode (no dropout or stochastic depth), and the entropy model's quantiles are never
re-optimised.

Reproducible by construction: the adapters' initial weights come from the recipe's seed, every
batch from (seed, step) (``training.data``), every quantisation noise from (seed, step, image)
(``training.forward``); no global RNG is read or seeded. Checkpoints are written between steps
only, so a run resumed after Ctrl-C, SIGTERM or a kill gives the same adapters, bit for bit, as
one that never stopped.

Several processes (``torchrun``, see ``core.distributed``): the module that trains is wrapped in
DistributedDataParallel (gradients averaged, frozen buffers never broadcast), ``batch_size`` is
the global batch and each rank takes its own slice of every batch (and that slice's noise), so K
steps on N ranks give the adapters of K steps in one process, up to float rounding. Every step
the ranks exchange three losses and two flags (a rank failed, a stop was asked for), so they
stop together; only rank 0 writes checkpoints, results and cards and shows the progress bar.
Checkpoints do not depend on the number of ranks: a run can resume on another number.

``FullFinetuner`` is the paper's comparison row: the same loss, but every codec parameter
trains (except the entropy bottleneck quantiles); it saves a whole codec state_dict.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_path
from ..assemble import build_base
from ..core import distributed
from ..core.adapter_set import STAGES, build_adapters
from ..core.methods import get_method, method_name
from ..core.attach import attach
from ..core.identity import base_digest
from ..core.rate import estimated_bpp
from ..core.recognition import TaskFeatures
from ..core.task_models import default_task_model, task_model_features
from ..core.spec import get_codec
from ..errors import CheckpointError, InvalidArgumentError, MissingFileError, OutputExistsError, TrainingError
from ..hub.card import write_card
from ..hub.index import IndexSpec
from .data import MAX_CROP, MAX_TRAINING_PIXELS, ImageFolder, files_digest, step_loader, worker_error
from .forward import SampleNoise, supports_training_forward, training_forward
from .frozen import frozen_layers
from .recipes import DEFAULT_RECIPE, Recipe, get_recipe
from .scalable import scalable_training_forward

CHECKPOINT = "checkpoint.pt"
_RECIPE_FIELDS = ("lmbda", "epochs", "batch_size", "crop", "lr", "seed", "task_weights")


@dataclass(frozen=True)
class TrainOptions:
    """How to run a training: overrides of single recipe fields (None keeps the recipe's) and
    everything else about the run. One object, shared by the CLI, ``Trainer`` and the benchmarks."""

    lmbda: float | None = None
    epochs: int | None = None
    batch_size: int | None = None
    crop: int | None = None
    lr: float | None = None
    seed: int | None = None
    task_weights: str | None = None
    task_model: str | None = None  # a registered task model (core.task_models); None: the task's default
    steps: int | None = None  # replaces the recipe's length
    device: str | None = None  # default: CUDA when available (under torchrun: GPU LOCAL_RANK)
    out_dir: str | Path = "runs/train"
    pretrained: bool = True  # False: seeded random codec and task model (tests, no downloads)
    index: IndexSpec = None  # registry index(es) merged over the built-in one (base weights)
    amp: bool = False  # bf16 autocast for the transforms and adapters (CUDA only)
    checkpoint_every: int = 500
    workers: int = 0
    progress: bool = True
    force: bool = False  # replace the results of an earlier run in out_dir

    def recipe_overrides(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _RECIPE_FIELDS}

    def check(self) -> None:
        """Refuse values no run can use, one line each naming the flag and its rule."""
        rules = [
            ("steps", self.steps, lambda v: v >= 1, "at least 1"),
            ("epochs", self.epochs, lambda v: v >= 1, "at least 1"),
            ("batch-size", self.batch_size, lambda v: v >= 1, "at least 1"),
            ("crop", self.crop, lambda v: 1 <= v <= MAX_CROP, f"1 to {MAX_CROP} pixels (a training image holds at most {MAX_TRAINING_PIXELS:,})"),
            ("lr", self.lr, lambda v: math.isfinite(v) and v > 0, "a positive number"),
            ("lmbda", self.lmbda, lambda v: math.isfinite(v) and v > 0, "a positive number"),
            ("checkpoint-every", self.checkpoint_every, lambda v: v >= 0, "0 (only at the end and on Ctrl-C) or more steps"),
            ("workers", self.workers, lambda v: v >= 0, "0 (load in the training process) or more"),
        ]
        for flag, value, ok, rule in rules:
            if value is not None and not ok(value):
                raise InvalidArgumentError(f"--{flag} must be {rule}, got {value}")


def _options(options: TrainOptions | None, overrides: dict[str, Any]) -> TrainOptions:
    try:
        options = dataclasses.replace(options or TrainOptions(), **overrides)
    except TypeError:
        known = [f.name for f in dataclasses.fields(TrainOptions)]
        unknown = sorted(set(overrides) - set(known))
        raise InvalidArgumentError(f"unknown training option(s) {unknown}; known: {', '.join(known)}") from None
    options.check()
    return options


@dataclass
class StepResult:
    loss: float
    bpp: float
    distortion: float


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _LossModule(nn.Module):
    """What DistributedDataParallel wraps: the module that trains (its parameters are the ones
    DDP averages; the frozen codec and task model are not submodules) with the loop's loss as
    its forward, so the loss runs inside DDP's forward as DDP requires."""

    def __init__(self, trained: nn.Module, loss: Any) -> None:
        super().__init__()
        self.trained = trained
        self.loss = loss

    def forward(self, images: torch.Tensor, noise: SampleNoise):
        return self.loss(images, noise)


class _StopRequests:
    """Ctrl-C and SIGTERM during training: the first one lets the current step finish, then the
    loop writes a checkpoint and stops; a second Ctrl-C stops at once (the last checkpoint stays)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: int | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this step (a checkpoint is written); "
              "Ctrl-C again to stop at once", file=sys.stderr)

    @contextlib.contextmanager
    def installed(self) -> Iterator["_StopRequests"]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals reach the main thread only
            return
        previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


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
        options: TrainOptions | None = None,
        *,
        features: TaskFeatures | None = None,
        **overrides: Any,
    ) -> None:
        self.options = options = _options(options, overrides)
        self.spec = get_codec(codec)
        self.spec.check_quality(q)
        self.q, self.task, self.data_dir = q, task, Path(data)
        if isinstance(recipe, str):
            recipe = get_recipe(recipe, task, q, options.lmbda)
        self.recipe = recipe.override(**options.recipe_overrides())
        if self.recipe.crop % self.spec.pad_multiple:
            raise InvalidArgumentError(
                f"crop {self.recipe.crop} is not a multiple of {self.spec.pad_multiple}, the size {self.spec.name} "
                f"codes without padding; use e.g. --crop {max(1, round(self.recipe.crop / self.spec.pad_multiple)) * self.spec.pad_multiple}"
            )
        ranks = distributed.launched_size()  # checked before any rank waits for the others
        if self.recipe.batch_size % ranks:
            raise InvalidArgumentError(
                f"--batch-size {self.recipe.batch_size} does not split over {ranks} ranks; "
                f"give a multiple of {ranks} (it is the global batch)"
            )
        self.world = distributed.setup(options.device)
        self.device = self.world.device
        if options.amp and self.device.type != "cuda":
            raise InvalidArgumentError("--amp (bf16 mixed precision) needs a CUDA device; drop --amp to train on the CPU")
        self.out_dir, self.custom_features = Path(options.out_dir), features
        self.step = 0
        self.last = StepResult(math.nan, math.nan, math.nan)
        self.stop_requested = False
        self.runs: list[dict[str, int]] = []  # (first step, world size) of each fit(), for the record
        error = None
        try:  # what can fail on one rank only (its data folder, its GPU) fails on all
            self.dataset = ImageFolder(self.data_dir, self.recipe.crop, self.recipe.seed)
            images = min(self.recipe.epoch_images or len(self.dataset), len(self.dataset))
            per_epoch = max(1, images // self.recipe.batch_size)
            self.total_steps = options.steps if options.steps is not None else self.recipe.epochs * per_epoch
            self._build()
        except Exception as exc:
            error = exc
        distributed.agree(error, self.world, "setting up")
        self.step_module = self._wrap(_LossModule(self.trained, self.loss))

    # -- set-up --------------------------------------------------------------------------------
    def _build(self) -> None:
        self.base = build_base(self.spec.name, self.q, self.options.pretrained, self.options.index)
        self.base_digest = base_digest(self.base)
        self.codec = self._build_codec(self.base).to(self.device)
        with torch.random.fork_rng():  # a random task model (no weights) from the recipe's seed too
            torch.manual_seed(self.recipe.seed)
            self.features = (self.custom_features or self._task_features()).to(self.device)
        params = list(self.trainable())
        if not params:
            raise TrainingError("nothing to train: no trainable parameters")
        self.optimizer = torch.optim.Adam(params, lr=self.recipe.lr)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, self.milestone_steps(), self.recipe.gamma)

    def task_weights(self) -> str | None:
        """The recognition model's weights: the recipe's for the task's default model, the named
        model's own ("DEFAULT") unless --task-weights says otherwise; None (random) untrained."""
        if not self.options.pretrained:
            return None
        return (self.options.task_weights or "DEFAULT") if self.options.task_model else self.recipe.task_weights

    def _task_features(self) -> TaskFeatures:
        if self.options.task_model:
            return task_model_features(self.options.task_model, self.task_weights(), task=self.task)
        return TaskFeatures(self.task, weights=self.task_weights())

    def task_model_name(self) -> str:
        if self.custom_features is not None:
            return "custom"
        return self.options.task_model or default_task_model(self.task) or f"torchvision {self.task} R50-FPN"

    def _build_codec(self, base: nn.Module) -> nn.Module:
        return base

    def _wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel around ``module`` when there are several ranks: only what trains
        is averaged (frozen parameters are ignored), buffers are never broadcast, and every trained
        parameter gets a gradient every step (no search for unused ones)."""
        if not self.world.distributed:
            return module
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        frozen = [name for name, parameter in module.named_parameters() if not parameter.requires_grad]
        buffers = [name for name, _ in module.named_buffers()]  # the CDF tables: the same on every rank, left alone
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, frozen + buffers)
        no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                          else {"broadcast_buffers": False})  # its older name
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=False, **no_buffer_sync)

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
    def loss(self, images: torch.Tensor, noise: SampleNoise) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``R + lambda * D`` for a batch of [0, 1] images, and its parts (detached). The one place
        the training objective is written: a variant of the trainer overrides this method."""
        with torch.no_grad():
            reference = self.features(images)
        with frozen_layers(self.model):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.options.amp):
                out = self.forward(images, noise)
                features = self.features(out["x_hat"])
            likelihoods = {k: v.float() for k, v in out["likelihoods"].items()}
            bpp = estimated_bpp(likelihoods, images.shape[-2] * images.shape[-1])
            distortion = self.features.distortion(reference, features)
        loss = bpp + self.recipe.lmbda * distortion
        return loss, {"bpp": bpp.detach(), "distortion": distortion.detach()}

    def noise(self, images: int) -> SampleNoise:
        """The quantisation noise of this rank's ``images`` of batch ``self.step``: drawn from
        (seed, step, global index of the image), so it does not depend on the number of ranks."""
        first = self.step * self.recipe.batch_size + self.world.rank * images
        return SampleNoise(self.recipe.seed, self.step, range(first, first + images))

    def forward(self, images: torch.Tensor, noise: SampleNoise) -> dict[str, Any]:
        """The codec's training forward for one batch (its adapters, if any, hooked in)."""
        return training_forward(self.model, images, noise)

    def train_step(self, images: torch.Tensor) -> StepResult:
        """One optimizer step on (this rank's part of) the batch of step ``self.step``."""
        return self._step(lambda: images)

    def _step(self, fetch: Any, stop_requested: Any = lambda: False) -> StepResult:
        """Fetch this rank's images, compute the loss, agree with the other ranks on the losses and
        on whether any rank failed, then backward and step; at the end, whether any rank was asked
        to stop (``stop_requested()``: a signal during this step stops every rank after it). The
        loss is the mean over ranks of their means over equal slices: the global batch's mean."""
        loss, error, images = None, None, None
        local = torch.zeros(3, device=self.device)
        try:
            images = fetch().to(self.device, non_blocking=True)
        except Exception as exc:  # a bad image: agreed on before the forward, which may wait for the other ranks
            error = worker_error(exc)
        distributed.agree(error, self.world, f"loading the images of step {self.step}")
        try:
            self.optimizer.zero_grad(set_to_none=True)
            loss, parts = self.step_module(images, self.noise(len(images)))
            local = torch.stack([loss.detach(), parts["bpp"], parts["distortion"]]).float()
        except Exception as exc:  # every rank learns of it below, and stops with it
            error = exc
        failed = torch.tensor([error is not None], dtype=torch.float32, device=self.device)
        totals = distributed.all_sum(torch.cat([local, failed]), self.world, f"exchanging the losses of step {self.step}")
        if totals[3] > 0:
            distributed.agree(error, self.world, f"computing the loss of step {self.step}")
        mean = (totals[:3] / self.world.size).tolist()
        result = StepResult(*mean)
        if not math.isfinite(result.loss):
            raise TrainingError(f"the loss became {result.loss} at step {self.step}; lower the learning rate or train in fp32 (no --amp)")
        with distributed.collective(f"the backward of step {self.step} (averaging gradients)") if self.world.distributed else contextlib.nullcontext():
            loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.last = result
        stop = torch.tensor([float(stop_requested())], device=self.device)
        self.stop_requested = bool(distributed.all_sum(stop, self.world, f"ending step {self.step - 1}")[0] > 0)
        return result

    # -- the run -------------------------------------------------------------------------------
    def fit(self, resume: bool = False, stop_at: int | None = None) -> Path | None:
        """Train to the last step and save the result (returned). ``resume`` continues from
        ``out_dir/checkpoint.pt``; ``stop_at`` stops (with a checkpoint) after that step, as an
        interruption would, and returns None. Ctrl-C / SIGTERM stop after the current step with a
        checkpoint, and raise KeyboardInterrupt (on every rank: they stop at the same step)."""
        if resume:
            self.load_checkpoint(self.out_dir / CHECKPOINT)
        else:
            distributed.run_on_main(self._check_out_dir, self.world, "checking --out")
        if not self.runs or self.runs[-1]["world_size"] != self.world.size:
            self.runs.append({"from_step": self.step, "world_size": self.world.size})
        stop = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
        self._prepare()
        every = self.options.checkpoint_every
        bar = _progress_bar(self.options.progress and self.world.main, self.step, self.total_steps,
                            f"{self.spec.name} q{self.q} {self.task}")
        stops = _StopRequests()
        batches = iter(step_loader(self.dataset, self.recipe.batch_size, self.step, stop, self.options.workers,
                                   self.world.rank, self.world.size))
        try:
            with stops.installed():
                while self.step < stop:
                    result = self._step(lambda: next(batches), lambda: stops.requested is not None)
                    bar.update(1)
                    bar.set_postfix(loss=f"{result.loss:.4f}", bpp=f"{result.bpp:.4f}", D=f"{result.distortion:.4f}")
                    if self.stop_requested:
                        break
                    if every and self.step % every == 0 and self.step < stop:
                        self.save_checkpoint()
                self.save_checkpoint()
        finally:
            bar.close()
        if self.stop_requested:
            signum = stops.requested or signal.SIGTERM  # another rank's signal
            raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name} after step {self.step}; resume with --resume")
        if self.step < self.total_steps:
            return None
        distributed.run_on_main(self.save, self.world, "writing the result")
        return self.result_path()

    def _check_out_dir(self) -> None:
        """A new run does not replace what an earlier run left in ``out_dir`` unless forced."""
        earlier = [p for p in (self.out_dir / CHECKPOINT, self.result_path()) if p.exists()]
        if earlier and not self.options.force:
            raise OutputExistsError(
                f"{self.out_dir} already holds {', '.join(p.name for p in earlier)} from an earlier run; "
                "continue it with --resume, replace it with --force, or give another --out"
            )

    def _prepare(self) -> None:
        """Frozen parts in eval mode (no dropout / stochastic depth); the training forward
        chooses noise or rounding itself."""
        self.codec.eval()
        self.features.eval()

    def config(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed by this run."""
        return {"kind": self.kind, "codec": self.spec.name, "q": self.q, "task": self.task, "total_steps": self.total_steps,
                "base_digest": self.base_digest, "data": files_digest(self.dataset.root, self.dataset.files)} | self.recipe.as_dict() | (
                    {"task_model": self.options.task_model} if self.options.task_model else {})  # only when named: older checkpoints stay resumable

    result_suffix = ""  # of the result file's name

    @property
    def trained(self) -> nn.Module:
        """The module whose weights this run changes (what checkpoints hold)."""
        raise NotImplementedError

    def result_path(self) -> Path:
        return self.out_dir / f"{self.spec.name}-{self.task}-q{self.q}{self.result_suffix}.safetensors"

    def save_checkpoint(self) -> Path:
        """Write ``out_dir/checkpoint.pt`` (rank 0; every rank learns if that failed). It holds
        no trace of the number of ranks beyond the record, so any number can resume it."""
        path = self.out_dir / CHECKPOINT
        checkpoint = {
            "config": json.dumps(self.config(), sort_keys=True),
            "step": self.step,
            "trained": self.trained.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "last": dataclasses.asdict(self.last),
            "runs": json.dumps(self.runs),
        }

        def write() -> None:
            with atomic_path(path) as temporary:
                torch.save(checkpoint, temporary)

        distributed.run_on_main(write, self.world, f"writing {path}")
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Resume from ``path``: rank 0 reads it and hands it to the others (on several nodes only
        rank 0's disk needs it)."""
        checkpoint = distributed.run_on_main(lambda: self._read_checkpoint(path), self.world, f"reading {path}")
        checkpoint = distributed.broadcast(checkpoint, self.world)
        saved = json.loads(checkpoint["config"])
        ours = self.config()
        if "data" not in saved:  # written before the data set was recorded
            ours.pop("data")
        different = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
        if different:
            detail = ", ".join(f"{k}: {saved.get(k)!r} there, {ours.get(k)!r} now" for k in different[:4])
            raise TrainingError(f"checkpoint {path} is from a different run ({detail}); use the same settings or another --out")
        self.trained.load_state_dict(checkpoint["trained"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.step = int(checkpoint["step"])
        self.last = StepResult(**checkpoint["last"])
        self.runs = json.loads(checkpoint.get("runs", "[]"))

    @staticmethod
    def _read_checkpoint(path: Path) -> dict[str, Any]:
        if not path.is_file():
            raise MissingFileError(f"no checkpoint to resume at {path}; run without --resume, or give the --out of the interrupted run")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            json.loads(checkpoint["config"])
        except Exception as exc:  # unpickling errors come in many types
            raise CheckpointError(f"cannot read checkpoint {path} ({type(exc).__name__}); it is damaged, start again without --resume") from None
        return checkpoint

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
            "pretrained": self.options.pretrained,
            "base_digest": self.base_digest,
            "task_model": self.task_model_name(),
            "task_weights": self.task_weights() if self.custom_features is None else "custom",
            "amp": self.options.amp,
            "world_size": self.world.size,
            "batch_per_rank": self.recipe.batch_size // self.world.size,
            "world_sizes": self.runs,  # one row per fit(): the step it started at and its number of ranks
            "final": dataclasses.asdict(self.last),
        }

    def save(self) -> Path:
        raise NotImplementedError


class Trainer(_Loop):
    """Trains one task's adapters (method, width d and stages by name) on a frozen codec.

    >>> Trainer("mbt2018-mean", 3, "cls", "imagenet/train", steps=1000).fit()   # doctest: +SKIP
    writes ``out_dir/<codec>-<task>-q<q>.safetensors``, its model card ``README.md`` next to it,
    and ``checkpoint.pt`` (for ``fit(resume=True)``). Options: a ``TrainOptions`` and/or its
    fields as keywords.
    """

    def __init__(
        self,
        codec: str,
        q: int,
        task: str,
        data: str | Path,
        recipe: str | Recipe = DEFAULT_RECIPE,
        options: TrainOptions | None = None,
        *,
        method: str | None = None,
        variant: str | None = None,
        middle_dim: int | None = None,
        stages: Sequence[int] = STAGES,
        **kwargs: Any,
    ) -> None:
        found = get_method(method_name(method, variant))
        if middle_dim is not None and (not isinstance(middle_dim, int) or middle_dim < 1):
            raise InvalidArgumentError(f"--middle-dim must be a positive number of channels, got {middle_dim}")
        if not stages or any(stage not in STAGES for stage in stages):
            raise InvalidArgumentError(f"--stages takes stage numbers from 1 to 3 (1 = 1/2 resolution), got {','.join(map(str, stages)) or 'none'}")
        chosen = {"middle_dim": middle_dim} if middle_dim is not None else {}
        if found.has_option("init"):
            chosen["init"] = "reference"  # PyTorch's default init, as the reference code (not identity)
        method_options = {k: v for k, v in found.make_config(**chosen).to_metadata().items() if k != "method"}  # checked here
        self.layout = {"method": found.name, "options": method_options, "stages": tuple(stages)}
        if found.adapter_class().separate_file:  # a file of its own beside the task's SFMA adapters
            self.result_suffix = f"-{found.name}"
        super().__init__(codec, q, task, data, recipe, options, **kwargs)

    def _build_codec(self, base: nn.Module) -> nn.Module:
        with torch.random.fork_rng():  # the adapters' initial weights from the recipe's seed alone
            torch.manual_seed(self.recipe.seed)
            layout = self.layout
            self.adapters = build_adapters(self.spec.name, self.q, method=layout["method"], stages=layout["stages"],
                                           options=layout["options"], task=self.task)
        return attach(base, self.spec.name, {self.task: self.adapters}, quality=self.q)

    @property
    def model(self) -> nn.Module:
        return self.codec.base

    def forward(self, images: torch.Tensor, noise: SampleNoise) -> dict[str, Any]:
        if self.adapters.layered:  # rate of the base layer, machine picture from it
            return scalable_training_forward(self.model, self.adapters, images, noise)
        return super().forward(images, noise)

    def trainable(self) -> Iterable[nn.Parameter]:
        for parameter in self.base.parameters():
            parameter.requires_grad_(False)
        return list(self.adapters.parameters())

    def _prepare(self) -> None:
        super()._prepare()
        self.adapters.train()

    def config(self) -> dict[str, Any]:
        options = {k: v for k, v in self.layout["options"].items() if k != "init"}
        return super().config() | {"variant": self.layout["method"], **options, "stages": list(self.layout["stages"])}

    @property
    def trained(self) -> nn.Module:
        return self.adapters

    def save(self) -> Path:
        """The adapter file (with the training record in its info) and its model card."""
        from ..formats.adapter_files import save_adapters

        self.adapters.eval()
        path = save_adapters(self.adapters, self.result_path(), task=self.task, lmbda=self.recipe.lmbda, training=self.training_record())
        write_card(path, self.out_dir / "README.md")
        return path


class FullFinetuner(_Loop):
    """The paper's full fine-tuning baseline: the whole codec trains for the task loss (the
    entropy bottleneck's quantiles excepted; they would need CompressAI's aux optimizer).
    Saves ``<codec>-<task>-q<q>-full.safetensors``, a whole codec state_dict with fresh CDF tables."""

    kind = "full-finetune"
    result_suffix = "-full"

    def trainable(self) -> Iterable[nn.Parameter]:
        params = []
        for name, parameter in self.codec.named_parameters():
            train = not name.endswith("quantiles")
            parameter.requires_grad_(train)
            if train:
                params.append(parameter)
        return params

    @property
    def trained(self) -> nn.Module:
        return self.codec

    def save(self) -> Path:
        from safetensors.torch import save_file

        self.codec.eval()
        self.codec.update(force=True)
        path = self.result_path()
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.codec.state_dict().items()}
        metadata = {"format": "icmh-full-finetune", "codec": self.spec.name, "quality": str(self.q), "task": self.task,
                    "lmbda": str(self.recipe.lmbda), "training": json.dumps(self.training_record(), sort_keys=True)}
        with atomic_path(path) as temporary:
            save_file(tensors, str(temporary), metadata=metadata)
        return path


def _progress_bar(enabled: bool, initial: int, total: int, description: str):
    from .._io import progress

    return progress(total=total, initial=initial, desc=description, unit="step", enabled=enabled)
