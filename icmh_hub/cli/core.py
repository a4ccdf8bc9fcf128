"""Core commands: what codecs and adapter variants exist, and what an adapter file holds."""

from __future__ import annotations

import json

import click

from ..core.spec import describe, get_codec, list_codecs
from ..core.variants import SCALABLE_VARIANTS, VARIANTS


@click.command("codecs")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def codecs_command(as_json: bool) -> None:
    """List the codec families adapters can be attached to."""
    rows = [describe(get_codec(name)) for name in list_codecs()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        q = f"q{row['qualities'][0]}-{row['qualities'][-1]}"
        click.echo(f"{row['codec']:<22} {q:<6} N={'/'.join(map(str, row['N'])):<8} {row['about']}")


@click.command("inspect")
@click.argument("adapter_file", type=click.Path(dir_okay=False))
def inspect_command(adapter_file: str) -> None:
    """Show what an adapter file fits (codec, quality, variant, points) and its sha256."""
    from ..formats.adapter_files import load_adapters, read_metadata

    meta = read_metadata(adapter_file)
    adapters = load_adapters(adapter_file)
    meta["parameters"] = adapters.num_parameters()
    meta["sha256"] = adapters.sha256
    click.echo(json.dumps(meta, indent=2, sort_keys=True))


@click.command("variants")
def variants_command() -> None:
    """List the adapter variants (the paper's ablations) by name."""
    for name, stages in VARIANTS.items():
        click.echo(f"{name:<13} " + " -> ".join(" + ".join(branches) for branches in stages))
    for name, decoder in SCALABLE_VARIANTS.items():
        adapters = f"{decoder} adapters in g_s" if decoder else "no adapters"
        click.echo(f"{name:<13} two layers: mask generator + {adapters} (hyperprior codecs without context model)")


COMMANDS = [codecs_command, inspect_command, variants_command]
