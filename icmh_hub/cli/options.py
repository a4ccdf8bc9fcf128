"""Options several commands share."""

from __future__ import annotations

import click

from ..hub.index import INDEX_ENV

index_option = click.option(
    "--index", "index", multiple=True, metavar="PATH|hf://ORG/NAME[@REV]/FILE.json",
    help=f"Extra index merged over the built-in one (repeatable; also ${INDEX_ENV}).",
)

TASK_MODEL_HELP = ("Recognition model (its feature distortion and accuracy): resnet50 (cls default, IMAGENET1K_V1), "
                   "efficientnet-lite0, proxy-cls, proxy-seg, or one you registered (icmh_hub.register_task_model).")


def method_option(default: str | None = None, help: str = "Adapter method (`icmh-hub methods`); default: the registry's SFMA entries."):
    """``--method NAME`` (``--variant`` is its 0.1 name) among the registered methods; checked before torch loads."""
    from ..core.methods import list_methods

    return click.option("--method", "--variant", "method", type=click.Choice(list_methods()), default=default,
                        show_default=default is not None, help=help)
