"""TransTIC's released prompts through the registry, end to end (issue 25).

As tests/test_tic_hub.py does for SFMA: a real HTTP server on 127.0.0.1 stands in for GitHub and
serves files in TransTIC's release layout, made from the shared reference checkpoint
(``transtic_layout_random.pth.tar``): ``cls_2.pth.tar`` as TransTIC's task scripts save it (the
whole prompted codec, ``module.`` prefixes, optimizer and scheduler states) and
``base_codec_2.pth.tar`` as its base-codec script saves one (older CompressAI names for the
entropy bottleneck, ``attn_mask`` buffers). ``icmh_hub.load("tic", task="cls", q=2,
method="transtic")`` downloads both, checks the embedded base, converts the prompts, and must
give the reference's machine reconstruction and bits; then offline, from the cache.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import icmh_hub
from icmh_hub import attach, build_base, detach, load_adapters, read_metadata
from icmh_hub._io import sha256_of
from icmh_hub.coding import Decoder, Encoder
from icmh_hub.core.rate import estimated_bits
from icmh_hub.formats.reference import read_checkpoint, tic_from_state_dict
from icmh_hub.hub.fetch import fetch
from icmh_hub.hub.index import get_entry
from icmh_hub.hub.transport import MIRROR_ENV, trust_records
from icmh_hub.methods.transtic import shift_masked

from .file_server import FileServer
from .test_tic_hub import release_server, transtic_base
from .tic_reference import TOLERANCE, TRANSTIC_CHECKPOINT, TRANSTIC_VECTORS, needs_transtic, reconstruct_like_reference

pytestmark = needs_transtic

TRANSTIC = "github.com/NYCU-MAPL/TransTIC/releases/download/v1.0"


def _bits(out: dict) -> float:
    return float(sum(estimated_bits(out["likelihoods"])))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("transtic-hub")
    state = read_checkpoint(TRANSTIC_CHECKPOINT)
    www = root / "www"
    (www / TRANSTIC).mkdir(parents=True)
    files = {"cls": Path(shutil.copy(TRANSTIC_CHECKPOINT, www / TRANSTIC / "cls_2.pth.tar")),
             "base": transtic_base(state, www / TRANSTIC / "base_codec_2.pth.tar")}  # TransTIC's layout
    with release_server(www, root) as (server, patch):
        codec = icmh_hub.load("tic", task="cls", q=2, method="transtic")
        yield {"root": root, "www": www, "files": files, "server": server, "codec": codec, "patch": patch, "state": state,
               "vectors": load_file(str(TRANSTIC_VECTORS))}


def test_load_reproduces_the_reference_machine_reconstruction_and_bits(release):
    codec, vectors = release["codec"], release["vectors"]
    assert codec.task == "cls" and codec.adapters.method == "transtic" and codec.adapters.num_parameters() == 1_619_968
    error, ties, flipped = reconstruct_like_reference(codec, vectors["x"], vectors["x_hat_machine"])
    assert error < TOLERANCE, f"machine: max error {error} ({ties} knife-edge latents, {flipped} flipped)"
    with torch.no_grad():
        bits = _bits(codec(vectors["x"]))
    assert bits == pytest.approx(float(vectors["bits_machine"]), rel=1e-6)


def test_the_base_file_in_transtics_layout_loads_and_gives_the_reference_human_picture(release):
    """The human picture is TIC's as Adapt-ICMH computes it (shifted windows unmasked, as the
    SFMA entries were trained); TransTIC's own base computation (masked) is the reference's."""
    codec, vectors = release["codec"], release["vectors"]
    ours = tic_from_state_dict({k: v for k, v in release["state"].items() if "prompt" not in k}).eval()
    with torch.no_grad(), codec.human():
        human = codec(vectors["x"])
        assert torch.equal(human["x_hat"], ours(vectors["x"])["x_hat"])  # the same weights, legacy names and all
        with shift_masked(codec.base):
            masked = codec(vectors["x"])
    assert (masked["x_hat"] - vectors["x_hat_human"]).abs().max().item() < TOLERANCE
    assert _bits(masked) == pytest.approx(float(vectors["bits_human"]), rel=1e-6)


def test_real_bitstreams_round_trip_and_name_the_method(release, tmp_path):
    codec, vectors = release["codec"], release["vectors"]
    adapter_file = fetch(get_entry("tic/cls/q2/transtic"))
    encoded = Encoder(codec).encode(vectors["x"])
    assert encoded.header.variant == "transtic" and encoded.header.task == "cls"
    decoded = Decoder().decode(encoded.data).image  # the header's sha256 finds the entry, trusted on first use
    assert torch.equal(Decoder(adapter=adapter_file).decode(encoded.data).image, decoded)
    with torch.no_grad():
        compressed = codec.compress(vectors["x"])
        direct = codec.decompress(compressed["strings"], compressed["shape"])["x_hat"]
    torch.testing.assert_close(decoded, direct.clamp(0, 1), rtol=0, atol=0)
    expected = vectors["x_hat_machine"].clamp(0, 1)
    assert (decoded - expected).abs().max().item() < TOLERANCE  # the decoded picture is the forward's
    with codec.human():
        assert codec.compress(vectors["x"])["strings"] != compressed["strings"]  # the prompts changed the latents


def test_the_converter_cli_gives_the_same_file_as_the_registry(release, tmp_path):
    files = release["files"]
    out = tmp_path / "cls2.safetensors"
    run = subprocess.run([sys.executable, "-m", "icmh_hub.cli", "convert", str(files["cls"]), "--method", "transtic",
                          "--q", "2", "--task", "cls", "--base", str(files["base"]), "-o", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "1,619,968 adapter parameters" in run.stdout
    converted, registry = load_adapters(out), release["codec"].adapters
    assert converted.method == "transtic" and read_metadata(out)["info"]["converter"] == "transtic-reference"
    for (name, a), b in zip(converted.state_dict().items(), registry.state_dict().values()):
        assert torch.equal(a, b), name


def test_second_load_works_offline_with_the_server_stopped(release):
    release["server"].stop()
    patch = release["patch"]
    patch.setenv("HF_HUB_OFFLINE", "1")
    try:
        codec = icmh_hub.load("tic", task="cls", q=2, method="transtic")
        assert codec.adapters.sha256 == release["codec"].adapters.sha256
        url = f"https://{TRANSTIC}/cls_2.pth.tar"
        assert trust_records()[url]["sha256"] == sha256_of(release["files"]["cls"])
    finally:
        patch.delenv("HF_HUB_OFFLINE")
        release["server"] = FileServer(release["www"]).start()
        patch.setenv(MIRROR_ENV, release["server"].url)


def test_detach_after_transtic_gives_back_the_tic_that_never_had_prompts():
    """Random weights, a small image: state_dict, compress() bytes and decompress() pixels equal."""
    base = build_base("tic", 2, pretrained=False)
    untouched = build_base("tic", 2, pretrained=False)
    codec = attach(base, "tic", {"cls": icmh_hub.assemble.random_adapters("tic", 2, "cls", "transtic")})
    image = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        adapted = codec.compress(image)["strings"]
    plain = detach(codec)
    assert all("forward" not in m.__dict__ for m in plain.modules())
    assert plain.state_dict().keys() == untouched.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), untouched.state_dict().values()))
    with torch.no_grad():
        ours, theirs = plain.compress(image), untouched.compress(image)
        assert ours["strings"] == theirs["strings"] != adapted
        torch.testing.assert_close(plain.decompress(ours["strings"], ours["shape"])["x_hat"],
                                   untouched.decompress(theirs["strings"], theirs["shape"])["x_hat"], rtol=0, atol=0)
