"""Push and download against real peers: the loopback Hub double (writes) and olah (reads).

The double stores each pushed repo as a git repository in olah's mirrors folder; olah serves it
back with the Hub's download protocol, so downloads are the real ``hf_hub_download``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from icmh_hub import build_adapters, save_adapters
from icmh_hub._io import sha256_of
from icmh_hub.cli import main
from icmh_hub.errors import DownloadError, IcmhError, IntegrityError
from icmh_hub.hub.publish import push_adapter
from icmh_hub.assemble import load as load_pretrained
from icmh_hub.hub.fetch import fetch
from icmh_hub.hub.index import get_entry

from .hub_double import HubDouble, Olah, free_port

CODEC, Q = "mbt2018-mean", 1


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    double = HubDouble(root / "mirrors").start()
    olah = Olah(root / "mirrors", root / "olah")
    try:
        olah.wait()
        yield double, olah, root
    finally:
        olah.stop()
        double.stop()


@pytest.fixture()
def hf_env(servers, tmp_path, monkeypatch):
    """Downloads go to olah with a fresh, empty HF cache; the icmh cache is fresh too."""
    _, olah, _ = servers
    monkeypatch.setenv("HF_ENDPOINT", olah.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("ICMH_HUB_CACHE", str(tmp_path / "icmh-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("ICMH_HUB_INDEX", raising=False)
    return tmp_path


def adapter_file(path: Path, task: str = "cls", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    adapters = build_adapters(CODEC, Q, middle_dim=4, init="reference")
    return save_adapters(adapters, path, task=task, lmbda=1.8)


def base_weights(folder: Path) -> dict:
    """A random mbt2018-mean q1 saved next to an index: the base codec without CompressAI's zoo."""
    from icmh_hub.core.spec import get_codec

    torch.manual_seed(1)
    model = get_codec(CODEC).build(Q, pretrained=False)
    model.update(force=True)
    torch.save(model.state_dict(), folder / "base.pth")
    return {"codec": CODEC, "q": Q, "source": {"kind": "local", "path": "base.pth"},
            "sha256": sha256_of(folder / "base.pth"), "size": (folder / "base.pth").stat().st_size}


def write_index(folder: Path, entries: list[dict], bases: list[dict] = ()) -> Path:
    path = folder / "index.json"
    path.write_text(json.dumps({"entries": entries, "base_codecs": list(bases)}))
    return path


def cached_blobs(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("blobs/*") if p.is_file()]


def test_push_is_one_commit_with_card_and_refuses_other_bytes(servers, hf_env):
    double, _, _ = servers
    first = adapter_file(hf_env / "a.safetensors")
    before = len(double.log)
    entry = push_adapter(first, "org/push", path="cls/q1.safetensors", endpoint=double.url)
    commits = [item for item in double.log[before:] if item[0] == "commit"]
    assert len(commits) == 1 and entry["source"]["revision"] == commits[0][1]
    assert entry["sha256"] == sha256_of(first) and entry["status"] == "published" and entry["id"] == f"{CODEC}/cls/q1"

    # the commit holds the file and its card, and both download back through olah
    downloaded = fetch(get_entry(entry["id"], index=write_index(hf_env, [entry])))
    assert downloaded.read_bytes() == first.read_bytes()
    from icmh_hub.hub.transport import download_hub_file

    card = download_hub_file("org/push", "cls/README.md", entry["source"]["revision"]).read_text()
    assert "library_name: icmh-hub" in card and entry["sha256"] in card

    other = adapter_file(hf_env / "b.safetensors", seed=5)
    with pytest.raises(IcmhError, match="already has a different cls/q1.safetensors.*--force"):
        push_adapter(other, "org/push", path="cls/q1.safetensors", endpoint=double.url)
    again = push_adapter(first, "org/push", path="cls/q1.safetensors", endpoint=double.url)  # same bytes: fine
    assert again["source"]["revision"] == entry["source"]["revision"]
    forced = push_adapter(other, "org/push", path="cls/q1.safetensors", force=True, endpoint=double.url)
    assert forced["source"]["revision"] != entry["source"]["revision"]

    before = len(double.log)
    dry = push_adapter(other, "org/never", dry_run=True, endpoint=double.url)
    assert double.log[before:] == [] and dry["source"]["revision"] is None


def test_cli_push_adds_entry_to_index_then_download(servers, hf_env, monkeypatch):
    double, _, _ = servers
    path = adapter_file(hf_env / "seg.safetensors", task="seg")
    results = hf_env / "results.json"
    results.write_text(json.dumps([{"dataset": "proxy-val", "images": 8, "metric": "miou", "value": 0.5, "date": "2026-11-25"}]))
    index = hf_env / "mine.json"
    monkeypatch.setenv("HF_ENDPOINT", double.url)  # push goes to the double
    run = CliRunner().invoke(main, ["push", str(path), "--repo", "org/cli", "--index", str(index), "--results", str(results)])
    assert run.exit_code == 0, run.output
    saved = json.loads(index.read_text())["entries"][0]
    assert saved["metrics"][0]["value"] == 0.5 and len(saved["source"]["revision"]) == 40

    monkeypatch.setenv("HF_ENDPOINT", servers[1].url)  # downloads come from olah
    run = CliRunner().invoke(main, ["download", saved["id"], "--index", str(index)])
    assert run.exit_code == 0, run.output
    assert Path(run.output.strip().splitlines()[-1]).read_bytes() == path.read_bytes()
    run = CliRunner().invoke(main, ["info", saved["id"], "--index", str(index)])
    assert saved["sha256"] + " (pinned by the index)" in run.output and "miou = 0.5 on proxy-val" in run.output


def test_cli_push_reads_eval_json_and_refuses_other_json(tmp_path):
    from icmh_hub.cli.registry import _read_results

    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps({"task": "seg", "dataset": "proxy", "protocol": "coco", "images": 4, "date": "2026-11-25",
                                      "metrics": {"segm_AP": 12.5, "bpp_est": 0.3, "psnr": None}}))
    assert [(r["metric"], r["value"]) for r in _read_results(str(evaluation))] == [("segm_AP", 12.5), ("bpp_est", 0.3)]
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    run = CliRunner().invoke(main, ["push", str(other), "--repo", "org/x", "--results", str(other)])
    assert run.exit_code == 1 and "neither" in run.output


def test_round_trip_in_a_new_process_then_offline(servers, hf_env, monkeypatch):
    double, olah, _ = servers
    cls_file = adapter_file(hf_env / "cls.safetensors", task="cls", seed=2)
    det_file = adapter_file(hf_env / "det.safetensors", task="det", seed=3)
    entries = [push_adapter(f, "org/round", path=f"{t}/q1.safetensors", endpoint=double.url) for f, t in ((cls_file, "cls"), (det_file, "det"))]
    index = write_index(hf_env, entries, [base_weights(hf_env)])
    out = hf_env / "x_hat.pt"
    script = textwrap.dedent(f"""
        import torch, icmh_hub
        codec = icmh_hub.load({CODEC!r}, task=["cls", "det"], q={Q})
        assert codec.tasks == ["cls", "det"] and codec.task == "cls" and not codec.training
        torch.manual_seed(0)
        x = torch.rand(1, 3, 64, 64)
        with torch.no_grad():
            torch.save({{"cls": codec(x)["x_hat"], "human": codec.set_task(None)(x)["x_hat"]}}, {str(out)!r})
    """)
    cache = hf_env / "fresh-cache"
    env = dict(os.environ, ICMH_HUB_INDEX=str(index), HF_HUB_CACHE=str(cache), HF_ENDPOINT=olah.url)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.read_bytes() for p in cached_blobs(cache) if p.stat().st_size > 10_000} == {cls_file.read_bytes(), det_file.read_bytes()}

    # the same codec built here from the local files gives the same pixels
    from icmh_hub import attach, load_adapters
    from icmh_hub.assemble import build_base

    reference = attach(build_base(CODEC, Q, index=index), CODEC, {"cls": load_adapters(cls_file)}).eval()
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        got = torch.load(out, weights_only=True)
        assert torch.equal(got["cls"], reference(x)["x_hat"])
        assert torch.equal(got["human"], reference.set_task(None)(x)["x_hat"])
        assert not torch.equal(got["cls"], got["human"])

    # offline with the warm cache: loads, with no server reachable at all
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    codec = load_pretrained(CODEC, ["det"], Q, index=index)
    assert codec.task == "det" and codec.adapters.sha256 == entries[1]["sha256"]

    # offline with a cold cache: one clear line that says what to do
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_env / "cold"))
    run = CliRunner().invoke(main, ["download", entries[0]["id"], "--index", str(index)])
    assert run.exit_code == 1
    assert run.output.count("\n") == 1 and "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache" in run.output


@pytest.mark.slow  # huggingface_hub retries a refused connection 5 times (about 25 s) before giving up
def test_unreachable_hub_and_cold_cache_is_a_clear_error(hf_env, monkeypatch):
    entry = {"id": "x/cls/q1", "codec": CODEC, "task": "cls", "q": Q, "status": "published", "sha256": "0" * 64,
             "source": {"kind": "hub", "repo_id": "org/gone", "path": "a.safetensors", "revision": "main"}}
    index = write_index(hf_env, [entry])
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(DownloadError, match="could not be reached and it is not in the Hugging Face cache"):
        fetch(get_entry("x/cls/q1", index=index))


def test_bytes_changed_after_publish_clear_error_cache_clean_then_good_download(servers, hf_env):
    double, _, _ = servers
    good = adapter_file(hf_env / "good.safetensors")
    pushed = push_adapter(good, "org/changed", path="cls.safetensors", endpoint=double.url)
    entry_dict = pushed | {"source": pushed["source"] | {"revision": "main"}}  # an entry that follows a branch
    index = write_index(hf_env, [entry_dict])
    entry = get_entry(pushed["id"], index=index)

    bad = bytearray(good.read_bytes())
    bad[-1] ^= 0xFF
    double.write_file("org/changed", "cls.safetensors", bytes(bad))
    with pytest.raises(IntegrityError, match="sha256 mismatch.*removed from the cache"):
        fetch(entry)
    cache = hf_env / "hf-cache"
    assert all(sha256_of(p) != sha256_of(good) and p.read_bytes() != bytes(bad) for p in cached_blobs(cache))

    double.write_file("org/changed", "cls.safetensors", good.read_bytes())  # the publisher repairs it
    assert fetch(entry).read_bytes() == good.read_bytes()

    # bytes rotting in the cache itself: caught, removed, downloaded again
    blob = fetch(entry).resolve()
    blob.write_bytes(bytes(bad))
    with pytest.raises(IntegrityError):
        fetch(entry)
    assert not blob.exists()
    assert fetch(entry).read_bytes() == good.read_bytes()


def test_index_hosted_on_the_hub(servers, hf_env, monkeypatch):
    double, _, _ = servers
    good = adapter_file(hf_env / "a.safetensors", task="det")
    pushed = push_adapter(good, "org/zoo", path="adapters/det-q1.safetensors", endpoint=double.url)
    entry = pushed | {"id": "zoo/det", "source": {"kind": "local", "path": "det-q1.safetensors"}}
    revision = double.write_file("org/zoo", "adapters/index.json", json.dumps({"entries": [entry]}).encode())
    monkeypatch.setenv("ICMH_HUB_INDEX", f"hf://org/zoo@{revision}/adapters/index.json")
    run = CliRunner().invoke(main, ["list", "--task", "det", "--json"])
    assert run.exit_code == 0, run.output
    listed = {e["id"]: e for e in json.loads(run.output)}
    assert "zoo/det" in listed and listed["zoo/det"]["origin"].startswith("hf://org/zoo@")
    assert fetch(get_entry("zoo/det")).read_bytes() == good.read_bytes()


# ----------------------------------------------------------------------------- adapters straight from a Hub repo


def test_from_hub_builds_the_codec_the_file_names_and_trusts_its_first_sha256(servers, hf_env):
    from icmh_hub import AdaptedCodec, from_hub
    from icmh_hub.errors import AdapterMismatchError
    from icmh_hub.hub.fetch import hub_trust_key
    from icmh_hub.hub.transport import trust_records

    double, _, _ = servers
    good = adapter_file(hf_env / "seg.safetensors", task="seg")
    push_adapter(good, "org/direct", path="mbt/seg-q1.safetensors", endpoint=double.url)

    codec = from_hub("org/direct", filename="mbt/seg-q1.safetensors", pretrained=False)
    assert isinstance(codec, AdaptedCodec) and codec.tasks == ["seg"] and codec.task == "seg"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad(), codec.human():
        human = codec(x)["x_hat"]
    with torch.no_grad():
        assert not torch.equal(codec(x)["x_hat"], human)  # the adapters act
    assert trust_records()[hub_trust_key("org/direct", "mbt/seg-q1.safetensors", None)]["sha256"] == sha256_of(good)
    with pytest.raises(AdapterMismatchError, match="q1, not q2"):
        from_hub("org/direct", filename="mbt/seg-q1.safetensors", q=2, pretrained=False)
    with pytest.raises(AdapterMismatchError, match="for task 'seg', not 'cls'"):
        from_hub("org/direct", filename="mbt/seg-q1.safetensors", task="cls", pretrained=False)

    other = adapter_file(hf_env / "other.safetensors", task="seg", seed=3)
    double.write_file("org/direct", "mbt/seg-q1.safetensors", other.read_bytes())  # replaced at main
    with pytest.raises(IntegrityError, match="recorded on first use.*retrust=True"):
        from_hub("org/direct", filename="mbt/seg-q1.safetensors", pretrained=False)
    assert from_hub("org/direct", filename="mbt/seg-q1.safetensors", pretrained=False, retrust=True).tasks == ["seg"]


def test_cli_adapter_from_a_hub_address_codes_and_decodes(servers, hf_env, tmp_path):
    from PIL import Image

    double, _, _ = servers
    pushed = push_adapter(adapter_file(hf_env / "cls.safetensors"), "org/cli", path="a/cls.safetensors", endpoint=double.url)
    Image.new("RGB", (48, 32), "teal").save(tmp_path / "img.png")
    address = f"hf://org/cli@{pushed['source']['revision']}/a/cls.safetensors"
    runner = CliRunner()
    coded = runner.invoke(main, ["compress", str(tmp_path / "img.png"), "-o", str(tmp_path / "img.icmh"), "--codec", CODEC,
                                 "--q", str(Q), "--adapter", address, "--no-pretrained"])
    assert coded.exit_code == 0, coded.output
    decoded = runner.invoke(main, ["decompress", str(tmp_path / "img.icmh"), "-o", str(tmp_path / "out.png"), "--adapter", address])
    assert decoded.exit_code == 0, decoded.output
    assert Image.open(tmp_path / "out.png").size == (48, 32)
    missing = runner.invoke(main, ["decompress", str(tmp_path / "img.icmh"), "-o", str(tmp_path / "x.png"),
                                   "--adapter", "hf://org/cli/none.safetensors"])
    assert missing.exit_code == 1 and missing.output.count("\n") == 1  # (olah answers a missing file as a missing repo)
    assert missing.output.startswith("error: ") and "org/cli" in missing.output
