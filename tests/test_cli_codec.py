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


PEAK_RUNNER = (
    "import re, sys\nfrom icmh_hub.cli import main\ntry:\n    main()\nfinally:\n"
    "    print('peak-kb', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1), file=sys.stderr)"
)  # VmHWM: this program's own peak (ru_maxrss keeps the forking test process's resident set across exec)


def test_another_process_codes_what_decodes_here_and_refuses_a_36_megapixel_photo(tmp_path, images):
    """The seeded random weights agree between the encoding process and this one. In the same
    batch a 6000x6000 photo (19.4 GB to compress whole) is refused from its header with --no-tile,
    with the limit that keeps coding within 8 GB: the process never held its pixels, and the
    batch went on. (Without --no-tile it is coded in tiles: benchmarks.tiling.)"""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes((images / "a.png").read_bytes())
    Image.new("RGB", (6000, 6000), (90, 120, 150)).save(photos / "photo.png")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    process = subprocess.run(
        [sys.executable, "-c", PEAK_RUNNER, "compress", str(photos), "-o", str(tmp_path / "coded"), *FAST, "--task", "cls", "--no-tile"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert process.returncode == 1, process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and errors[1] == "error: 1 of 2 files failed", errors
    assert "6000x6000 is 36.0 MP, more than the limit of" in errors[0] and "8 GB of memory" in errors[0]
    assert "--max-pixels 36000000" in errors[0]
    peak_mb = int(process.stderr.rsplit("peak-kb", 1)[1].split()[0]) / 1e3
    assert peak_mb < 1500, peak_mb  # torch and the codec; the photo's pixels (432 MB as floats) never came in
    result = _run("decompress", tmp_path / "coded" / "a.icmh", "-o", tmp_path / "a.png")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "a.png").size == (65, 33)


# -- outputs: never replaced without --force, never an input, write failures one line each --------


def test_existing_outputs_are_kept_without_force(tmp_path, images):
    coded = tmp_path / "coded"
    assert _run("compress", images, "-o", coded, *FAST).exit_code == 0
    before = {p.name: p.read_bytes() for p in coded.iterdir()}
    (images / "a.png").write_bytes((images / "sub" / "b.png").read_bytes())  # a.png now codes differently
    result = _run("compress", images, "-o", coded, *FAST)
    assert result.exit_code == 1 and result.stderr.count("exists; pass --force") == 3
    assert {p.name: p.read_bytes() for p in coded.iterdir()} == before
    assert _run("compress", images, "-o", coded, *FAST, "--force").exit_code == 0
    assert (coded / "a.icmh").read_bytes() != before["a.icmh"]

    photos = tmp_path / "photos"  # `decompress photos/ -o photos/` once replaced cat.png with its decode
    photos.mkdir()
    original = (images / "c.webp").read_bytes()
    (photos / "c.png").write_bytes(original)
    (photos / "c.icmh").write_bytes((coded / "c.icmh").read_bytes())
    result = _run("decompress", photos, "-o", photos)
    assert result.exit_code == 1 and "c.png exists; pass --force" in result.stderr
    assert (photos / "c.png").read_bytes() == original
    assert [p.name for p in photos.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_an_output_that_is_an_input_is_refused_even_with_force(tmp_path, images):
    coded = tmp_path / "a.icmh"
    assert _run("compress", images / "a.png", "-o", coded, *FAST).exit_code == 0
    data = coded.read_bytes()
    result = _run("compress", coded, "-o", coded, *FAST, "--force")
    assert result.exit_code == 1 and "is also an input" in result.stderr
    link = tmp_path / "link.icmh"
    os.link(images / "a.png", link)  # another name of the input
    result = _run("compress", images / "a.png", "-o", link, *FAST, "--force")
    assert result.exit_code == 1 and "link.icmh is also an input" in result.stderr
    checkpoint = tmp_path / "ckpt.pth.tar"
    checkpoint.write_bytes(b"not read")
    result = _run("convert", checkpoint, "--q", "1", "--task", "cls", "-o", checkpoint, "--force")
    assert result.exit_code == 1 and "is also an input" in result.stderr
    result = _run("convert", checkpoint, "--q", "1", "--task", "cls", "-o", coded)
    assert result.exit_code == 1 and "exists; pass --force" in result.stderr
    assert coded.read_bytes() == data and checkpoint.read_bytes() == b"not read"


def test_write_failures_and_memory_errors_are_one_line_each(tmp_path, images, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("a file, not a folder")
    result = _run("compress", images / "a.png", "-o", afile / "x.icmh", *FAST)
    assert result.exit_code == 1 and f"{afile} is a file, not a folder" in result.stderr

    import icmh_hub._io
    import icmh_hub.formats.images

    real_fresh_file, real_read = icmh_hub._io._fresh_file, icmh_hub.formats.images.read_image

    def read_only(target):  # what a read-only folder does (root ignores chmod)
        if target.name == "a.icmh":
            raise PermissionError(13, "Permission denied")
        return real_fresh_file(target)

    def no_memory(path, *args, **kwargs):
        if Path(path).name == "b.png":
            raise MemoryError()
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(icmh_hub._io, "_fresh_file", read_only)
    monkeypatch.setattr(icmh_hub.formats.images, "read_image", no_memory)
    result = _run("compress", images, "-o", tmp_path / "coded", *FAST)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 3, result.stderr
    assert "a.icmh: cannot write it (Permission denied)" in errors[0]
    assert "b.png: out of memory (MemoryError)" in errors[1]
    assert errors[2] == "error: 2 of 3 files failed"
    assert [p.name for p in (tmp_path / "coded").iterdir()] == ["c.icmh"]  # the batch went on
    assert "Traceback" not in result.output


def test_racing_writers_publish_each_name_once(tmp_path):
    """Two compress runs into one folder: unique temporary names, and a name is taken by exactly
    one writer (hard link, never a replace); the other gets OutputExistsError."""
    import threading

    from icmh_hub import OutputExistsError
    from icmh_hub.cli.codec import publish

    outcomes: list[str] = []

    def writer(name: str, content: bytes) -> None:
        try:
            publish(tmp_path / name, lambda temporary: temporary.write_bytes(content * 10_000), force=False)
            outcomes.append(f"{name} won")
        except OutputExistsError:
            outcomes.append(f"{name} exists")

    threads = [threading.Thread(target=writer, args=(name, bytes([i]))) for name in ("x.icmh", "y.icmh") for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes).count("x.icmh won") == 1 and sorted(outcomes).count("y.icmh won") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.icmh", "y.icmh"]
    assert len(set((tmp_path / "x.icmh").read_bytes())) == 1  # one writer's bytes, not a mix


def test_unexpected_errors_are_one_line_and_debug_shows_them(tmp_path, images, monkeypatch):
    import icmh_hub.assemble

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(icmh_hub.assemble, "build_codec", broken)
    result = _run("compress", images, "-o", tmp_path / "coded", *FAST)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: unexpected ZeroDivisionError: a bug (run `icmh-hub --debug ...` for the traceback)"
    result = CliRunner().invoke(main, ["--debug", "compress", str(images), "-o", str(tmp_path / "coded"), *FAST])
    assert isinstance(result.exception, ZeroDivisionError)


# -- images: frames, Pillow's bomb warning, the pixel limit ------------------------------------------


def test_animations_pillow_warnings_and_the_pixel_limit(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    frames = [Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)) for _ in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    result = _run("compress", tmp_path / "anim.gif", "-o", tmp_path / "anim.icmh", *FAST)
    assert result.exit_code == 0 and "anim.gif: 3 frames; only the first is coded" in result.stderr

    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow warns above this, refuses above twice it
    result = _run("compress", tmp_path / "small.png", "-o", tmp_path / "small.icmh", *FAST)
    assert result.exit_code == 0 and "note:" in result.stderr and "decompression bomb" in result.stderr
    monkeypatch.undo()

    result = _run("compress", tmp_path / "small.png", "-o", tmp_path / "small2.icmh", *FAST, "--max-pixels", "143")
    assert result.exit_code == 1
    assert "12x12 is 144 pixels, more than the limit of 143 pixels; to go on anyway, raise it with --max-pixels 144" in result.stderr
