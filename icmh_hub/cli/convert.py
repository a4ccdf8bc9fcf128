"""``icmh-hub convert``: released TIC-SFMA and TransTIC checkpoints -> our adapter files."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.tasks import TASK_NAMES
from ..errors import OutputExistsError
from .options import threads_option


@click.command("convert")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--codec", default="tic", show_default=True, help="Codec the checkpoint was trained on (only tic).")
@click.option("--q", "quality", type=int, required=True, help="Rate point of the base codec (TIC: 1-4).")
@click.option("--task", type=click.Choice(TASK_NAMES), required=True, help="Task the adapters were trained for.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="Adapter file to write (.safetensors).")
@click.option("--method", type=click.Choice(["sfma", "transtic"]), default="sfma", show_default=True,
              help="What the checkpoint holds: Adapt-ICMH's TIC-SFMA, or TransTIC's prompted TIC.")
@click.option("--base", type=click.Path(dir_okay=False), help="The base codec's weights (base_codec_q.pth.tar): the checkpoint's own must equal them.")
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
@threads_option
def convert_command(checkpoint: str, codec: str, quality: int, task: str, output: str, method: str, base: str | None, force: bool) -> None:
    """Convert a reference CHECKPOINT (.pth.tar) into an adapter file.

    The checkpoint is read with weights_only=True (no code in it runs); only its adapters (six
    SFMAs, or TransTIC's prompts) are kept. Use the file with the TIC base codec of the same
    --q; with --base the checkpoint's embedded base codec is checked against it. An existing
    output is replaced only with --force, and never when it is the checkpoint itself.
    """
    from ..formats.adapter_files import load_adapters
    from ..formats.reference import convert_reference
    from .codec import refuse_inputs_as_outputs

    refuse_inputs_as_outputs([Path(checkpoint)], [Path(output)])
    if Path(output).exists() and not force:
        raise OutputExistsError(f"{output} exists; pass --force to replace it")

    path = convert_reference(checkpoint, codec=codec, q=quality, task=task, out=output, base=base, method=method)
    adapters = load_adapters(path)
    click.echo(
        f"wrote {path}: {codec} q{quality} {task}, {adapters.num_parameters():,} adapter parameters, "
        f"sha256 {adapters.sha256}"
    )


COMMANDS = [convert_command]
