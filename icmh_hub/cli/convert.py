"""``icmh-hub convert``: the paper's released TIC-SFMA checkpoints -> our adapter files."""

from __future__ import annotations

import click

from ..core.tasks import TASK_NAMES


@click.command("convert")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--codec", default="tic", show_default=True, help="Codec the checkpoint was trained on (only tic).")
@click.option("--q", "quality", type=int, required=True, help="Rate point of the base codec (TIC: 1-4).")
@click.option("--task", type=click.Choice(TASK_NAMES), required=True, help="Task the adapters were trained for.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="Adapter file to write (.safetensors).")
def convert_command(checkpoint: str, codec: str, quality: int, task: str, output: str) -> None:
    """Convert a reference TIC-SFMA CHECKPOINT (.pth.tar) into an adapter file.

    The checkpoint is read with weights_only=True (no code in it runs); only its six SFMAs are
    kept. Use the file with the TIC base codec of the same --q.
    """
    from ..formats.adapter_files import load_adapters
    from ..formats.reference import convert_reference

    path = convert_reference(checkpoint, codec=codec, q=quality, task=task, out=output)
    adapters = load_adapters(path)
    click.echo(
        f"wrote {path}: {codec} q{quality} {task}, {adapters.num_parameters():,} adapter parameters, "
        f"sha256 {adapters.sha256}"
    )


COMMANDS = [convert_command]
