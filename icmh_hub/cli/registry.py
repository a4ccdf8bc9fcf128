"""Registry and Hub commands: list, info, download, push."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from ..core.names import escaped
from ..errors import RegistryError
from ..hub import index as registry
from .options import index_option


def _width(entry: registry.Entry) -> str:
    """The adapters' d, for the methods that have one ("-" for the others, e.g. TransTIC)."""
    return str(entry.middle_dim) if _has_width(entry.method) else "-"


@functools.lru_cache(maxsize=None)
def _has_width(method: str) -> bool:
    from ..core.methods import get_method

    try:
        return get_method(method).has_option("middle_dim")
    except KeyError:  # a method this icmh-hub does not know: show what the index says
        return True


def train_command(entry: registry.Entry) -> str:
    """The command that trains the adapters a recipe entry describes."""
    command = f"icmh-hub train --codec {entry.codec} --q {entry.q} --task {entry.task}"
    if entry.lmbda is not None:
        command += f" --lmbda {entry.lmbda:g}"
    if entry.method != "sfma":
        command += f" --method {entry.method}"
    if _width(entry) not in ("64", "-"):
        command += f" --middle-dim {entry.middle_dim}"
    return command + " --data DIR --out DIR"


@click.command("list")
@click.option("--codec", default=None, help="Only entries for this codec.")
@click.option("--task", default=None, help="Only entries for this task (cls, det, seg, ...).")
@click.option("--method", default=None, help="Only entries of this adapter method (sfma, transtic, ...; `icmh-hub methods`).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@index_option
def list_command(codec: str | None, task: str | None, method: str | None, as_json: bool, index: tuple[str, ...]) -> None:
    """List registry entries: published ones can be loaded, recipes must be trained first."""
    entries = [e for e in registry.list_entries(codec=codec, task=task, index=list(index)) if method in (None, e.method)]
    if as_json:
        click.echo(json.dumps([e.to_dict() | {"origin": e.origin, "overrides": e.overrides} for e in entries], indent=2))
        return
    if not entries:
        click.echo("no entries match; `icmh-hub list` without filters shows them all")
        return
    rows = [["id", "status", "lambda", "method", "d", "task model", "metrics", "where"]]
    rows += [[escaped(e.id), e.status, "-" if e.lmbda is None else f"{e.lmbda:g}", escaped(e.method), _width(e),
              escaped(e.task_model or "-"), str(len(e.metrics)), escaped(e.where())] for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    right = {2, 4, 6}  # numbers
    lines = ["  ".join([*(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))), row[-1]])
             for row in rows]
    click.echo("\n".join(lines))  # one write: a line at a time costs seconds for a large index


def _metric_line(m: dict) -> str:
    """One result; a figure quoted from the paper says so in words, not only by its source field."""
    where = f"{m.get('metric')} = {m.get('value')} on {m.get('dataset')} ({m.get('images', '?')} images"
    notes = f" ({m['notes']})" if m.get("notes") else ""
    if m.get("source") == "paper":
        return f"{where}): the paper's figure{notes}, not measured by icmh-hub"
    return f"{where}, {m.get('source', 'measured')}, {m.get('date', '?')}){notes}"


def _url_rows(name: str, where: str, source: dict) -> list[tuple[str, object]]:
    """The row saying where a file lives, and where it is really fetched from when a mirror is set."""
    from ..hub.transport import MIRROR_ENV, mirrored

    rows: list[tuple[str, object]] = [(name, where)]
    if source.get("kind") == "url" and mirrored(source["url"]) != source["url"]:
        rows.append(("", f"fetched from {mirrored(source['url'])} (${MIRROR_ENV})"))
    return rows


def _info_rows(entry: registry.Entry) -> list[tuple[str, object]]:
    from ..hub.fetch import trust_note

    rows: list[tuple[str, object]] = [
        ("entry", entry.id), ("status", entry.status), ("codec", f"{entry.codec} q{entry.q}"), ("task", entry.task),
        ("lambda", f"{entry.lmbda:g}" if entry.lmbda is not None else "-"), ("method", entry.method),
        ("adapters", f"{entry.method}, d={_width(entry)}"), ("task model", entry.task_model or "not recorded"),
        *_url_rows("file", entry.where(), entry.source or {}),
        ("sha256", trust_note(entry.source, entry.sha256, entry)), ("size", f"{entry.size:,} bytes" if entry.size else "-"),
    ]
    if entry.base is not None:
        rows += [*_url_rows("base codec", entry.base.where(), entry.base.source),
                 ("base sha256", trust_note(entry.base.source, entry.base.sha256))]
    else:
        rows.append(("base codec", "the codec builder's own pretrained weights (CompressAI's zoo); the index names none"))
    rows.append(("index", entry.origin))
    if entry.overrides:
        rows.append(("overrides", f"{entry.overrides}: same id or same codec, task, q and lambda; load() uses this entry"))
    if entry.overridden_by:
        rows.append(("overridden", f"by {entry.overridden_by}, a later index with the same id or codec, task, q and lambda; load() uses that one"))
    if entry.status == "recipe":
        rows.append(("train", train_command(entry)))
    rows += [("metric", _metric_line(m)) for m in entry.metrics] or [("metrics", "none recorded")]
    if entry.notes:
        rows.append(("notes", entry.notes))
    return rows


@click.command("info")
@click.argument("entry_id", metavar="ENTRY")
@click.option("--json", "as_json", is_flag=True, help="Print the entry as JSON.")
@index_option
def info_command(entry_id: str, as_json: bool, index: tuple[str, ...]) -> None:
    """Everything the index says about ENTRY (e.g. mbt2018-mean/cls/q3)."""
    entry = registry.get_entry(entry_id, index=list(index))
    if as_json:
        click.echo(json.dumps(entry.to_dict() | {"origin": entry.origin, "overrides": entry.overrides,
                                                 "overridden_by": entry.overridden_by}, indent=2))
        return
    for key, value in _info_rows(entry):
        click.echo(f"{key:<11} {value}")


@click.command("download")
@click.argument("entry_id", metavar="ENTRY")
@click.option("--retrust", is_flag=True,
              help="Forget the sha256s recorded on first use for ENTRY's unpinned URL files and accept what is downloaded now "
                   "(after a publisher replaced a file on purpose).")
@index_option
def download_command(entry_id: str, retrust: bool, index: tuple[str, ...]) -> None:
    """Download ENTRY's adapter file into the cache, verify its sha256, print its path."""
    from ..hub.fetch import fetch, retrust as forget

    entry = registry.get_entry(entry_id, index=list(index))
    if retrust:
        for url in forget(entry):
            click.echo(f"forgot the sha256 recorded on first use for {url}", err=True)
    click.echo(str(fetch(entry)))


def _read_results(results_file: str) -> list[dict]:
    """A list of result dicts, or the JSON that ``icmh-hub eval --json`` writes (one evaluation)."""
    try:
        data = json.loads(Path(results_file).read_text())
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{results_file} is not JSON ({exc}); give `icmh-hub eval --json` output or a list of result objects") from None
    if isinstance(data, dict) and "metrics" in data and "task" in data:
        from ..evaluation.run import card_results

        return card_results(data)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise RegistryError(f"{results_file} holds neither `icmh-hub eval --json` output nor a list of result objects")
    return data


@click.command("push")
@click.argument("adapter_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--repo", "repo_id", required=True, metavar="ORG/NAME", help="Hub model repository (created if missing).")
@click.option("--path", "path_in_repo", default=None, help="Path of the file in the repo (default: its file name).")
@click.option("--revision", default=None, help="Branch to commit to (default main).")
@click.option("--results", "results_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON list of measured results (dataset, images, metric, value, date) for the card and entry.")
@click.option("--dry-run", is_flag=True, help="Check the file and render the card; send nothing.")
@click.option("--force", is_flag=True, help="Replace a different file already at --path (and the entry in --index).")
@click.option("--allow-random", is_flag=True, help="Publish adapters trained against a random task model (--no-pretrained) anyway.")
@click.option("--index", "index_file", type=click.Path(dir_okay=False), default=None,
              help="Add the new entry to this index file instead of printing it.")
def push_command(adapter_file: str, repo_id: str, path_in_repo: str | None, revision: str | None,
                 results_file: str | None, dry_run: bool, force: bool, index_file: str | None, allow_random: bool) -> None:
    """Publish ADAPTER_FILE and its model card (README.md) in one commit; give its registry entry."""
    from ..hub.publish import push_adapter

    results = _read_results(results_file) if results_file else []
    entry = push_adapter(adapter_file, repo_id, path=path_in_repo, revision=revision, results=results,
                         force=force, dry_run=dry_run, allow_random=allow_random)
    if dry_run:
        click.echo(f"dry run: would commit {entry['source']['path']} (sha256 {entry['sha256']}) and its card to {repo_id}", err=True)
    elif index_file:
        registry.add_entry(index_file, entry, replace=force)
        click.echo(f"added {entry['id']} at revision {entry['source']['revision']} to {index_file}", err=True)
        return
    click.echo(json.dumps(entry, indent=2))


COMMANDS = [list_command, info_command, download_command, push_command]
