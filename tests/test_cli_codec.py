"""`icmh-hub compress` / `decompress` end to end, with seeded random weights (no network)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from icmh_hub.formats.bitstream import read_header
from icmh_hub.cli import main

FAST = ["--codec", "mbt2018-mean", "--q", "1", "--no-pretrained"]


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (33, 65, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (1, 1), dtype=np.uint8)).save(folder / "sub" / "b.png")
    Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)).save(folder / "c.webp", lossless=True)
    return folder


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_compress_and_decompress_a_directory(tmp_path, images):
    result = _run("compress", images, "-o", tmp_path / "coded", *FAST, "--task", "cls")
    assert result.exit_code == 0, result.output
    coded = sorted((tmp_path / "coded").glob("*.icmh"))
    assert [p.name for p in coded] == ["a.icmh", "b.icmh", "c.icmh"]
    assert "bpp(file)" in result.stdout and "bpp(strings)" in result.stdout
    assert "alpha channel is dropped" in result.stderr  # c.webp has alpha
    assert {read_header(p.read_bytes()).task for p in coded} == {"cls"}
    result = _run("decompress", tmp_path / "coded", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    sizes = {p.stem: Image.open(p).size for p in (tmp_path / "out").glob("*.png")}
    assert sizes == {"a": (65, 33), "b": (1, 1), "c": (30, 20)}
    assert Image.open(tmp_path / "out" / "b.png").mode == "L"  # grayscale in, grayscale out


def test_globs_single_file_output_and_human_refusal(tmp_path, images):
    target = tmp_path / "one.icmh"
    result = _run("compress", str(images / "*.png"), "-o", target, *FAST)
    assert result.exit_code == 0, result.output
    assert read_header(target.read_bytes()).task is None
    adapter = tmp_path / "cls.safetensors"
    from icmh_hub import load, save_adapters

    save_adapters(load("mbt2018-mean", "cls", 1, pretrained=False).adapter_sets["cls"], adapter)
    result = _run("decompress", target, "-o", tmp_path / "x.png", "--adapter", adapter)
    assert result.exit_code == 1 and "human vision" in result.stderr
    assert "Traceback" not in result.output
    result = _run("decompress", target, "-o", tmp_path / "x.png", "--adapter", adapter, "--force-task", "cls")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "x.png").size == (65, 33)


def test_user_errors_exit_1_with_one_line(tmp_path, images):
    junk = tmp_path / "junk.icmh"
    junk.write_bytes(b"ICMH\x01garbage")
    empty = tmp_path / "empty.icmh"
    empty.write_bytes(b"")
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    cases = [
        (["decompress", junk, "-o", tmp_path / "o"], "checksum"),
        (["decompress", empty, "-o", tmp_path / "o"], "empty"),
        (["decompress", tmp_path / "missing.icmh", "-o", tmp_path / "o"], "no such file"),
        (["compress", not_image, "-o", tmp_path / "o", *FAST], "not a readable image"),
        (["compress", images / "a.png", "-o", tmp_path / "o", "--codec", "mbt2018-maen", "--q", "1", "--no-pretrained"], "did you mean"),
        (["compress", images / "a.png", "-o", tmp_path / "o", "--codec", "mbt2018-mean", "--q", "99", "--no-pretrained"], "quality"),
        (["compress", str(tmp_path / "*.nothing"), "-o", tmp_path / "o", *FAST], "matches no files"),
    ]
    for args, message in cases:
        result = _run(*args)
        assert result.exit_code == 1, (args, result.output)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert errors and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.output


def test_debug_shows_the_exception(tmp_path):
    empty = tmp_path / "empty.icmh"
    empty.write_bytes(b"")
    result = CliRunner().invoke(main, ["--debug", "decompress", str(empty), "-o", str(tmp_path)])
    assert result.exit_code != 0 and type(result.exception).__name__ == "BitstreamError"


def test_other_files_go_on_when_one_fails(tmp_path, images):
    bad = images / "zz.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = _run("compress", images, "-o", tmp_path / "coded", *FAST)
    assert result.exit_code == 1
    assert "1 of 4 files failed" in result.stderr
    assert len(list((tmp_path / "coded").glob("*.icmh"))) == 3


def test_compress_in_another_process_decodes_here(tmp_path, images):
    """The seeded random weights agree between the encoding process and this one."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    process = subprocess.run(
        [sys.executable, "-c", "from icmh_hub.cli import main; main()", "compress", str(images / "a.png"), "-o", str(tmp_path / "a.icmh"), *FAST, "--task", "cls"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert process.returncode == 0, process.stderr
    result = _run("decompress", tmp_path / "a.icmh", "-o", tmp_path / "a.png")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "a.png").size == (65, 33)
