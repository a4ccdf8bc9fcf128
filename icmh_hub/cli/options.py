"""Options several commands share."""

from __future__ import annotations

import click

from ..hub.index import INDEX_ENV

index_option = click.option(
    "--index", "index", multiple=True, metavar="PATH|hf://ORG/NAME[@REV]/FILE.json",
    help=f"Extra index merged over the built-in one (repeatable; also ${INDEX_ENV}).",
)
