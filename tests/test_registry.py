"""The registry without a Hub: index files, merging, resolving, errors, local and URL sources."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from icmh_hub import attach, build_adapters, load_adapters, save_adapters
from icmh_hub._io import sha256_of
from icmh_hub.cli import main
from icmh_hub.errors import DownloadError, IntegrityError, InvalidArgumentError, RegistryError, UnknownNameError
from icmh_hub.hub.transport import MIRROR_ENV, fetch_url, trust_records, url_target
from icmh_hub.assemble import load as load_pretrained
from icmh_hub.hub.fetch import CONVERTERS, Converter, fetch
from icmh_hub.hub.index import (
    add_entry, builtin_index_files, find_by_sha256, get_entry, list_entries, load_index, record_metrics, resolve,
)

from .file_server import FileServer

CODEC, Q = "mbt2018-mean", 1


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    monkeypatch.delenv("ICMH_HUB_INDEX", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("ICMH_HUB_CACHE", str(tmp_path / "icmh-cache"))


def adapter_file(path: Path, task: str = "cls", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_adapters(build_adapters(CODEC, Q, middle_dim=4, init="reference"), path, task=task, lmbda=1.8)


def local_entry(path: Path, task: str = "cls", **extra) -> dict:
    return {"id": f"{CODEC}/{task}/q{Q}", "codec": CODEC, "task": task, "q": Q, "lmbda": 1.8, "variant": "sfma",
            "middle_dim": 4, "status": "published", "source": {"kind": "local", "path": path.name},
            "sha256": sha256_of(path), "size": path.stat().st_size, "metrics": [], "notes": ""} | extra


def cached_files(folder: Path) -> list[Path]:
    """Files in a cache folder, without the lock files (``.NAME.lock``) downloads hold."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def write_index(folder: Path, entries, bases=(), name="index.json") -> Path:
    path = folder / name
    path.write_text(json.dumps({"entries": list(entries), "base_codecs": list(bases)}))
    return path


def test_builtin_index_is_honest():
    index = load_index()
    assert builtin_index_files() and index.entries
    for entry in index.entries.values():
        if entry.status == "published":  # a hub file pinned by sha256, a shipped file (demo zoo), or a URL (trust on first use)
            assert entry.source["kind"] in ("hub", "url", "local") and (entry.sha256 or entry.source["kind"] == "url")
            if entry.source["kind"] == "local":
                assert sha256_of(Path(entry.origin).parent / entry.source["path"]) == entry.sha256
        else:
            assert entry.source is None and entry.sha256 is None and not [m for m in entry.metrics if m.get("source") == "measured"]
    paper = {e.id: e.lmbda for e in index.entries.values() if e.codec == CODEC}
    assert paper[f"{CODEC}/cls/q1"] == 1.8 and paper[f"{CODEC}/cls/q4"] == 13 and paper[f"{CODEC}/det/q3"] == 20


def test_unknown_names_say_what_exists():
    with pytest.raises(UnknownNameError, match="unknown codec 'mbt2018-maen'; did you mean 'mbt2018-mean'"):
        resolve("mbt2018-maen", "cls", 3)
    with pytest.raises(UnknownNameError, match="unknown task for mbt2018-mean 'clss'; did you mean 'cls'.*Known: cls, det, seg"):
        resolve(CODEC, "clss", 3)
    with pytest.raises(UnknownNameError, match="quality for mbt2018-mean/cls 7.*Known: 1, 2, 3, 4"):
        resolve(CODEC, "cls", 7)
    with pytest.raises(UnknownNameError, match="lambda .* 2.0.*Known: 3.5"):
        resolve(CODEC, "cls", 2, lmbda=2.0)


def test_recipe_entry_says_how_to_train_it():
    entry = resolve(CODEC, "det", 2)
    assert entry.status == "recipe" and entry.lmbda == 10
    with pytest.raises(RegistryError, match=r"recipe, not trained yet.*`icmh-hub info mbt2018-mean/det/q2` shows the command"):
        fetch(entry)
    with pytest.raises(RegistryError, match="recipe"):
        load_pretrained(CODEC, ["det"], 2)


def test_user_indexes_merge_over_builtin(tmp_path, monkeypatch):
    folder = tmp_path / "folder"
    (folder / "files").mkdir(parents=True)
    path = adapter_file(folder / "files" / "cls.safetensors")
    write_index(folder, [local_entry(path) | {"source": {"kind": "local", "path": "files/cls.safetensors"}}], name="a.json")
    monkeypatch.setenv("ICMH_HUB_INDEX", str(folder))
    entry = resolve(CODEC, "cls", Q)
    assert entry.status == "published" and entry.origin.endswith("a.json")  # same id as the recipe: the user's wins
    assert fetch(entry).read_bytes() == path.read_bytes()

    # index= merges after the environment's, so it wins on the same id
    other = adapter_file(tmp_path / "other.safetensors", seed=1)
    explicit = write_index(tmp_path, [local_entry(other) | {"notes": "mine"}])
    assert get_entry(f"{CODEC}/cls/q{Q}", index=explicit).notes == "mine"
    assert len(list_entries(codec=CODEC, task="cls", index=explicit)) == 4

    bad = write_index(tmp_path, [local_entry(other) | {"sha256": None}], name="bad.json")
    with pytest.raises(RegistryError, match="pins no sha256"):
        list_entries(index=bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_entries(index=tmp_path / "missing.json")


def test_load_pretrained_from_local_files(tmp_path):
    from icmh_hub.core.spec import get_codec

    cls_file, det_file = adapter_file(tmp_path / "cls.safetensors"), adapter_file(tmp_path / "det.safetensors", "det", 1)
    torch.manual_seed(3)
    base = get_codec(CODEC).build(Q)
    base.update(force=True)
    torch.save({"state_dict": {"module." + k: v for k, v in base.state_dict().items()}}, tmp_path / "base.pth.tar")
    base_item = {"codec": CODEC, "q": Q, "source": {"kind": "local", "path": "base.pth.tar"}, "sha256": sha256_of(tmp_path / "base.pth.tar")}
    index = write_index(tmp_path, [local_entry(cls_file), local_entry(det_file, "det")], [base_item])

    codec = load_pretrained(CODEC, ["cls", "det"], Q, index=index)
    assert codec.tasks == ["cls", "det"] and codec.task == "cls" and not codec.training
    reference = attach(base, CODEC, {"cls": load_adapters(cls_file)}).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(codec(x)["x_hat"], reference(x)["x_hat"])
        strings = codec.compress(x)
        assert strings["strings"] == reference.compress(x)["strings"]

    assert find_by_sha256(sha256_of(det_file), index=index).task == "det"
    assert find_by_sha256("0" * 64, index=index) is None

    det_file.write_bytes(det_file.read_bytes()[:-1] + b"!")  # a user's own file: reported, never deleted
    with pytest.raises(IntegrityError, match="sha256 mismatch.*left in place"):
        load_pretrained(CODEC, "det", Q, index=index)
    assert det_file.exists()


def test_add_entry_and_record_metrics(tmp_path):
    path = adapter_file(tmp_path / "cls.safetensors")
    index = tmp_path / "new" / "index.json"
    entry = local_entry(path)
    add_entry(index, entry)
    add_entry(index, entry)  # the same again is fine
    with pytest.raises(RegistryError, match="replace=True"):
        add_entry(index, entry | {"notes": "changed"})
    add_entry(index, entry | {"notes": "changed"}, replace=True)
    result = {"dataset": "proxy-val", "images": 16, "metric": "top1", "value": 0.5, "date": "2026-11-25"}
    record_metrics(index, entry["id"], [result])
    updated = record_metrics(index, entry["id"], [result | {"value": 0.6}])
    assert [m["value"] for m in updated.metrics] == [0.6] and updated.metrics[0]["source"] == "measured"
    assert json.loads(index.read_text())["entries"][0]["notes"] == "changed"
    with pytest.raises(UnknownNameError):
        record_metrics(index, "nope", [result])


@pytest.fixture()
def web(tmp_path):
    folder = tmp_path / "www"
    folder.mkdir()
    server = FileServer(folder).start()
    yield folder, server.url
    server.stop()


def test_fetch_url_pins_or_trusts_on_first_use(web, monkeypatch):
    folder, url = web
    (folder / "w.bin").write_bytes(b"weights" * 100)
    good = sha256_of(folder / "w.bin")
    got = fetch_url(f"{url}/w.bin", sha256=good)
    assert got.read_bytes() == b"weights" * 100

    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        fetch_url(f"{url}/w.bin?again", sha256="0" * 64)
    assert cached_files(got.parent.parent) == [got]  # the bad download was not kept

    tofu = fetch_url(f"{url}/w.bin?tofu")
    assert trust_records()[f"{url}/w.bin?tofu"]["sha256"] == good
    tofu.write_bytes(b"changed")  # the cached copy changes after the first use: caught and removed
    with pytest.raises(IntegrityError):
        fetch_url(f"{url}/w.bin?tofu")
    assert not tofu.exists()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fetch_url(f"{url}/w.bin", sha256=good) == got  # warm: no network needed
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE is set and it is not in the cache"):
        fetch_url(f"{url}/never.bin")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(DownloadError, match="cannot download"):
        fetch_url(f"{url}/missing.bin")


def test_url_source_with_converter_converts_once(web, tmp_path, monkeypatch):
    folder, url = web
    torch.save({"state_dict": {"g_a.0.weight": torch.ones(2)}}, folder / "ckpt.pth.tar")  # a checkpoint of weights
    checkpoint = (folder / "ckpt.pth.tar").read_bytes()
    calls = []

    def fake_convert(checkpoint, codec, q, task, out, base, **info):  # stands in for convert_reference
        calls.append((Path(checkpoint).read_bytes(), base, info["base_check"]))
        torch.manual_seed(0)
        return save_adapters(build_adapters(codec, q, middle_dim=4), out, task=task, **info)

    monkeypatch.setitem(CONVERTERS, "fake", lambda: Converter(fake_convert, version))
    version = 1
    entry = {"id": "ref/cls", "codec": CODEC, "task": "cls", "q": Q, "status": "published", "sha256": None,
             "source": {"kind": "url", "url": f"{url}/ckpt.pth.tar", "converter": "fake"}}
    index = write_index(tmp_path, [entry])
    first = fetch(get_entry("ref/cls", index=index))
    second = fetch(get_entry("ref/cls", index=index))
    assert first == second and calls == [(checkpoint, None, "not checked")] and load_adapters(first).task == "cls"
    assert load_adapters(first).info["source_url"] == f"{url}/ckpt.pth.tar"
    version = 2  # a new converter version converts again
    assert fetch(get_entry("ref/cls", index=index)) == first and len(calls) == 2

    run = CliRunner().invoke(main, ["info", "ref/cls", "--index", str(index)])
    assert "NOT PINNED by the index: trust on first use; recorded " + sha256_of(folder / "ckpt.pth.tar") in run.output
    assert "converted file " + sha256_of(first) in run.output


def test_a_download_killed_midway_leaves_a_partial_that_the_next_download_removes(tmp_path):
    folder = tmp_path / "www"
    folder.mkdir()
    (folder / "big.bin").write_bytes(os.urandom(24 << 20))  # over two of huggingface_hub's 10 MB chunks
    server = FileServer(folder).start()
    server.stall.add("big.bin")  # half the file, then the server waits: one chunk reaches the disk
    url = f"{server.url}/big.bin"
    target = url_target(url)
    script = f"from icmh_hub.hub.transport import fetch_url; fetch_url({url!r})"
    child = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not [p for p in target.parent.glob(".big.bin.*.partial") if p.stat().st_size > 0]:
            assert time.monotonic() < deadline and child.poll() is None, "the download never started"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)  # no handler runs: the temporary file stays
        child.wait(timeout=30)
        partials = list(target.parent.glob(".big.bin.*.partial"))
        assert len(partials) == 1 and not target.exists()
        server.stall.clear()
        server.release.set()
        assert fetch_url(url).read_bytes() == (folder / "big.bin").read_bytes()
        assert not partials[0].exists() and cached_files(target.parent) == [target]
    finally:
        child.kill()
        server.stop()


def test_a_changed_url_file_is_refused_until_retrust(web, tmp_path):
    folder, url = web
    served = adapter_file(folder / "cls.safetensors")
    entry = {"id": "url/cls", "codec": CODEC, "task": "cls", "q": Q, "status": "published", "sha256": None,
             "source": {"kind": "url", "url": f"{url}/cls.safetensors"}}
    index = write_index(tmp_path, [entry])
    first = fetch(get_entry("url/cls", index=index))
    recorded = trust_records()[f"{url}/cls.safetensors"]
    first.unlink()
    adapter_file(folder / "cls.safetensors", seed=7)  # the publisher replaced it
    run = CliRunner().invoke(main, ["download", "url/cls", "--index", str(index)])
    assert run.exit_code == 1 and run.output.count("\n") == 1
    assert "not the file first used here" in run.output and "icmh-hub download ENTRY --retrust" in run.output
    assert trust_records()[f"{url}/cls.safetensors"] == recorded and not first.exists()
    run = CliRunner().invoke(main, ["download", "url/cls", "--index", str(index), "--retrust"])
    assert run.exit_code == 0, run.output
    assert Path(run.output.strip().splitlines()[-1]).read_bytes() == served.read_bytes() != b""
    assert trust_records()[f"{url}/cls.safetensors"]["sha256"] == sha256_of(served) != recorded["sha256"]


def test_the_url_mirror_serves_https_urls_and_a_bad_one_is_one_line(web, monkeypatch):
    folder, url = web
    (folder / "example.org" / "releases").mkdir(parents=True)
    (folder / "example.org" / "releases" / "w.bin").write_bytes(b"mirrored")
    monkeypatch.setenv(MIRROR_ENV, url + "/")
    got = fetch_url("https://example.org/releases/w.bin")
    assert got.read_bytes() == b"mirrored" and trust_records()["https://example.org/releases/w.bin"]["sha256"] == sha256_of(got)
    monkeypatch.setenv(MIRROR_ENV, "mirror.lab:8000")
    with pytest.raises(InvalidArgumentError, match="ICMH_HUB_URL_MIRROR is 'mirror.lab:8000'; set it to the http:// or https://"):
        fetch_url("https://example.org/releases/other.bin")


def test_damaged_trust_records_are_an_error_not_a_fresh_start(web, tmp_path):
    folder, url = web
    (folder / "w.bin").write_bytes(b"w")
    fetch_url(f"{url}/w.bin")
    trust = tmp_path / "icmh-cache" / "trust.json"
    trust.write_text("{ not json")
    with pytest.raises(IntegrityError, match="trust records .* are damaged"):
        fetch_url(f"{url}/w.bin")


def test_url_downloads_show_a_progress_bar_on_a_terminal(web):
    folder, url = web
    (folder / "w.bin").write_bytes(os.urandom(3 << 20))
    import fcntl
    import struct

    termios = pytest.importorskip("termios")  # POSIX terminals
    leader, follower = os.openpty()  # the child's stderr is a terminal (120 columns), as a user's is
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    script = f"from icmh_hub.hub.transport import fetch_url; fetch_url({url + '/w.bin'!r})"
    done = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), stderr=follower, timeout=120)
    os.close(follower)
    shown = b""
    while chunk := _read_available(leader):
        shown += chunk
    os.close(leader)
    assert done.returncode == 0
    assert b"w.bin" in shown and b"100%" in shown and b"3.15M" in shown, shown[-300:]


def _read_available(fd: int) -> bytes:
    import select

    if not select.select([fd], [], [], 0.5)[0]:
        return b""
    try:
        return os.read(fd, 1 << 16)
    except OSError:  # the terminal's other end is closed: all read
        return b""
