"""Adapter overhead: compress and decompress time (entropy coding included), adapted / base.

The same codec object runs with its adapters active and in human mode (no adapter runs), on the
usual path and on the channels-last inference path (``icmh_hub.core.inference``), all in turns,
so that every variant sees the same machine state; each ratio is one of medians measured side by
side in this run. The base codec is timed on each path too: a path's ratio is its adapted time
over its own base time, and ``fastest`` puts the adapted codec on its fastest path (the path
with the smaller compress + decompress median) over the base codec on its own fastest path.

That is done twice, with the process's allocator as it comes (glibc's, or one that
``LD_PRELOAD`` put in its place: the JSON records it) and inside ``keep_freed_memory()``
(``--allocator`` picks one): one phase after the other, each warmed up on its own, because the
point of the setting is the state it leaves the heap in. Ratios within a phase are measured in
turns; figures across phases are not, so compare them over several runs.

    python -m benchmarks.overhead [--threads 2] [--repeats 5] [--size 768x512] [--device cuda]
        [--codec mbt2018-mean:3 --codec cheng2020-anchor:5] [--allocator default --allocator kept]

cheng2020-anchor's autoregressive context model codes latent by latent in Python, so its
compress/decompress are slow on a CPU; ``--size`` / ``--repeats`` make a run shorter, and the
table says what was run.
"""

from __future__ import annotations

import contextlib
import os

import torch

from icmh_hub.core.inference import channels_last
from icmh_hub.core.memory import keep_freed_memory
from icmh_hub.core.rate import actual_bpp

from .codecs import TASK, adapted_codec, parse_size, test_image
from .common import arguments, finish, interleaved, pin_threads, table

DEFAULT_CODECS = ("mbt2018-mean:3", "cheng2020-anchor:5")
PATHS = {"usual": lambda codec: contextlib.nullcontext(), "channels-last": channels_last}
ALLOCATORS = {"default": contextlib.nullcontext, "kept": keep_freed_memory}
SIDES = ((TASK, "adapted"), (None, "base"))


def measure(codec_name: str, quality: int, height: int, width: int, repeats: int, device: str = "cpu",
            allocators: tuple[str, ...] = tuple(ALLOCATORS)) -> dict:
    """Median compress / decompress times with and without the adapters on each path, under each
    allocator setting, and ratios."""
    codec = adapted_codec(codec_name, quality).to(device)
    image = test_image(height, width).to(device)
    with torch.inference_mode():
        coded = {}
        for task, _ in SIDES:
            with codec.using(task):
                coded[task] = codec.compress(image)
        calls = {f"{what}/{label}/{path}": _call(codec, image, coded, task, what, PATHS[path], device)
                 for path in PATHS for what in ("compress", "decompress") for task, label in SIDES}
        phases = {}
        for allocator in allocators:
            with ALLOCATORS[allocator]() as applied:
                phases[allocator] = {"applied": applied is not False, "times": interleaved(calls, repeats)}
    bpp = {label: actual_bpp(coded[task]["strings"], height * width) for task, label in SIDES}
    result = {"codec": codec_name, "quality": quality, "size": [width, height], "device": device, "bpp": bpp}
    for allocator, phase in phases.items():
        times = phase["times"]
        phase.update({path: _ratios(times, path, path) for path in PATHS})
        phase["fastest"] = _fastest(times)
    result["allocators"] = phases
    return result


def _fastest(times: dict) -> dict:
    """Each side on its own fastest path (by wall time), and adapted / base between those."""
    best = {label: min(PATHS, key=lambda path: _total(times, label, path, "wall_s")) for _, label in SIDES}
    return {"adapted_path": best["adapted"], "base_path": best["base"]} | _ratios(times, best["adapted"], best["base"])


def _call(codec, image, coded, task, what, path, device):
    def call():
        with path(codec), codec.using(task):
            if what == "compress":
                codec.compress(image)
            else:
                codec.decompress(coded[task]["strings"], coded[task]["shape"])
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    return call


def _total(times: dict, label: str, path: str, key: str) -> float:
    return times[f"compress/{label}/{path}"][key] + times[f"decompress/{label}/{path}"][key]


def _ratios(times: dict, adapted_path: str, base_path: str) -> dict:
    """Adapted on one path / base on one path: compress, decompress and both, wall and CPU time."""
    out = {}
    for key, suffix in (("wall_s", ""), ("cpu_s", "_cpu")):
        for what in ("compress", "decompress"):
            out[f"{what}_ratio{suffix}"] = times[f"{what}/adapted/{adapted_path}"][key] / times[f"{what}/base/{base_path}"][key]
        out[f"total_ratio{suffix}"] = _total(times, "adapted", adapted_path, key) / _total(times, "base", base_path, key)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = arguments(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--size", default="768x512", help="image size WIDTHxHEIGHT (default 768x512)")
    parser.add_argument("--codec", action="append", help="CODEC:QUALITY, repeatable (default: %s)" % ", ".join(DEFAULT_CODECS))
    parser.add_argument("--device", default="cpu", help="torch device (default cpu; e.g. cuda)")
    parser.add_argument("--allocator", action="append", choices=list(ALLOCATORS),
                        help="default (the allocator as it comes) or kept (keep_freed_memory), repeatable (default: both, in that order)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: this torch sees no CUDA device")
    machine = pin_threads(args.threads) | {"device": args.device, "ld_preload": os.environ.get("LD_PRELOAD", "")}
    height, width = parse_size(args.size)
    results, rows = [], []
    for item in args.codec or DEFAULT_CODECS:
        name, _, quality = item.partition(":")
        result = measure(name, int(quality or 3), height, width, args.repeats, args.device,
                         tuple(args.allocator or ALLOCATORS))
        results.append(result)
        rows += _rows(name, result, width, height, machine["ld_preload"])
    text = table(["codec", "size", "base bpp", "allocator", "path (adapted, base)", "base enc / dec s",
                  "adapted enc / dec s", "enc ratio", "dec ratio", "enc+dec ratio", "enc+dec ratio (CPU time)"], rows)
    finish("overhead", machine | {"repeats": args.repeats}, results, args.out, text)
    return results


def _rows(name: str, result: dict, width: int, height: int, preload: str) -> list[list]:
    rows = []
    for allocator, phase in result["allocators"].items():
        shown = allocator if phase["applied"] else f"{allocator} (no glibc: as default)"
        shown += f" (LD_PRELOAD {os.path.basename(preload)})" if preload else ""
        head = [f"{name} q{result['quality']}", f"{width}x{height}", f"{result['bpp']['base']:.2f}", shown]
        rows += [head + _row(phase, phase[path], path, path, path) for path in PATHS]
        best = phase["fastest"]
        rows.append(head + _row(phase, best, f"fastest: {best['adapted_path']}, {best['base_path']}",
                                best["adapted_path"], best["base_path"]))
    return rows


def _row(phase: dict, ratios: dict, label: str, adapted_path: str, base_path: str) -> list:
    """A row's path, times and ratios (the adapted codec on ``adapted_path``, the base on ``base_path``)."""
    t = phase["times"]
    return [label, f"{t[f'compress/base/{base_path}']['wall_s']:.3f} / {t[f'decompress/base/{base_path}']['wall_s']:.3f}",
            f"{t[f'compress/adapted/{adapted_path}']['wall_s']:.3f} / {t[f'decompress/adapted/{adapted_path}']['wall_s']:.3f}",
            ratios["compress_ratio"], ratios["decompress_ratio"], ratios["total_ratio"], ratios["total_ratio_cpu"]]


if __name__ == "__main__":
    main()
