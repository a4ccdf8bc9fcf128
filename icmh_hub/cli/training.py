"""``icmh-hub train``: train task adapters (or the full fine-tuning baseline) on a folder of images."""

from __future__ import annotations

import click

from ..core.tasks import TASK_NAMES
from ..training.recipes import DEFAULT_RECIPE, RECIPES
from .options import TASK_MODEL_HELP, method_option, threads_option


@click.command("train")
@click.option("--codec", required=True, help="Base codec family, e.g. mbt2018-mean (see `icmh-hub codecs`).")
@click.option("--q", "q", type=int, required=True, help="Rate point: the base codec's quality level.")
@click.option("--task", type=click.Choice(TASK_NAMES), required=True, help="Machine task the adapters are for.")
@click.option("--data", type=click.Path(file_okay=False), required=True, help="Folder of training images (class folders or flat; labels unused).")
@click.option("--recipe", type=click.Choice(RECIPES), default=DEFAULT_RECIPE, show_default=True,
              help="reference = the released training scripts; paper = the paper's Table 5.")
@click.option("--lmbda", type=float, help="Rate-distortion trade-off (default: the recipe's for --q).")
@click.option("--steps", type=int, help="Number of optimizer steps (overrides --epochs).")
@click.option("--epochs", type=int, help="Epochs (default: the recipe's).")
@click.option("--batch-size", type=int, help="Images per step, over all ranks under torchrun (default: the recipe's).")
@click.option("--crop", type=int, help="Random crop size in pixels (default 256).")
@click.option("--lr", type=float, help="Adam learning rate (default: the recipe's, 1e-4).")
@click.option("--seed", type=int, help="Seed for weights, data order, crops and noise (default 42).")
@click.option("--device", help="cuda, cuda:1, cpu, ... (default: CUDA when available; under torchrun, cuda = GPU LOCAL_RANK).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/train", show_default=True,
              help="Folder for the checkpoint, the adapter file and its model card.")
@click.option("--resume", is_flag=True, help="Continue the run whose checkpoint is in --out.")
@click.option("--force", is_flag=True, help="Replace what an earlier run left in --out (checkpoint, adapter file).")
@click.option("--no-pretrained", is_flag=True, help="Random codec and random task model (tests; no downloads).")
@click.option("--task-weights", help="Recognition model weights: a torchvision weights name or a local file.")
@click.option("--task-model", help=TASK_MODEL_HELP)
@method_option("sfma", "Adapter method (`icmh-hub methods`; scalable-sfma / scalable-mask: a two-layer codec, transtic: prompts).")
@click.option("--middle-dim", type=int, default=None, help="Adapter bottleneck width d (default: the method's, 64 for SFMA).")
@click.option("--stages", default="1,2,3", show_default=True, help="Stages that get adapters, comma separated.")
@click.option("--full-finetune", is_flag=True, help="Baseline: train the whole codec instead of adapters.")
@click.option("--amp", is_flag=True, help="bf16 mixed precision for the transforms and adapters (CUDA only).")
@click.option("--checkpoint-every", type=int, default=500, show_default=True, help="Steps between checkpoints.")
@click.option("--workers", type=int, default=0, show_default=True, help="Data loader worker processes.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@threads_option
def train_command(codec, q, task, data, recipe, lmbda, steps, epochs, batch_size, crop, lr, seed, device, out_dir,
                  resume, force, no_pretrained, task_weights, task_model, method, middle_dim, stages, full_finetune, amp,
                  checkpoint_every, workers, quiet) -> None:
    """Train adapters for TASK on a frozen CODEC at quality Q with loss R + lambda * D_task.

    Under torchrun (several processes, one or several nodes) it trains with
    DistributedDataParallel: --batch-size is split over the ranks and only rank 0 writes."""
    from ..errors import InvalidArgumentError
    from ..training.trainer import FullFinetuner, Trainer, TrainOptions

    try:
        stage_list = tuple(int(s) for s in stages.split(",") if s.strip())
    except ValueError:
        raise InvalidArgumentError(f"--stages takes comma-separated numbers from 1 to 3, got {stages!r}") from None
    options = TrainOptions(lmbda=lmbda, steps=steps, epochs=epochs, batch_size=batch_size, crop=crop, lr=lr, seed=seed,
                           device=device, out_dir=out_dir, pretrained=not no_pretrained, task_weights=task_weights, task_model=task_model, amp=amp,
                           checkpoint_every=checkpoint_every, workers=workers, progress=not quiet, force=force)
    if full_finetune:
        runner = FullFinetuner(codec, q, task, data, recipe, options)
    else:
        runner = Trainer(codec, q, task, data, recipe, options, method=method, middle_dim=middle_dim, stages=stage_list)
    world = runner.world
    if world.main:
        ranks = f" x {world.size} ranks ({runner.recipe.batch_size // world.size} images each)" if world.distributed else ""
        click.echo(f"training {runner.kind} for {codec} q{q} {task} on {runner.device}{ranks}: {runner.total_steps} steps, "
                   f"lambda {runner.recipe.lmbda}, recipe {runner.recipe.name}, task model {runner.task_model_name()}", err=True)
    path = runner.fit(resume=resume)
    if world.main:
        last = runner.last
        click.echo(f"final loss {last.loss:.4f}  bpp {last.bpp:.4f}  distortion {last.distortion:.4f}")
        click.echo(f"wrote {path}")


COMMANDS = [train_command]
