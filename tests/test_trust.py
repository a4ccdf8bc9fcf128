"""Trust on first use that cannot be poisoned, downloads that end, and files coded with unpinned
entries that decode. Real HTTP servers on 127.0.0.1: tests/file_server.py, and a small one here
that answers with chosen bytes, Content-Length and pace."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from icmh_hub._io import sha256_of
from icmh_hub.cli import main
from icmh_hub.core.spec import get_codec
from icmh_hub.errors import DownloadError, IntegrityError
from icmh_hub.hub.fetch import fetch
from icmh_hub.hub.index import find_by_sha256, get_entry
from icmh_hub.hub.transport import DEADLINE_ENV, trust_records, url_target

from .test_registry import adapter_file, web, write_index  # noqa: F401  (web: a fixture)

CODEC, Q = "mbt2018-mean", 1


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    for name in ("ICMH_HUB_INDEX", "HF_HUB_OFFLINE", DEADLINE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ICMH_HUB_CACHE", str(tmp_path / "cache"))


class _Canned(BaseHTTPRequestHandler):
    """Answers every GET with the server's ``body``, announcing ``length`` bytes, one byte every ``pace`` s."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        server = self.server
        self.send_response(200)
        self.send_header("Content-Type", server.content_type)
        self.send_header("Content-Length", str(server.length if server.length is not None else len(server.body)))
        self.end_headers()
        if not server.pace:
            self.wfile.write(server.body)
            return
        for byte in server.body[:30]:  # bounded: at most 30 bytes, then the handler ends
            if server.done.wait(server.pace):
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()


@pytest.fixture
def canned():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    server.daemon_threads = True
    server.body, server.length, server.pace, server.content_type = b"", None, 0.0, "application/octet-stream"
    server.done = threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.done.set()
    server.shutdown()
    server.server_close()


def url_entry(url: str, task: str = "cls", sha256: str | None = None, entry_id: str | None = None) -> dict:
    return {"id": entry_id or f"url/{task}", "codec": CODEC, "task": task, "q": Q, "middle_dim": 4, "status": "published",
            "sha256": sha256, "source": {"kind": "url", "url": url}}


def download(index: Path, entry: str = "url/cls"):
    return CliRunner().invoke(main, ["download", entry, "--index", str(index)])


def test_an_html_page_or_a_short_body_is_refused_in_one_line_and_not_trusted(canned, tmp_path):
    url = f"{canned.url}/cls.safetensors"
    index = write_index(tmp_path, [url_entry(url)])
    canned.body, canned.content_type = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>", "text/html"
    run = download(index)
    assert run.exit_code == 1 and run.output.count("\n") == 1, run.output
    assert "sent an HTML page" in run.output and "nothing was recorded or kept" in run.output
    assert trust_records() == {} and not url_target(url).exists()

    whole = adapter_file(tmp_path / "cls.safetensors").read_bytes()
    canned.body, canned.length, canned.content_type = whole[: len(whole) // 2], len(whole) // 2, "application/octet-stream"
    run = download(index)  # a body cut short with a Content-Length that matches the cut
    assert run.exit_code == 1 and "sent no weights file" in run.output and run.output.count("\n") == 1, run.output
    assert trust_records() == {} and not url_target(url).exists()

    canned.body, canned.length = whole, None  # the real file is trusted and handed out
    run = download(index)
    assert run.exit_code == 0, run.output
    assert trust_records()[url]["sha256"] == sha256_of(tmp_path / "cls.safetensors")


def test_a_cached_file_without_a_record_is_downloaded_again_not_used(web, tmp_path):
    folder, base = web
    served = adapter_file(folder / "cls.safetensors")
    index = write_index(tmp_path, [url_entry(f"{base}/cls.safetensors")])
    first = fetch(get_entry("url/cls", index=index))
    (tmp_path / "cache" / "trust.json").unlink()  # what the damaged-records message allows
    first.write_bytes(adapter_file(tmp_path / "evil.safetensors", seed=9).read_bytes())  # edited by hand
    again = fetch(get_entry("url/cls", index=index))
    assert again.read_bytes() == served.read_bytes()
    assert trust_records()[f"{base}/cls.safetensors"]["sha256"] == sha256_of(served)


def test_pinned_and_unpinned_entries_of_one_url_do_not_share_a_file_or_a_record(web, tmp_path):
    folder, base = web
    served = adapter_file(folder / "cls.safetensors")
    url = f"{base}/cls.safetensors"
    index = write_index(tmp_path, [url_entry(url, sha256=sha256_of(served), entry_id="pinned/cls"),
                                   url_entry(url, task="det", entry_id="tofu/det")])
    pinned = fetch(get_entry("pinned/cls", index=index))
    assert trust_records() == {}  # a pinned download records nothing
    unpinned = fetch(get_entry("tofu/det", index=index))
    assert pinned != unpinned and pinned.parent != unpinned.parent
    unpinned.write_bytes(b"edited")  # poisoning the unpinned copy does not touch the pinned one
    assert fetch(get_entry("pinned/cls", index=index)).read_bytes() == served.read_bytes()
    with pytest.raises(IntegrityError, match="not the file first used here"):
        fetch(get_entry("tofu/det", index=index))


def test_wrong_types_in_trust_json_are_one_line(web, tmp_path):
    folder, base = web
    adapter_file(folder / "cls.safetensors")
    index = write_index(tmp_path, [url_entry(f"{base}/cls.safetensors")])
    (tmp_path / "cache").mkdir()
    for content in ('{"x": {"sha256": 5, "size": 1, "first_used": "d"}}', '{"x": []}', "[1]", '{"a": 1, "a": 2}', "[" * 100_000):
        (tmp_path / "cache" / "trust.json").write_text(content)
        run = download(index)
        assert run.exit_code == 1 and run.output.count("\n") == 1, run.output
        assert run.output.startswith("error: the trust records") and "are damaged" in run.output, run.output


def test_a_server_trickling_bytes_is_stopped_at_the_deadline_in_one_line(canned, tmp_path, monkeypatch):
    whole = adapter_file(tmp_path / "cls.safetensors").read_bytes()
    canned.body, canned.pace = whole, 2.0  # one byte every 2 s, the true Content-Length
    url = f"{canned.url}/cls.safetensors"
    index = write_index(tmp_path, [url_entry(url)])
    monkeypatch.setenv(DEADLINE_ENV, "3")
    started = time.monotonic()
    run = download(index)
    took = time.monotonic() - started
    assert run.exit_code == 1 and run.output.count("\n") == 1 and took < 15, (took, run.output)
    assert "not complete after 3 s" in run.output and DEADLINE_ENV in run.output, run.output
    assert trust_records() == {} and not url_target(url).exists()
    with pytest.raises(DownloadError, match="not complete after 1 s"):
        from icmh_hub.hub.transport import fetch_url

        fetch_url(url, deadline=1)


def _base_item(folder: Path) -> dict:
    torch.manual_seed(3)
    base = get_codec(CODEC).build(Q)
    base.update(force=True)
    torch.save({"state_dict": base.state_dict()}, folder / "base.pth.tar")
    return {"codec": CODEC, "q": Q, "source": {"kind": "local", "path": "base.pth.tar"}, "sha256": sha256_of(folder / "base.pth.tar")}


def test_find_by_sha256_covers_first_use_records_and_converted_files(web, tmp_path, monkeypatch):
    """What the decoder calls with a file's adapter sha256: unpinned URL files and files converted
    from a reference checkpoint (the built-in tic/* kind) are found through their first-use records."""
    from icmh_hub.hub.fetch import CONVERTERS, Converter

    folder, base = web
    served = adapter_file(folder / "cls.safetensors")
    torch.save({"state_dict": {"w": torch.ones(2)}}, folder / "ckpt.pth.tar")
    convert = lambda checkpoint, codec, q, task, out, base, **info: adapter_file(out, task, seed=4)  # noqa: E731
    monkeypatch.setitem(CONVERTERS, "fake", lambda: Converter(convert, 1))
    converted = url_entry(f"{base}/ckpt.pth.tar", task="det", entry_id="ref/det")
    converted["source"]["converter"] = "fake"
    index = write_index(tmp_path, [url_entry(f"{base}/cls.safetensors"), converted])
    assert find_by_sha256(sha256_of(served), index=index) is None  # nothing recorded yet: nothing vouches
    fetch(get_entry("url/cls", index=index))
    made = fetch(get_entry("ref/det", index=index))
    assert find_by_sha256(sha256_of(served), index=index).id == "url/cls"
    assert find_by_sha256(sha256_of(made), index=index).id == "ref/det"
    assert find_by_sha256(sha256_of(folder / "ckpt.pth.tar"), index=index) is None  # the checkpoint is not the adapter file


@pytest.mark.slow  # two CLI processes: about 50 s on two shared cores
def test_a_file_coded_with_an_unpinned_entry_decodes_in_a_fresh_process(web, tmp_path):
    folder, base = web
    served = adapter_file(folder / "cls.safetensors")
    index = write_index(tmp_path, [url_entry(f"{base}/cls.safetensors", entry_id=f"{CODEC}/cls/q{Q}")], [_base_item(tmp_path)])
    picture = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype("uint8")).save(picture)
    env = dict(os.environ, ICMH_HUB_INDEX=str(index), PYTHONPATH=str(Path(__file__).parents[1]))
    cli = [sys.executable, "-m", "icmh_hub.cli"]
    coded = subprocess.run([*cli, "compress", str(picture), "-o", str(tmp_path / "in.icmh"), "--codec", CODEC, "--q", str(Q),
                            "--task", "cls"], env=env, capture_output=True, text=True, timeout=300)
    assert coded.returncode == 0, coded.stderr[-2000:]
    assert find_by_sha256(sha256_of(served), index=index).id == f"{CODEC}/cls/q{Q}"  # through the first-use record
    decoded = subprocess.run([*cli, "decompress", str(tmp_path / "in.icmh"), "-o", str(tmp_path / "out.png")], env=env,
                             capture_output=True, text=True, timeout=300)
    assert decoded.returncode == 0, decoded.stderr[-2000:]
    assert Image.open(tmp_path / "out.png").size == (64, 64)
