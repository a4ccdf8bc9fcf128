"""Options several commands share."""

from __future__ import annotations

import click

from ..hub.index import INDEX_ENV

index_option = click.option(
    "--index", "index", multiple=True, metavar="PATH|hf://ORG/NAME[@REV]/FILE.json",
    help=f"Extra index merged over the built-in one (repeatable; also ${INDEX_ENV}).",
)


def method_option(default: str | None = None, help: str = "Adapter method (`icmh-hub methods`); default: the registry's SFMA entries."):
    """``--method NAME`` (``--variant`` is its 0.1 name) among the registered methods; checked before torch loads."""
    from ..core.methods import list_methods

    return click.option("--method", "--variant", "method", type=click.Choice(list_methods()), default=default,
                        show_default=default is not None, help=help)
