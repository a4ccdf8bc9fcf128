"""``icmh-hub compress`` and ``icmh-hub decompress``: images to .icmh files and back to PNGs."""

from __future__ import annotations

import glob
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import click

from ..errors import IcmhError, InvalidArgumentError, MissingFileError
from ..formats.bitstream import SUFFIX
from .main import one_line


def expand_inputs(arguments: Iterable[str], suffixes: Sequence[str]) -> list[Path]:
    """Files named directly, files with ``suffixes`` under directories (recursively), and globs."""
    found: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not matches:
                raise MissingFileError(f"{argument}: no {'/'.join(suffixes)} files in this directory")
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(argument):
            matches = sorted(Path(p) for p in glob.glob(argument, recursive=True) if Path(p).is_file())
            if not matches:
                raise MissingFileError(f"{argument}: the pattern matches no files")
        else:
            raise MissingFileError(f"{argument}: no such file or directory")
        found.extend(matches)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise InvalidArgumentError("no input files given")
    return unique


def output_paths(inputs: list[Path], output: str, suffix: str) -> list[Path]:
    """Where each input goes: ``output`` itself for one input named like ``*suffix``, else
    ``output/<stem><suffix>`` (two inputs with the same stem are refused rather than overwritten)."""
    target = Path(output)
    if len(inputs) == 1 and target.suffix.lower() == suffix and not target.is_dir():
        return [target]
    if target.exists() and not target.is_dir():
        raise InvalidArgumentError(f"{output} is a file; give a directory for -o (or a *{suffix} name for a single input)")
    paths = [target / (p.stem + suffix) for p in inputs]
    clashes = sorted({str(p) for p in paths if paths.count(p) > 1})
    if clashes:
        raise InvalidArgumentError(f"several inputs would be written to {clashes[0]}; give inputs with different names")
    return paths


def _run_all(
    ctx: click.Context, items: list[tuple[Path, Path]], work: Callable[[Path, Path], list[str]], header: list[str]
) -> None:
    """Run ``work`` on every (input, output) pair with a progress bar, then print the table.
    A failing file (whatever the exception) is reported on one line and the others go on; any
    failure means exit 1."""
    from tqdm import tqdm

    debug = bool((ctx.find_root().obj or {}).get("debug"))
    rows, failures = [], 0
    with tqdm(items, unit="file", file=sys.stderr, disable=None, leave=False) as bar:
        for source, target in bar:
            start = time.perf_counter()
            try:
                row = work(source, target)
            except Exception as exc:  # noqa: BLE001  one line per file, whatever went wrong
                if debug:
                    raise
                failures += 1
                message = one_line(exc)
                tqdm.write(f"error: {message if str(source) in message else f'{source}: {message}'}", file=sys.stderr)
                continue
            rows.append(row + [f"{time.perf_counter() - start:.2f}"])
    _table(rows, header)
    if failures:
        raise BatchError(f"{failures} of {len(items)} files failed")


def _table(rows: list[list[str]], header: list[str]) -> None:
    if not rows:
        return
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(cell).ljust(w) if i == 0 else str(cell).rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))


class BatchError(IcmhError):
    """Some files of a batch failed (each was reported on its own line)."""


COMPRESS_HEADER = ["file", "bytes", "bpp(file)", "bpp(strings)", "time(s)"]


@click.command("compress")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Output directory (or a .icmh file name for one input).")
@click.option("--codec", default="mbt2018-mean", show_default=True, help="Base codec (see `icmh-hub codecs`).")
@click.option("--q", "quality", type=int, default=3, show_default=True, help="Quality level of the base codec.")
@click.option("--task", default=None, help="Task adapters to use (cls, det, seg, ...); omit or 'human' for the plain codec.")
@click.option("--adapter", type=click.Path(dir_okay=False), help="A local adapter file instead of the registry.")
@click.option("--no-pretrained", is_flag=True, help="Seeded random weights (no network; for tests and trials).")
@click.pass_context
def compress_command(ctx, inputs, output, codec, quality, task, adapter, no_pretrained) -> None:
    """Compress images (files, directories, globs) into .icmh files.

    PNG, JPEG, WebP and TIFF; 8 or 16 bit; grayscale is coded as RGB and decoded back to
    grayscale; alpha is dropped (with a note). bpp(file) counts the whole file, header included;
    bpp(strings) only the entropy-coded strings.
    """
    from tqdm import tqdm

    from .._io import atomic_write_bytes
    from ..assemble import build_codec
    from ..coding import Encoder
    from ..formats.images import IMAGE_SUFFIXES, read_image

    sources = expand_inputs(inputs, IMAGE_SUFFIXES)
    targets = output_paths(sources, output, SUFFIX)
    model = build_codec(codec, quality, task, adapter, pretrained=not no_pretrained)
    encoder = Encoder(model, pretrained=not no_pretrained)

    def work(source: Path, target: Path) -> list[str]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image, info = read_image(source)
        if info.alpha_dropped:
            tqdm.write(f"note: {source}: alpha channel dropped (the codec codes colour only)", file=sys.stderr)
        encoded = encoder.encode(image, info)
        atomic_write_bytes(target, encoded.data)
        return [str(target), str(len(encoded.data)), f"{encoded.bpp:.4f}", f"{encoded.strings_bpp:.4f}"]

    _run_all(ctx, list(zip(sources, targets)), work, COMPRESS_HEADER)


DECOMPRESS_HEADER = ["file", "size", "mode", "task", "time(s)"]


@click.command("decompress")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Output directory (or a .png file name for one input).")
@click.option("--adapter", type=click.Path(dir_okay=False), help="The adapter file the images were coded with (checked by sha256).")
@click.option("--force-task", default=None, help="Decode with this task's adapters, or 'human' for none, whatever the file was coded for.")
@click.pass_context
def decompress_command(ctx, inputs, output, adapter, force_task) -> None:
    """Decompress .icmh files (files, directories, globs) into PNGs at their original size.

    The codec, quality, task and adapter come from each file's header; adapters are found in the
    registry by their sha256 unless --adapter gives the file.
    """
    from ..coding import Decoder, read_bitstream
    from ..core.tasks import HUMAN
    from ..formats.images import write_png

    sources = expand_inputs(inputs, (SUFFIX,))
    targets = output_paths(sources, output, ".png")
    decoder = Decoder(adapter, force_task)

    def work(source: Path, target: Path) -> list[str]:
        decoded = decoder.decode(read_bitstream(source))
        write_png(decoded.image, target, decoded.info)
        header = decoded.header
        task = header.task or HUMAN
        if force_task and (force_task if force_task != HUMAN else None) != header.task:
            task = f"{force_task} (coded: {task})"
        return [str(target), f"{header.width}x{header.height}", f"{header.mode}{header.bits}", task]

    _run_all(ctx, list(zip(sources, targets)), work, DECOMPRESS_HEADER)


COMMANDS = [compress_command, decompress_command]
