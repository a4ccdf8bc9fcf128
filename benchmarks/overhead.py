"""Adapter overhead: compress and decompress time (entropy coding included), adapted / base.

The same codec object runs with its adapters active and in human mode (no adapter runs), on the
usual path and on the channels-last inference path (``icmh_hub.core.inference``), all in turns,
so that every variant sees the same machine state; each figure is a ratio of medians measured
side by side in this run. The base codec is timed on each path too: a path's ratio is its
adapted time over its own base time, and ``channels-last / usual`` compares the paths.

    python -m benchmarks.overhead [--threads 2] [--repeats 5] [--size 768x512] [--device cuda]
        [--codec mbt2018-mean:3 --codec cheng2020-anchor:5]

cheng2020-anchor's autoregressive context model codes latent by latent in Python, so its
compress/decompress are slow on a CPU; ``--size`` / ``--repeats`` make a run shorter, and the
table says what was run.
"""

from __future__ import annotations

import contextlib

import torch

from icmh_hub.core.inference import channels_last
from icmh_hub.core.rate import actual_bpp

from .codecs import TASK, adapted_codec, parse_size, test_image
from .common import arguments, finish, interleaved, pin_threads, table

DEFAULT_CODECS = ("mbt2018-mean:3", "cheng2020-anchor:5")
PATHS = {"usual": lambda codec: contextlib.nullcontext(), "channels-last": channels_last}
SIDES = ((TASK, "adapted"), (None, "base"))


def measure(codec_name: str, quality: int, height: int, width: int, repeats: int, device: str = "cpu") -> dict:
    """Median compress / decompress times with and without the adapters on each path, and ratios."""
    codec = adapted_codec(codec_name, quality).to(device)
    image = test_image(height, width).to(device)
    with torch.inference_mode():
        coded = {}
        for task, _ in SIDES:
            with codec.using(task):
                coded[task] = codec.compress(image)
        calls = {f"{what}/{label}/{path}": _call(codec, image, coded, task, what, PATHS[path], device)
                 for path in PATHS for what in ("compress", "decompress") for task, label in SIDES}
        times = interleaved(calls, repeats)
    bpp = {label: actual_bpp(coded[task]["strings"], height * width) for task, label in SIDES}
    result = {"codec": codec_name, "quality": quality, "size": [width, height], "device": device,
              "times": times, "bpp": bpp}
    for path in PATHS:
        result[path] = _ratios(times, path)
    for key, suffix in (("wall_s", ""), ("cpu_s", "_cpu")):
        result[f"channels_last_base{suffix}"] = _total(times, "base", "channels-last", key) / _total(times, "base", "usual", key)
        result[f"channels_last_adapted{suffix}"] = (_total(times, "adapted", "channels-last", key)
                                                    / _total(times, "adapted", "usual", key))
    return result


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


def _ratios(times: dict, path: str) -> dict:
    """Adapted / base on one path: compress, decompress and both, wall and CPU time."""
    out = {}
    for key, suffix in (("wall_s", ""), ("cpu_s", "_cpu")):
        for what in ("compress", "decompress"):
            out[f"{what}_ratio{suffix}"] = times[f"{what}/adapted/{path}"][key] / times[f"{what}/base/{path}"][key]
        out[f"total_ratio{suffix}"] = _total(times, "adapted", path, key) / _total(times, "base", path, key)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = arguments(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--size", default="768x512", help="image size WIDTHxHEIGHT (default 768x512)")
    parser.add_argument("--codec", action="append", help="CODEC:QUALITY, repeatable (default: %s)" % ", ".join(DEFAULT_CODECS))
    parser.add_argument("--device", default="cpu", help="torch device (default cpu; e.g. cuda)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: this torch sees no CUDA device")
    machine = pin_threads(args.threads) | {"device": args.device}
    height, width = parse_size(args.size)
    results, rows = [], []
    for item in args.codec or DEFAULT_CODECS:
        name, _, quality = item.partition(":")
        result = measure(name, int(quality or 3), height, width, args.repeats, args.device)
        results.append(result)
        rows += _rows(name, result, width, height)
    text = table(["codec", "size", "path", "base enc / dec s", "enc ratio", "dec ratio", "enc+dec ratio",
                  "enc+dec ratio (CPU time)", "base bpp", "path / usual: base, adapted"], rows)
    finish("overhead", machine | {"repeats": args.repeats}, results, args.out, text)
    return results


def _rows(name: str, result: dict, width: int, height: int) -> list[list]:
    rows = []
    for path in PATHS:
        t, r = result["times"], result[path]
        versus = ("1, 1" if path == "usual" else
                  f"{result['channels_last_base']:.3g}, {result['channels_last_adapted']:.3g}")
        rows.append([f"{name} q{result['quality']}", f"{width}x{height}", path,
                     f"{t[f'compress/base/{path}']['wall_s']:.2f} / {t[f'decompress/base/{path}']['wall_s']:.2f}",
                     r["compress_ratio"], r["decompress_ratio"], r["total_ratio"], r["total_ratio_cpu"],
                     f"{result['bpp']['base']:.2f}", versus])
    return rows


if __name__ == "__main__":
    main()
