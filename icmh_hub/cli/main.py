"""The ``icmh-hub`` group: the commands of every area, and the error handling they share.

A problem the user can fix (an ``IcmhError``) prints one line, ``error: ...``, and exits 1; so
does any other exception, with a hint that ``--debug`` shows its traceback (``MemoryError`` says
that memory ran out). Ctrl-C exits 130.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from ..core.names import escaped
from ..errors import IcmhError

# modules that define commands; each has a ``COMMANDS`` list of click commands
COMMAND_MODULES = ("core", "registry", "convert", "training", "codec", "evaluation", "demo")


class IcmhGroup(click.Group):
    """Turns exceptions into one line on stderr and exit status 1 (a traceback only with --debug)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Refuse a NUL character in any argument first: no path, name or number can hold one, and
        the file system calls would fail on it deep inside."""
        bad = next((a for a in args if "\x00" in a), None)
        if bad is not None:
            raise click.UsageError(f"the argument '{escaped(bad, 80)}' holds a NUL character (\\x00), which no path or name can contain", ctx)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:  # the reader stopped early (`icmh-hub list | head`): stop quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
            sys.exit(141)
        except KeyboardInterrupt as exc:
            if _debug(ctx):
                raise
            click.echo(f"interrupted{': ' + str(exc) if str(exc) else ''}", err=True)
            sys.exit(130)
        except Exception as exc:
            if _debug(ctx):
                raise
            click.echo(f"error: {one_line(exc)}", err=True)
            sys.exit(1)


def one_line(exc: BaseException) -> str:
    """An exception as one line: ours as they are, any other with its type and a hint."""
    text = " ".join(str(exc).split())
    if isinstance(exc, IcmhError):
        return text
    if isinstance(exc, MemoryError):
        return f"out of memory ({type(exc).__name__}{': ' + text if text else ''}); free memory, or code smaller images"
    return f"unexpected {type(exc).__name__}: {text or '(no message)'} (run `icmh-hub --debug ...` for the traceback)"


def _debug(ctx: click.Context) -> bool:
    return bool((ctx.obj or {}).get("debug"))


@click.group(cls=IcmhGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="icmh-hub")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """icmh-hub: task adapters for learned image codecs (human and machine vision)."""
    ctx.obj = {"debug": debug}


for _name in COMMAND_MODULES:
    for _command in importlib.import_module(f"{__package__}.{_name}").COMMANDS:
        main.add_command(_command)
