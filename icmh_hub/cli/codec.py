"""``icmh-hub compress``, ``decompress`` and ``strip``: images to .icmh files, back to PNGs, and
layered files cut down to their base layer.

Each file of a batch is coded on its own: a failure (whatever it is) is one ``error:`` line and
the others go on; any failure makes the exit status 1. An output that exists is not replaced
without ``--force``, and an output that is also an input is refused before anything runs.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from ..errors import IcmhError, InvalidArgumentError, MissingFileError, OutputError, OutputExistsError
from ..formats.bitstream import SUFFIX
from .options import method_option
from .main import one_line
from .options import adapter_option, threads_option

NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems


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
    ``output/<stem><suffix>``; inputs whose stems collide (``a.png``, ``a.jpg``) keep their whole
    name instead (``a.png.icmh``, ``a.jpg.icmh``), so nothing is overwritten and a name stays
    the same whatever else is in the batch. Same names in different folders are refused."""
    target = Path(output)
    if len(inputs) == 1 and target.suffix.lower() == suffix and not target.is_dir():
        return [target]
    if target.exists() and not target.is_dir():
        raise InvalidArgumentError(f"{output} is a file; give a directory for -o (or a *{suffix} name for a single input)")
    stems = [p.stem for p in inputs]
    paths = [target / ((p.stem if stems.count(p.stem) == 1 else p.name) + suffix) for p in inputs]
    clashes = [p for p in paths if paths.count(p) > 1]
    if clashes:
        sources = [str(i) for i, p in zip(inputs, paths) if p == clashes[0]]
        raise InvalidArgumentError(
            f"{', '.join(sources)} would all be written to {clashes[0]}; give files with different names (or code them separately)"
        )
    return paths


def refuse_inputs_as_outputs(inputs: Iterable[Path], outputs: Iterable[Path]) -> None:
    """An output that is one of the inputs (the same path, or a link to the same file) is refused,
    ``--force`` or not: the input would be gone before it is read."""
    sources = {Path(p).resolve() for p in inputs}
    files = {_file_identity(p) for p in sources} - {None}
    for output in map(Path, outputs):
        if output.resolve() in sources or _file_identity(output) in files:
            raise OutputExistsError(f"{output} is also an input; write the outputs somewhere else (-o)")


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file: the same for every name (link) it has."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def publish(target: Path, write: Callable[[Path], None], force: bool) -> None:
    """``write`` a temporary file beside ``target`` and give it that name: an existing ``target``
    only with ``force``; a folder that cannot be written is one clear error."""
    from .._io import atomic_path

    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"{target}: cannot write it, {parent} is a file, not a folder")
    try:
        with atomic_path(target, replace=force) as temporary:
            write(temporary)
    except IcmhError:
        raise
    except OSError as exc:
        raise OutputError(f"{target}: cannot write it ({exc.strerror or exc}); check that its folder is writable") from None


def check_name_length(target: Path) -> None:
    """A file name longer than file systems allow is one clear error (not ENAMETOOLONG from deep inside)."""
    size = len(os.fsencode(target.name))
    if size > NAME_MAX:
        raise OutputError(
            f"{target.name[:40]}...: the output name is {size} bytes, more than the {NAME_MAX} a file name may have; "
            "rename the input, or code it alone with -o NAME"
        )


def noted(read: Callable[[], Any], source: Path) -> Any:
    """``read()``, printing each warning it raises (alpha dropped, frames left out, Pillow's
    decompression-bomb warning) as a ``note:`` line."""
    from tqdm import tqdm

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = read()
    for warning in caught:
        message = str(warning.message)
        tqdm.write(f"note: {message if str(source) in message else f'{source}: {message}'}", file=sys.stderr)
    return result


def _run_all(
    ctx: click.Context, items: list[tuple[Path, Path]], work: Callable[[Path, Path], list[str]], header: list[str],
    force: bool,
) -> None:
    """Run ``work`` on every (input, output) pair with a progress bar, then print the table.
    A failing file (whatever the exception) is reported on one line and the others go on; any
    failure means exit 1. An output that exists already fails its file before any work (unless
    ``force``). Freed memory stays mapped meanwhile (``keep_freed_memory``): the codec's feature
    maps are reused from file to file instead of faulted in afresh."""
    from tqdm import tqdm

    from ..core.memory import keep_freed_memory

    debug = bool((ctx.find_root().obj or {}).get("debug"))
    rows, failures = [], 0
    with keep_freed_memory(), tqdm(items, unit="file", file=sys.stderr, disable=None, leave=False) as bar:
        for source, target in bar:
            start = time.perf_counter()
            try:
                check_name_length(target)
                if target.exists() and not force:
                    raise OutputExistsError(f"{target} exists; pass --force to replace it")
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


COMPRESS_HEADER = ["file", "bytes", "layers(bytes)", "bpp(file)", "bpp(strings)", "time(s)"]
LAYER_NAMES = {"all": "all", "base": "base", "enhancement": "enh"}


def layer_summary(sizes: dict[str, int]) -> str:
    """"base 812 + enh 1500" (a layered file) or "all 2300": each layer's record, header aside."""
    return " + ".join(f"{LAYER_NAMES[part]} {size}" for part, size in sizes.items() if part != "header")


@click.command("compress")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Output directory (or a .icmh file name for one input).")
@click.option("--codec", default="mbt2018-mean", show_default=True, help="Base codec (see `icmh-hub codecs`).")
@click.option("--q", "quality", type=int, default=3, show_default=True, help="Quality level of the base codec.")
@click.option("--task", default=None, help="Task adapters to use (cls, det, seg, ...); omit or 'human' for the plain codec.")
@adapter_option("An adapter file instead of the registry.")
@method_option(help="Adapter method from the registry: sfma (default), transtic, or scalable-sfma / scalable-mask for a two-layer file.")
@click.option("--no-pretrained", is_flag=True, help="Seeded random weights (no network; for tests and trials).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="The most pixels coded at once; larger images are coded in tiles (default: what the codec codes within 8 GB).")
@click.option("--tile", type=click.IntRange(min=1), default=None,
              help="Code images with a side longer than this in tiles of this side (a multiple of the codec's pad multiple, 64).")
@click.option("--no-tile", is_flag=True, help="Never tile: refuse images above --max-pixels.")
@click.option("--task-per-file", "task_map", type=click.Path(dir_okay=False), default=None,
              help="A JSON object {image file or name: task or 'human'}: those files are coded for that task, the others for --task.")
@click.option("--force", is_flag=True, help="Replace output files that exist.")
@threads_option
@click.pass_context
def compress_command(ctx, inputs, output, codec, quality, task, adapter, method, no_pretrained, max_pixels, tile, no_tile,
                     task_map, force) -> None:
    """Compress images (files, directories, globs) into .icmh files.

    PNG, JPEG, WebP and TIFF; 8 or 16 bit; grayscale is coded as RGB and decoded back to
    grayscale; alpha is dropped and an animation is coded as its first frame (each with a note).
    Images larger than --max-pixels are coded as independent tiles in one file (decoded tile by
    tile: memory bounded by a tile), unless --no-tile. bpp(file) counts the whole
    file, header included; bpp(strings) only the entropy-coded strings. With a scalable method
    the file has a base layer (the machine task's) and an enhancement layer (the rest, for
    people); layers(bytes) gives each one's size.

    With -o DIR each image is written as DIR/NAME.icmh, NAME its file name without the suffix;
    images whose names differ only in the suffix (a.png, a.jpg) keep it: a.png.icmh, a.jpg.icmh.
    """
    from ..assemble import build_codec
    from ..coding import Encoder
    from ..formats.images import IMAGE_SUFFIXES, read_image

    sources = expand_inputs(inputs, IMAGE_SUFFIXES)
    targets = output_paths(sources, output, SUFFIX)
    refuse_inputs_as_outputs(sources, targets)
    if tile is not None and no_tile:
        raise InvalidArgumentError("--tile and --no-tile contradict each other; give one")
    tasks = tasks_per_file(task_map, sources, task) if task_map else dict.fromkeys(sources, task)
    encoders = {
        name: Encoder(build_codec(codec, quality, name, adapter if name == task else None, pretrained=not no_pretrained,
                                  method=method), pretrained=not no_pretrained, max_pixels=max_pixels,
                      tile=False if no_tile else tile)
        for name in dict.fromkeys(tasks.values())
    }

    def work(source: Path, target: Path) -> list[str]:
        encoder = encoders[tasks[source]]
        image, info = noted(lambda: read_image(source, encoder.image_limit, encoder.image_reason), source)
        encoded = encoder.encode(image, info)
        publish(target, lambda temporary: temporary.write_bytes(encoded.data), force)
        return [str(target), str(len(encoded.data)), layer_summary(encoded.layer_bytes), f"{encoded.bpp:.4f}",
                f"{encoded.strings_bpp:.4f}"]

    _run_all(ctx, list(zip(sources, targets)), work, COMPRESS_HEADER, force)


def tasks_per_file(map_file: str, sources: list[Path], default: str | None) -> dict[Path, str | None]:
    """Each input's task from a JSON object {file: task}: a key names a file by its path (from the
    current folder) or by its name; inputs it does not name get ``default``. A key that names no
    input is refused (a typo would otherwise code that file for the wrong task)."""
    try:
        mapping = json.loads(Path(map_file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgumentError(f"{map_file}: cannot read it as JSON ({exc}); --task-per-file takes a JSON file") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, (str, type(None))) for v in mapping.values()):
        raise InvalidArgumentError(f"{map_file}: --task-per-file takes a JSON object {{\"image.png\": \"cls\", ...}} of task names")
    tasks = dict.fromkeys(sources, default)
    for key, name in mapping.items():
        named = [p for p in sources if p == Path(key).resolve() or p.name == key]
        if not named:
            raise InvalidArgumentError(f"{map_file}: {key!r} is none of the input files; give their paths or names")
        tasks.update(dict.fromkeys(named, name))
    return tasks


DECOMPRESS_HEADER = ["file", "size", "mode", "task", "layer", "time(s)"]


@click.command("decompress")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Output directory (or a .png file name for one input).")
@adapter_option("The adapter file the images were coded with (checked by sha256).")
@click.option("--force-task", default=None, help="Decode with this task's adapters, or 'human' for none, whatever the file was coded for.")
@click.option("--layer", type=click.Choice(["base", "full"]), default=None,
              help="Layered files: base (the machine picture) or full (the human one; the default when the file has it).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="Refuse files of larger images (default: what their codec decodes within 8 GB of memory).")
@click.option("--force", is_flag=True, help="Replace output files that exist.")
@threads_option
@click.pass_context
def decompress_command(ctx, inputs, output, adapter, force_task, layer, max_pixels, force) -> None:
    """Decompress .icmh files (files, directories, globs) into PNGs at their original size.

    The codec, quality, task and adapter come from each file's header; adapters are found in the
    registry by their sha256 unless --adapter gives the file. A damaged or crafted file is
    refused with one line (or decodes to a wrong picture), never a crash. A layered file
    (scalable variants) decodes to the human picture from both layers, or with --layer base to
    the machine picture from its base layer; a stripped file holds only the latter.

    With -o DIR each file is written as DIR/NAME.png, NAME its name without .icmh (a.png.icmh
    gives a.png.png); files whose names differ only in the suffix keep it, as in compress.
    """
    from ..coding import Decoder, read_bitstream
    from ..core.names import check_name
    from ..core.tasks import HUMAN
    from ..formats.images import tensor_to_pil

    sources = expand_inputs(inputs, (SUFFIX,))
    targets = output_paths(sources, output, ".png")
    refuse_inputs_as_outputs(sources, targets)
    if force_task is not None:
        check_name("task", force_task)
    decoder = Decoder(adapter, force_task, max_pixels=max_pixels)

    def work(source: Path, target: Path) -> list[str]:
        decoded = decoder.decode(read_bitstream(source), layer)
        picture = tensor_to_pil(decoded.image, decoded.info)
        publish(target, lambda temporary: picture.save(temporary, format="PNG"), force)
        header = decoded.header
        task = header.task or HUMAN
        if force_task and (force_task if force_task != HUMAN else None) != header.task:
            task = f"{force_task} (coded: {task})"
        return [str(target), f"{header.width}x{header.height}", f"{header.mode}{header.bits}", task, decoded.layer or "-"]

    _run_all(ctx, list(zip(sources, targets)), work, DECOMPRESS_HEADER, force)


STRIP_HEADER = ["file", "bytes", "of", "layers(bytes)", "time(s)"]


@click.command("strip")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Output directory (or a .icmh file name for one input).")
@click.option("--layer", type=click.Choice(["base"]), default="base", show_default=True, help="The layer to keep.")
@click.option("--force", is_flag=True, help="Replace output files that exist.")
@click.pass_context
def strip_command(ctx, inputs, output, layer, force) -> None:
    """Cut layered .icmh files down to their base layer, without re-encoding.

    The result is the first bytes of the file: header and base layer, a valid file of its own that
    decodes to the machine picture (what a machine-vision receiver needs). Single-layer files are
    refused with one line."""
    from ..formats.bitstream import layer_bytes, read_bitstream, strip

    sources = expand_inputs(inputs, (SUFFIX,))
    targets = output_paths(sources, output, SUFFIX)
    refuse_inputs_as_outputs(sources, targets)

    def work(source: Path, target: Path) -> list[str]:
        data = read_bitstream(source)
        kept = strip(data, layer)
        publish(target, lambda temporary: temporary.write_bytes(kept), force)
        return [str(target), str(len(kept)), str(len(data)), layer_summary(layer_bytes(kept))]

    _run_all(ctx, list(zip(sources, targets)), work, STRIP_HEADER, force)


COMMANDS = [compress_command, decompress_command, strip_command]
