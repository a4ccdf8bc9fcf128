"""The ``icmh-hub`` command line. Each area of the package adds its commands in its own module
(``cli_<area>.py``); this module holds the group and the error handling they share."""

from __future__ import annotations

import importlib
import sys

import click

from .errors import IcmhError

# modules that define commands; each has a ``COMMANDS`` list of click commands
COMMAND_MODULES = ("icmh_hub.cli_core", "icmh_hub.cli_registry", "icmh_hub.cli_convert", "icmh_hub.cli_train", "icmh_hub.cli_codec", "icmh_hub.cli_eval", "icmh_hub.cli_demo")


class IcmhGroup(click.Group):
    """Turns our errors into one line on stderr and exit status 1 (a traceback only with --debug)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except IcmhError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=IcmhGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="icmh-hub")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """icmh-hub: task adapters for learned image codecs (human and machine vision)."""
    ctx.obj = {"debug": debug}


for _name in COMMAND_MODULES:
    for _command in importlib.import_module(_name).COMMANDS:
        main.add_command(_command)
