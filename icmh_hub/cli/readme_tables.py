"""README tables generated from the code, so they cannot drift from it.

Two tables in README.md sit between HTML-comment markers and are rewritten by
``python -m icmh_hub.cli.readme_tables [README.md]`` (``--check`` only reports whether they are stale):

- the registry table, from the built-in index (``icmh_hub.registry.list_entries``);
- the CLI table, from the commands registered on ``icmh_hub.cli.main``.

Tests compare README with these functions, so a new index entry or command fails the suite until
the README is regenerated.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ..errors import IcmhError, InvalidArgumentError

REGISTRY_MARKERS = ("<!-- registry-table:start -->", "<!-- registry-table:end -->")
CLI_MARKERS = ("<!-- cli-table:start -->", "<!-- cli-table:end -->")
# metrics that are not a task's accuracy (rate and image quality)
_NOT_ACCURACY = {"bpp_est", "bpp_actual", "psnr", "ms_ssim", "detections"}


# ----------------------------------------------------------------------------- registry table


@contextmanager
def _builtin_index_only():
    """The README documents the shipped index, never the user's ``$ICMH_HUB_INDEX``."""
    from ..hub.index import INDEX_ENV

    saved = os.environ.pop(INDEX_ENV, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[INDEX_ENV] = saved


def _accuracy_metric(task: str, names: Iterable[str]) -> str | None:
    """The task's headline metric (top1, bbox_AP50, segm_AP50), else its first accuracy-like one."""
    from ..core.tasks import TASKS

    names = list(names)
    if task in TASKS and TASKS[task].metric in names:
        return TASKS[task].metric
    return next((n for n in names if n not in _NOT_ACCURACY), None)


def _measured(entry: Any) -> tuple[str, str, str] | None:
    """(bpp, accuracy, measured on) of the latest data set with measured results; None if none.
    Numbers from the paper are left out: this table shows what icmh-hub measured."""
    by_dataset: dict[str, dict[str, dict[str, Any]]] = {}
    for metric in entry.metrics:
        if metric.get("source", "measured") == "measured":
            by_dataset.setdefault(str(metric["dataset"]), {})[metric["metric"]] = metric
    if not by_dataset:
        return None
    dataset, metrics = list(by_dataset.items())[-1]
    bpp = "-"
    if "bpp_est" in metrics:
        bpp = f"{metrics['bpp_est']['value']:.4f}"
    elif "bpp_actual" in metrics:
        bpp = f"{metrics['bpp_actual']['value']:.4f} (actual)"
    name = _accuracy_metric(entry.task, metrics)
    accuracy = f"{name} {metrics[name]['value']:.2f}" if name else "-"
    images = next((m.get("images") for m in metrics.values() if m.get("images")), None)
    where = f"{dataset}, {images} images" if images else dataset
    return bpp, accuracy, where


def _group_row(codec: str, method: str, task: str, entries: Sequence[Any]) -> str:
    """One row for a codec, method and task: its rate points, lambdas, statuses and what was measured
    at each rate point (q: bpp, accuracy), on which data."""
    qualities = sorted({e.q for e in entries})
    lambdas = " / ".join(dict.fromkeys("-" if e.lmbda is None else f"{e.lmbda:g}" for e in entries))
    status = " / ".join(sorted({e.status for e in entries}))
    measured = [(e.q, _measured(e)) for e in entries]
    cells = [f"q{q}: {m[0]}, {m[1]}" for q, m in measured if m is not None]
    where = "; ".join(dict.fromkeys(m[2] for _, m in measured if m is not None))
    shown = "<br>".join(cells) + (f" ({where})" if where else "") if cells else "-"
    q = f"{qualities[0]}-{qualities[-1]}" if len(qualities) > 1 else str(qualities[0])
    return f"| {codec} | {method} | {task} | {q} | {lambdas} | {status} | {shown} |"


def registry_table(entries: Sequence[Any] | None = None) -> str:
    """The Markdown table of registry entries (default: the built-in index), one row per codec,
    method and task (``icmh-hub list`` shows every entry)."""
    if entries is None:
        from ..hub.index import list_entries

        with _builtin_index_only():
            entries = list_entries()
    groups: dict[tuple[str, str, str], list[Any]] = {}
    for e in entries:
        groups.setdefault((e.codec, e.method, e.task), []).append(e)
    lines = ["| codec | method | task | q | lambda | status | measured (bpp, accuracy) |", "|---|---|---|---|---|---|---|"]
    lines += [_group_row(*key, sorted(group, key=lambda e: (e.q, e.lmbda or 0.0))) for key, group in sorted(groups.items())]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI table


def _usage(command: click.Command, ctx: click.Context) -> str:
    """``icmh-hub NAME ARG...``: the command with its positional arguments."""
    args = [p.make_metavar(ctx) for p in command.params if isinstance(p, click.Argument)]
    return " ".join([f"icmh-hub {command.name}", *args])


def cli_table(group: click.Group | None = None) -> str:
    """The Markdown table of every command on ``group`` (default: ``icmh_hub.cli.main``)."""
    if group is None:
        from .main import main as group
    ctx = click.Context(group, info_name="icmh-hub")
    lines = ["| command | what it does |", "|---|---|"]
    for name in sorted(group.commands):
        command = group.commands[name]
        lines.append(f"| `{_usage(command, ctx)}` | {command.get_short_help_str(limit=200)} |")
    return "\n".join(lines)


def table_commands(text: str) -> list[str]:
    """Command names listed in README's CLI table (the first word after ``icmh-hub``)."""
    body = between(text, *CLI_MARKERS)
    return [line.split("`")[1].split()[1] for line in body.splitlines() if line.startswith("| `icmh-hub ")]


# ----------------------------------------------------------------------------- README


def between(text: str, start: str, end: str) -> str:
    """What README holds between two markers (stripped)."""
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise InvalidArgumentError(f"README must hold {start} once, then {end} once; put them around the generated table")
    return text[text.index(start) + len(start):text.index(end)].strip()


def replace_between(text: str, start: str, end: str, body: str) -> str:
    """``text`` with what lies between the markers replaced by ``body``."""
    between(text, start, end)  # checks the markers
    return text[:text.index(start) + len(start)] + "\n" + body + "\n" + text[text.index(end):]


def render(text: str) -> str:
    """README text with both generated tables brought up to date."""
    text = replace_between(text, *REGISTRY_MARKERS, registry_table())
    return replace_between(text, *CLI_MARKERS, cli_table())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m icmh_hub.cli.readme_tables", description=__doc__.splitlines()[0])
    parser.add_argument("readme", nargs="?", default="README.md", type=Path)
    parser.add_argument("--check", action="store_true", help="exit 1 if the tables are stale; change nothing")
    args = parser.parse_args(argv)
    try:
        text = args.readme.read_text(encoding="utf-8")
        fresh = render(text)
    except (OSError, IcmhError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if fresh == text:
        print(f"{args.readme}: tables up to date")
        return 0
    if args.check:
        print(f"{args.readme}: tables are stale; run python -m icmh_hub.cli.readme_tables", file=sys.stderr)
        return 1
    args.readme.write_text(fresh, encoding="utf-8")
    print(f"{args.readme}: tables rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
