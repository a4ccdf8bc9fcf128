"""Index files are checked value by value (issue 16, item 7): one line naming file, entry and
field for every type or range error; one entry per id and per (codec, task, q, lambda, variant) in a
file; a later index overrides an earlier entry with the same key, and says so; local paths
stay inside the index's folder, checked before anything is read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from icmh_hub import build_adapters, save_adapters
from icmh_hub._io import sha256_of
from icmh_hub.assemble import registry_adapters
from icmh_hub.cli import main
from icmh_hub.errors import RegistryError
from icmh_hub.hub.fetch import fetch, fetch_base
from icmh_hub.hub.index import add_entry, get_entry, list_entries, load_index, resolve


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    monkeypatch.delenv("ICMH_HUB_INDEX", raising=False)
    monkeypatch.setenv("ICMH_HUB_CACHE", str(tmp_path / "icmh-cache"))


GOOD = {"id": "lab/cls/q1", "codec": "mbt2018-mean", "task": "cls", "q": 1, "lmbda": 2.5, "variant": "sfma", "middle_dim": 4,
        "status": "published", "source": {"kind": "local", "path": "a.safetensors"}, "sha256": "ab" * 32, "size": 10,
        "metrics": [{"dataset": "d", "images": 4, "metric": "top1", "value": 0.5, "date": "2026-11-25", "source": "measured"}],
        "notes": ""}
BASE = {"codec": "mbt2018-mean", "q": 1, "source": {"kind": "local", "path": "base.pth"}, "sha256": "cd" * 32, "size": 10}


def write(folder: Path, entries=(), bases=(), name="index.json", raw: str | None = None) -> Path:
    path = folder / name
    path.write_text(raw if raw is not None else json.dumps({"entries": list(entries), "base_codecs": list(bases)}))
    return path


# (what is changed, the field the message must name, a phrase of the message)
BAD_ENTRIES = [
    ({"q": "three"}, "q", 'whole number >= 1 such as 2, got "three"'),
    ({"q": [2]}, "q", "got [2]"),
    ({"q": 2.7}, "q", "got 2.7"),
    ({"q": True}, "q", "got true"),
    ({"q": 0}, "q", "got 0"),
    ({"metrics": 5}, "metrics", "list of result objects, got 5"),
    ({"metrics": [5]}, "metrics[0]", "an object with dataset, metric, value"),
    ({"metrics": [{"dataset": "d", "metric": "m", "value": "high"}]}, "metrics[0].value", "finite number"),
    ({"metrics": [{"dataset": "d", "metric": "m", "value": 1, "source": "rumour"}]}, "metrics[0].source", '"paper"'),
    ({"metrics": [{"dataset": "d", "value": 1}]}, "metrics[0].metric", "required"),
    ({"lmbda": "abc"}, "lmbda", 'positive number such as 6.7, or null, got "abc"'),
    ({"lmbda": -1}, "lmbda", "got -1"),
    ({"lmbda": float("nan")}, "lmbda", "got NaN"),
    ({"task": 5}, "task", "task name"),
    ({"codec": ""}, "codec", "required"),
    ({"id": ["a"]}, "id", 'names joined by "/" such as "tic/det/q2", got ["a"]'),
    ({"task": "\u001b[2J"}, "task", "a task name such as \"cls\": letters, digits, _ + - only"),
    ({"task": "../../x"}, "task", "a task name such as"),
    ({"codec": "a.b"}, "codec", "a codec name such as"),
    ({"sha256": 12345}, "sha256", "64 hexadecimal characters, or null, got 12345"),
    ({"sha256": "abc"}, "sha256", 'got "abc"'),
    ({"sha256": None}, "sha256", "pins no sha256"),
    ({"size": -5}, "size", "whole number > 0"),
    ({"size": "big"}, "size", 'got "big"'),
    ({"middle_dim": 0}, "middle_dim", "whole number >= 1"),
    ({"variant": 3}, "variant", "adapter method"),
    ({"status": "done"}, "status", '"published" or "recipe"'),
    ({"notes": 5}, "notes", "a string"),
    ({"sha": "x"}, "sha", "unknown key"),
    ({"source": "a.safetensors"}, "source", "an object with kind"),
    ({"source": {"kind": "ftp", "path": "a"}}, "source.kind", '"hub" or "url" or "local"'),
    ({"source": {"kind": "hub", "repo_id": "noslash", "path": "a"}}, "source.repo_id", '"ORG/NAME"'),
    ({"source": {"kind": "hub", "repo_id": "o/n"}}, "source.path", "required"),
    ({"source": {"kind": "url", "url": "ftp://host/a"}}, "source.url", "http:// or https://"),
    ({"source": {"kind": "url", "url": "https://h/a", "name": "../up"}}, "source.name", "plain file name"),
    ({"source": {"kind": "local", "path": "a", "url": "x"}}, "source.url", "unknown key"),
    ({"source": {"kind": "local", "path": "../../etc/passwd"}}, "source.path", "stays inside its folder"),
    ({"source": {"kind": "local", "path": "/etc/passwd"}}, "source.path", "stays inside its folder"),
]


@pytest.mark.parametrize("change, field, phrase", BAD_ENTRIES, ids=[f"{f}={json.dumps(c[next(iter(c))])}" for c, f, _ in BAD_ENTRIES])
def test_a_bad_entry_value_is_one_line_naming_file_entry_and_field(tmp_path, change, field, phrase):
    index = write(tmp_path, [GOOD | change])
    with pytest.raises(RegistryError) as caught:
        load_index(index)
    message = str(caught.value)
    name = f"entry {GOOD['id']!r}" if "id" not in change else "entry #1"
    assert message.startswith(f"index {index}: {name}, field {field!r}: ") and phrase in message, message
    assert "\n" not in message


BAD_BASES = [
    ({"q": "two"}, "base_codecs item #1", "q", 'got "two"'),
    ({"sha256": 12345}, "base_codecs item #1 (mbt2018-mean q1)", "sha256", "got 12345"),
    ({"source": {"kind": "local", "path": "../../etc/passwd"}}, "base_codecs item #1 (mbt2018-mean q1)", "source.path", "inside"),
    ({"source": {"kind": "local", "path": "/etc/passwd"}}, "base_codecs item #1 (mbt2018-mean q1)", "source.path", "inside"),
    ({"size": -1}, "base_codecs item #1 (mbt2018-mean q1)", "size", "got -1"),
    ({"url": "x"}, "base_codecs item #1 (mbt2018-mean q1)", "url", "unknown key"),
]


@pytest.mark.parametrize("change, item, field, phrase", BAD_BASES, ids=[f for _, _, f, _ in BAD_BASES])
def test_a_bad_base_codec_value_is_one_line_too(tmp_path, change, item, field, phrase):
    index = write(tmp_path, bases=[BASE | change])
    with pytest.raises(RegistryError) as caught:
        load_index(index)
    assert str(caught.value).startswith(f"index {index}: {item}, field {field!r}: ") and phrase in str(caught.value)


def test_bad_files_and_the_cli_line(tmp_path):
    for raw, phrase in (('{"entries": {}}', "'entries' must be a list"), ('{"entires": []}', "unknown top-level keys ['entires']"),
                        ("[1, 2]", "must hold a JSON object"), ('{"entries": [', "not readable JSON"),
                        ('{"entries": [5]}', "entry #1 is not a JSON object")):
        with pytest.raises(RegistryError, match=phrase.replace("[", r"\[").replace("]", r"\]")):
            load_index(write(tmp_path, raw=raw))
    index = write(tmp_path, [GOOD | {"q": "three"}])
    done = subprocess.run([sys.executable, "-m", "icmh_hub.cli", "list", "--index", str(index)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == f"error: index {index}: entry 'lab/cls/q1', field 'q': expected a whole number >= 1 such as 2, got \"three\"; see adapters/README.md\n"


def test_the_same_id_or_key_twice_in_one_file_is_refused(tmp_path):
    other = GOOD | {"id": "lab/cls/q1b", "lmbda": 9.0}
    with pytest.raises(RegistryError, match=r"two items with the same id \(lab/cls/q1\); remove or rename one"):
        load_index(write(tmp_path, [GOOD, GOOD | {"notes": "the last would have won"}]))
    with pytest.raises(RegistryError, match=r"same \(codec, task, q, lambda, variant\) \(mbt2018-mean, cls, 1, 2.5, sfma\)"):
        load_index(write(tmp_path, [GOOD, other | {"lmbda": 2.5}]))
    with pytest.raises(RegistryError, match=r"same base codec \(codec, q\) \(mbt2018-mean, 1\)"):
        load_index(write(tmp_path, bases=[BASE, BASE]))
    assert len(load_index(write(tmp_path, [GOOD, other])).entries) > 2  # different lambdas: both kept
    index = tmp_path / "grow.json"
    add_entry(index, GOOD)
    with pytest.raises(RegistryError, match="same \\(codec, task, q, lambda, variant\\)"):
        add_entry(index, other | {"lmbda": 2.5})
    assert [e["id"] for e in json.loads(index.read_text())["entries"]] == ["lab/cls/q1"]  # the file was not changed
    builtin = load_index()
    assert not builtin.overridden, f"built-in entries override each other: {sorted(builtin.overridden)}"


def test_a_user_entry_with_the_same_key_overrides_the_builtin_one_and_says_so(tmp_path):
    torch.manual_seed(0)
    path = save_adapters(build_adapters("tic", 2, middle_dim=4, init="reference"), tmp_path / "det.safetensors", task="det", lmbda=1.0)
    mine = {"id": "lab/tic-det-q2", "codec": "tic", "task": "det", "q": 2, "lmbda": 1.0, "middle_dim": 4, "status": "published",
            "source": {"kind": "local", "path": path.name}, "sha256": sha256_of(path), "size": path.stat().st_size}
    index = write(tmp_path, [mine])
    assert resolve("tic", "det", 2, index=index).id == "lab/tic-det-q2"  # before: the built-in one, silently
    assert registry_adapters("tic", "det", 2, index=index).sha256 == sha256_of(path)  # what load() attaches
    listed = [e.id for e in list_entries(codec="tic", task="det", index=index)]
    assert "lab/tic-det-q2" in listed and "tic/det/q2" not in listed
    builtin_file = get_entry("tic/det/q2").origin
    run = CliRunner().invoke(main, ["info", "lab/tic-det-q2", "--index", str(index)])
    assert f"overrides   tic/det/q2 ({builtin_file}): same id or same codec, task, q and lambda; load() uses this entry" in run.output
    run = CliRunner().invoke(main, ["info", "tic/det/q2", "--index", str(index)])
    assert f"overridden  by lab/tic-det-q2 ({index})" in run.output and "load() uses that one" in run.output


def test_local_paths_never_leave_the_index_folder(tmp_path, monkeypatch):
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"not yours")
    folder = tmp_path / "index"
    folder.mkdir()
    (folder / "link.safetensors").symlink_to(outside)
    (folder / "base.pth").symlink_to(outside)
    index = write(folder, [GOOD | {"source": {"kind": "local", "path": "link.safetensors"}, "sha256": sha256_of(outside)}],
                  [BASE | {"sha256": sha256_of(outside)}])

    def no_reading(*args, **kwargs):
        raise AssertionError("a file outside the index folder was read")

    monkeypatch.setattr("icmh_hub.hub.transport.sha256_of", no_reading)
    merged = load_index(index)
    with pytest.raises(RegistryError, match=r"local path 'link.safetensors' leaves the index's folder"):
        fetch(merged.entries["lab/cls/q1"])
    with pytest.raises(RegistryError, match=r"local path 'base.pth' leaves the index's folder"):
        fetch_base(merged.bases[("mbt2018-mean", 1)])
