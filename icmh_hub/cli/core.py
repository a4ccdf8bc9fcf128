"""Core commands: what codecs and adapter methods exist, and what an adapter file holds."""

from __future__ import annotations

import json

import click

from ..core.methods import get_method, list_methods
from ..core.spec import describe, get_codec, list_codecs


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
    """Show what an adapter file fits (codec, quality, method and its config, points) and its sha256."""
    from ..formats.adapter_files import load_adapters, read_metadata

    meta = read_metadata(adapter_file)
    adapters = load_adapters(adapter_file)
    meta["config"] = adapters.config.to_metadata()
    meta["parameters"] = adapters.num_parameters()
    meta["sha256"] = adapters.sha256
    click.echo(json.dumps(meta, indent=2, sort_keys=True))


def _methods() -> None:
    """List the adapter methods by name: what each is, and the codecs it runs on."""
    for name in list_methods():
        method = get_method(name)
        codecs = f" [codecs: {', '.join(method.codecs)}]" if method.codecs else ""
        click.echo(f"{name:<14} {method.description}{codecs}")


methods_command = click.command("methods")(_methods)
variants_command = click.command("variants", help="Alias of `methods` (its 0.1 name).")(_methods)


COMMANDS = [codecs_command, inspect_command, methods_command, variants_command]
