"""The paper's released TIC-SFMA checkpoints through the hub, end to end (issue 17).

A real HTTP server on 127.0.0.1 (``tests/file_server.py``) stands in for GitHub: with
``$ICMH_HUB_URL_MIRROR`` pointing at it, the built-in index's URLs are fetched from it. It
serves files in the release format, made from the shared reference checkpoint
(``tic_sfma_layout_random.pth.tar``): ``ckpt_det_level2.tar`` as the Adapt-ICMH training scripts
save it (epoch, a ``module.``-prefixed state_dict, loss, an Adam state, a MultiStepLR state) and
``base_codec_2.pth.tar`` as TransTIC saves a base codec (the codec alone, plus aux_optimizer).
``icmh_hub.load("tic", ...)`` goes through the same code as with the real files: download with a
progress bar, trust on first use, conversion with the embedded-base check, cache, offline use.
TIC at 256x512 costs seconds on a CPU, so the codec is loaded once for the module.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import icmh_hub
from icmh_hub import load_adapters, read_metadata
from icmh_hub._io import sha256_of
from icmh_hub.assemble import build_base
from icmh_hub.errors import CheckpointError, DownloadError, IntegrityError
from icmh_hub.formats.reference import codec_state, read_checkpoint
from icmh_hub.hub.fetch import fetch
from icmh_hub.hub.index import get_entry
from icmh_hub.hub.transport import MIRROR_ENV, trust_records, url_target

from .file_server import FileServer
from .tic_reference import CHECKPOINT, TOLERANCE, TRANSTIC_TSV, VECTORS, needs_reference, reconstruct_like_reference

pytestmark = needs_reference

RELEASE = "github.com/qingshi9974/ECCV2024-AdpatICMH/releases/download/v1.0"
TRANSTIC = "github.com/NYCU-MAPL/TransTIC/releases/download/v1.0"


def _adam_and_scheduler(tensors: list[torch.Tensor], milestones: list[int]) -> tuple[dict, dict]:
    """A real Adam state (one step taken) and a real MultiStepLR state (its milestones a Counter)."""
    params = [torch.nn.Parameter(t.clone().float()) for t in tensors]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.5)
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    optimizer.step()
    scheduler.step()
    assert isinstance(scheduler.state_dict()["milestones"], collections.Counter)
    return optimizer.state_dict(), scheduler.state_dict()


def release_checkpoint(state: dict, path: Path) -> Path:
    """``state`` saved as Adapt-ICMH's scripts save it (DataParallel's ``module.`` prefixes)."""
    sfmas = [v for k, v in state.items() if "sfmas" in k]
    optimizer, scheduler = _adam_and_scheduler(sfmas, [80, 100])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 39, "state_dict": collections.OrderedDict((f"module.{k}", v) for k, v in state.items()),
                "loss": torch.tensor(0.731), "optimizer": optimizer, "lr_scheduler": scheduler}, path)
    return path


def transtic_layout(codec: dict) -> dict:
    """A base codec's state_dict in the layout TransTIC's code writes: the entropy bottleneck under
    CompressAI's older names (``_matrix0``, ``_bias0``, ``_factor0``) and an ``attn_mask`` buffer
    in every shifted Swin block (its shapes from the reference's key list)."""
    renamed = {}
    for key, value in codec.items():
        for new, old in (("matrices.", "_matrix"), ("biases.", "_bias"), ("factors.", "_factor")):
            key = key.replace(f"entropy_bottleneck.{new}", f"entropy_bottleneck.{old}")
        renamed[key] = value
    for line in TRANSTIC_TSV.read_text().splitlines():
        key, shape = line.split("\t")[:2]
        if key.endswith(".attn_mask"):
            renamed[key] = torch.zeros(ast.literal_eval(shape))
    return renamed


def transtic_base(state: dict, path: Path) -> Path:
    """The codec part of ``state`` saved as TransTIC's scripts save a base codec (their layout)."""
    codec = transtic_layout(codec_state(state))
    assert "entropy_bottleneck._matrix0" in codec and "g_a1.residual_group.blocks.1.attn_mask" in codec
    optimizer, scheduler = _adam_and_scheduler([codec["g_a0.weight"]], [200, 300])
    aux, _ = _adam_and_scheduler([codec["entropy_bottleneck.quantiles"]], [200, 300])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 399, "state_dict": codec, "loss": 1.25, "optimizer": optimizer, "aux_optimizer": aux,
                "lr_scheduler": scheduler}, path)
    return path


@contextlib.contextmanager
def release_server(www: Path, root: Path):
    """A server of ``www`` standing in for GitHub (``$ICMH_HUB_URL_MIRROR``), a cache under
    ``root``, no user index, online: (server, the MonkeyPatch that set it up)."""
    server = FileServer(www).start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(MIRROR_ENV, server.url)
            patch.setenv("ICMH_HUB_CACHE", str(root / "cache"))
            for name in ("ICMH_HUB_INDEX", "HF_HUB_OFFLINE"):
                patch.delenv(name, raising=False)
            yield server, patch
    finally:
        server.stop()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The served folder, the server, the environment, and the codec loaded once from it."""
    root = tmp_path_factory.mktemp("tic-hub")
    state = read_checkpoint(CHECKPOINT)
    www = root / "www"
    files = {
        "det": release_checkpoint(state, www / RELEASE / "ckpt_det_level2.tar"),
        "seg": release_checkpoint(state, www / RELEASE / "ckpt_seg_level2.pth.tar"),
        "base": transtic_base(state, www / TRANSTIC / "base_codec_2.pth.tar"),
    }
    with release_server(www, root) as (server, patch):
        codec = icmh_hub.load("tic", task=["det", "seg"], q=2)
        yield {"root": root, "www": www, "files": files, "server": server, "codec": codec, "patch": patch, "state": state}


def test_load_reproduces_the_reference_with_and_without_sfma(release):
    from safetensors.torch import load_file

    codec, vectors = release["codec"], load_file(str(VECTORS))
    assert codec.tasks == ["det", "seg"] and codec.task == "det" and not codec.training
    error, ties, flipped = reconstruct_like_reference(codec.base, vectors["x"], vectors["x_hat_with_sfma"])
    assert error < TOLERANCE, f"with SFMA: max error {error} ({ties} knife-edge latents, {flipped} flipped)"
    with torch.no_grad():  # as tests/test_tic.py: no knife-edge latent in y without the SFMAs
        x_hat = codec.set_task(None)(vectors["x"])["x_hat"]
    codec.set_task("det")
    assert (x_hat - vectors["x_hat_without_sfma"]).abs().max().item() < TOLERANCE


def _entry_files(name: str) -> tuple[str, Path]:
    """The real URL of a release file, and where the served copy is (under RELEASE or TRANSTIC)."""
    folder = TRANSTIC if name.startswith("base_codec") else RELEASE
    return f"https://{folder}/{name}", Path(folder) / name


def _kept(folder: Path) -> list[str]:
    """What a cache folder holds besides lock files."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def _icmh(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "icmh_hub.cli", *args], capture_output=True, text=True, timeout=300,
                          env=env or dict(os.environ))


def test_first_use_is_recorded_and_the_converted_file_says_where_it_came_from(release):
    files = release["files"]
    records = trust_records()
    for name, served in (("ckpt_det_level2.tar", files["det"]), ("base_codec_2.pth.tar", files["base"])):
        url, _ = _entry_files(name)
        assert records[url]["sha256"] == sha256_of(served)  # recorded under the real URL, fetched from the mirror
    converted = fetch(get_entry("tic/det/q2"))
    info = read_metadata(converted)["info"]
    assert info["source_url"] == _entry_files("ckpt_det_level2.tar")[0] and info["source_sha256"] == sha256_of(files["det"])
    assert info["base_sha256"] == sha256_of(files["base"]) and info["base_check"] == "checked" and info["task"] == "det"
    assert load_adapters(converted).num_parameters() == 287_232
    assert release["codec"].adapter_sets["det"].sha256 == sha256_of(converted)

    shown = _icmh("info", "tic/det/q2")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"recorded {sha256_of(files['det'])}" in out and f"recorded {sha256_of(files['base'])}" in out
    assert f"converted file {sha256_of(converted)}" in out and "(base codec checked)" in out
    assert "fetched from " + release["server"].url + "/" + RELEASE + "/ckpt_det_level2.tar" in out
    assert "bd_rate = -55.14 on COCO val2017 (5000 images): the paper's figure" in out and "lambda      1\n" in out
    listed = _icmh("list", "--codec", "tic", "--method", "sfma", "--json")
    assert sorted(e["id"] for e in json.loads(listed.stdout)) == sorted(f"tic/{t}/q{q}" for t in ("cls", "det", "seg") for q in range(1, 5))


def test_second_load_works_offline_with_the_server_stopped(release):
    release["server"].stop()
    patch = release["patch"]
    patch.setenv("HF_HUB_OFFLINE", "1")
    try:
        codec = icmh_hub.load("tic", task="det", q=2)
        assert codec.adapters.sha256 == release["codec"].adapters.sha256
        cold = _icmh("download", "tic/det/q3")  # a cold cache offline: one line that says what to do
        assert cold.returncode == 1 and cold.stderr.count("\n") == 1
        assert "HF_HUB_OFFLINE is set and it is not in the cache" in cold.stderr
    finally:
        patch.delenv("HF_HUB_OFFLINE")
        release["server"] = FileServer(release["www"]).start()
        patch.setenv(MIRROR_ENV, release["server"].url)


def test_a_changed_server_file_is_refused_and_the_cache_stays_clean(release):
    url, served = _entry_files("ckpt_det_level2.tar")
    served = release["www"] / served
    target, before = url_target(url), trust_records()[url]
    converted = fetch(get_entry("tic/det/q2"))
    target.unlink()  # the cached download is gone (cleaned up, another machine sharing the records, ...)
    good = served.read_bytes()
    served.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    try:
        with pytest.raises(IntegrityError, match="not the file first used here.*record was kept.*--retrust") as caught:
            icmh_hub.load("tic", task="det", q=2)
        assert "\n" not in str(caught.value)
        assert _kept(target.parent) == [converted.name]  # no download, no partial: only the earlier conversion
        assert trust_records()[url] == before
    finally:
        served.write_bytes(good)
    assert fetch(get_entry("tic/det/q2")) == converted and target.is_file()  # the publisher's file again: fine


class _NoWaiting:
    """huggingface_hub's ``time`` module without its one-second pause before each retry (speed only)."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        pass


def test_a_dropped_connection_leaves_no_usable_partial(release, monkeypatch):
    from huggingface_hub import file_download

    monkeypatch.setattr(file_download, "time", _NoWaiting(), raising=False)
    url, served = _entry_files("ckpt_det_level2.tar")
    server, target, before = release["server"], url_target(url), trust_records()[url]
    converted = fetch(get_entry("tic/det/q2"))
    target.unlink()
    server.drop[str(served)] = -1  # half the file, then the connection drops, every time
    with pytest.raises(DownloadError, match="dropped the connection") as caught:
        fetch(get_entry("tic/det/q2"))
    assert "\n" not in str(caught.value)
    assert _kept(target.parent) == [converted.name]
    assert trust_records()[url] == before

    server.drop[str(served)], server.requests[:] = 1, []  # dropped once: resumed (here: started again), complete
    fetch(get_entry("tic/det/q2"))
    assert sha256_of(target) == before["sha256"]
    ranges = [int(r.removeprefix("bytes=").rstrip("-")) for _, r in server.requests if r]
    assert len(ranges) == 1 and 0 < ranges[0] < target.stat().st_size  # asked to resume; this server cannot


def test_an_embedded_base_that_differs_is_refused_unless_the_index_chooses_it(release, tmp_path):
    state = release["state"]
    changed = dict(state)
    changed["g_a0.weight"] = state["g_a0.weight"] + 1e-3
    www = release["www"]
    transtic_base(changed, www / TRANSTIC / "base_codec_3.pth.tar")
    (www / RELEASE / "ckpt_det_level3.tar").write_bytes(release["files"]["det"].read_bytes())
    with pytest.raises(CheckpointError, match=r"base codec inside ckpt_det_level3.tar differs from tic q3's base weights "
                                              r"base_codec_3.pth.tar in 1 of 507 learned parameters \(e.g. \['g_a0.weight'\]\)"):
        fetch(get_entry("tic/det/q3"))
    assert not any(p.name.endswith(".safetensors") for p in url_target(_entry_files("ckpt_det_level3.tar")[0]).parent.iterdir())

    url = _entry_files("ckpt_det_level3.tar")[0]
    mine = tmp_path / "embedded.json"
    mine.write_text(json.dumps({"base_codecs": [{"codec": "tic", "q": 3, "source": {"kind": "url", "url": url}, "sha256": None}]}))
    entry = get_entry("tic/det/q3", index=mine)
    assert entry.base.source["url"] == url
    assert read_metadata(fetch(entry))["info"]["base_check"] == "embedded"
    base = build_base("tic", 3, index=mine)  # the checkpoint's own codec, its SFMAs left out
    assert torch.equal(base.state_dict()["g_a0.weight"], state["g_a0.weight"])
    shown = _icmh("info", "tic/det/q3", "--index", str(mine))
    assert f"base codec  {url}" in shown.stdout and "(base codec embedded)" in shown.stdout
