"""Options several commands share."""

from __future__ import annotations

import os
from collections.abc import Callable

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

# ----------------------------------------------------------------------------- --threads


def default_threads() -> int:
    """$OMP_NUM_THREADS when set; else the CPUs this process may run on (its affinity, which a
    container or ``taskset`` narrows, unlike torch's count of the machine's cores), shared
    among the processes torchrun starts on this node, so that they do not oversubscribe it."""
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cpus // max(1, local_ranks))


def _set_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> int:
    import torch

    threads = value or default_threads()
    torch.set_num_threads(threads)
    return threads


threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None, expose_value=False, callback=_set_threads,
    help="CPU threads for torch (default: $OMP_NUM_THREADS, else the CPUs this process may use, "
         "divided among torchrun's processes on this node).",
)


# ----------------------------------------------------------------------------- --adapter


def _local_adapter(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An ``hf://ORG/NAME[@REVISION]/PATH`` adapter downloaded (sha256 recorded on first use,
    checked after), so the command sees a local file; a local path as it is."""
    if value is None or not value.startswith("hf://"):
        return value
    from ..hub.fetch import fetch_hub_adapter
    from ..hub.transport import parse_hf_uri

    repo_id, revision, path = parse_hf_uri(value)
    return str(fetch_hub_adapter(repo_id, path, revision))


def adapter_option(help: str) -> Callable[[Callable], Callable]:
    """``--adapter FILE`` or ``--adapter hf://ORG/NAME[@REVISION]/PATH`` (a file in a Hub repo)."""
    return click.option("--adapter", metavar="FILE|hf://ORG/NAME[@REV]/PATH", callback=_local_adapter,
                        help=f"{help} A Hub file as hf://ORG/NAME[@REVISION]/PATH works too.")
