"""The channels-last inference path (issue 28): same codec, same files, faster kernels."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from icmh_hub import attach, build_adapters, build_base
from icmh_hub.codecs.demo import DEMO_CODEC
from icmh_hub.core.adapters import ParallelAdapter
from icmh_hub.core import memory
from icmh_hub.core.inference import channels_last, transforms
from icmh_hub.core.memory import keep_freed_memory
from icmh_hub.demo.proxy import make_proxy

Q = 2
ROOT = Path(__file__).resolve().parents[1]


def adapted(seed: int = 0):
    torch.manual_seed(seed)
    adapters = build_adapters(DEMO_CODEC, Q, middle_dim=8, init="reference", task="cls")
    return attach(build_base(DEMO_CODEC, Q), DEMO_CODEC, {"cls": adapters}).eval()


@pytest.fixture(scope="module")
def images():
    return make_proxy(2, 64, seed=5).images


def entropy_parameters(base, z_strings, shape):
    """What picks the rANS tables on both sides: h_s of the decoded z (scales' indexes, means)."""
    scales, means = base.h_s(base.entropy_bottleneck.decompress(z_strings, shape)).chunk(2, 1)
    return base.gaussian_conditional.build_indexes(scales), means


@pytest.mark.parametrize("branches", [("spatial", "frequency"), ("bottleneck",), ("frequency",)])
def test_the_adapters_channels_last_forward_computes_the_usual_one(branches):
    torch.manual_seed(1)
    adapter = ParallelAdapter(16, 8, branches)
    for p in adapter.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(3, 16, 12, 10)
    with torch.no_grad():
        usual, fast = adapter(x), adapter(x.contiguous(memory_format=torch.channels_last))
    assert fast.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fast, usual, atol=1e-5, rtol=1e-5) and not torch.equal(fast, x)


def test_the_block_converts_the_transforms_only_and_gives_the_numbers_back(images):
    codec = adapted()
    before = codec(images)["x_hat"]
    with channels_last(codec):
        assert all(m.weight.is_contiguous(memory_format=torch.channels_last)
                   for t in transforms(codec.base) for m in t.modules() if isinstance(m, torch.nn.Conv2d))
        assert not codec.base.h_s[0].weight.is_contiguous(memory_format=torch.channels_last)
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()
    assert all(p.is_contiguous() for p in codec.parameters())
    assert torch.equal(codec(images)["x_hat"], before)  # training and the usual path: unchanged


def test_files_coded_on_either_path_decode_on_the_other(images):
    codec = adapted()
    with torch.no_grad():
        usual = codec.compress(images)
        usual_pixels = codec.decompress(usual["strings"], usual["shape"])["x_hat"]
    with channels_last(codec):
        fast = codec.compress(images)
        fast_pixels = codec.decompress(usual["strings"], usual["shape"])["x_hat"]
    with torch.no_grad():
        back = codec.decompress(fast["strings"], fast["shape"])["x_hat"]
    assert fast["strings"][1] == usual["strings"][1]  # z: the entropy parameters' input
    for a, b in zip(fast["strings"][0], usual["strings"][0]):
        assert abs(len(a) - len(b)) <= max(2, len(b) // 100)  # the same rate
    assert (fast_pixels - usual_pixels).abs().max() < 1e-4
    assert (back - usual_pixels).abs().max() < 1e-2  # other strings only where a latent rounded the other way


@pytest.fixture
def two_threads():
    """Two torch threads for one test, then the count the suite runs with (other files compare
    numbers bit for bit with what they computed under it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_encoder_and_decoder_agree_across_processes_and_thread_counts(images, tmp_path, two_threads):
    """The encoder (this process, 2 threads, channels-last) and a decoder in another process with
    1 thread compute the same entropy parameters bit for bit, and the same picture."""
    codec = adapted()
    with channels_last(codec):
        coded = codec.compress(images)
        pixels = codec.decompress(coded["strings"], coded["shape"])["x_hat"]
        indexes, means = entropy_parameters(codec.base, coded["strings"][1], coded["shape"])
    saved, out = tmp_path / "coded.pt", tmp_path / "decoded.pt"
    torch.save({"adapters": codec.adapter_sets["cls"].state_dict(), "strings": coded["strings"],
                "shape": tuple(coded["shape"])}, saved)
    script = textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from icmh_hub import attach, build_adapters, build_base
        from icmh_hub.core.inference import channels_last
        from tests.test_inference import entropy_parameters
        saved = torch.load({str(saved)!r}, weights_only=True)
        adapters = build_adapters({DEMO_CODEC!r}, {Q}, middle_dim=8, task="cls")
        adapters.load_state_dict(saved["adapters"])
        codec = attach(build_base({DEMO_CODEC!r}, {Q}), {DEMO_CODEC!r}, {{"cls": adapters}}).eval()
        with channels_last(codec):
            x_hat = codec.decompress(saved["strings"], saved["shape"])["x_hat"]
            indexes, means = entropy_parameters(codec.base, saved["strings"][1], saved["shape"])
        torch.save({{"x_hat": x_hat, "indexes": indexes, "means": means}}, {str(out)!r})
    """)
    env = {"OMP_NUM_THREADS": "1", "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=ROOT)
    there = torch.load(out, weights_only=True)
    assert torch.equal(there["indexes"], indexes) and torch.equal(there["means"], means)
    assert (there["x_hat"] - pixels).abs().max() < 1e-5


def faults_to_fill(megabytes: int = 64) -> int:
    """Page faults taken to allocate, fill and free a tensor of ``megabytes`` (a 128-channel
    feature map of 384x256 is 50 MB)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(megabytes << 18).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def huge_pages_always() -> bool:
    try:
        return "[always]" in open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="keep_freed_memory sets glibc's allocator")
@pytest.mark.skipif(huge_pages_always(), reason="with transparent huge pages always on, fresh maps fault once per 2 MiB")
def test_keep_freed_memory_reuses_large_blocks_until_the_outermost_block_ends():
    """In a fresh process: glibc's state is process-wide, and earlier tests (the CLI's coding
    commands run in-process) leave its heap and thresholds other than a new process has them."""
    script = textwrap.dedent("""
        import resource
        from icmh_hub.core.memory import keep_freed_memory
        from tests.test_inference import faults_to_fill

        pages = (64 << 20) // resource.getpagesize()
        assert faults_to_fill() > pages // 2  # glibc as it comes: a fresh map, faulted in page by page
        with keep_freed_memory() as applied:
            assert applied is True
            assert [faults_to_fill() for _ in range(8)][-1] < pages // 20  # once the heap has grown
            with keep_freed_memory():
                assert faults_to_fill() < pages // 20
            assert faults_to_fill() < pages // 20  # the inner block's end leaves the outer one's setting
        assert faults_to_fill() > pages // 2  # glibc's defaults again
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_keep_freed_memory_does_nothing_without_glibc(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda *args, **kwargs: ("", ""))
    monkeypatch.setattr(memory, "_open_or_close", lambda *args: pytest.fail("mallopt called without glibc"))
    with keep_freed_memory() as applied:
        assert applied is False
