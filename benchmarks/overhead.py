"""Adapter overhead: compress and decompress time (entropy coding included), adapted / base.

The same codec object runs with its adapters active and in human mode (no adapter runs), in
turns, so both sides see the same machine state; the figure is the ratio of the medians.

    python -m benchmarks.overhead [--threads 2] [--repeats 5] [--size 768x512]
        [--codec mbt2018-mean:3 --codec cheng2020-anchor:5]

cheng2020-anchor's autoregressive context model codes latent by latent in Python, so its
compress/decompress are slow on a CPU; ``--size`` / ``--repeats`` make a run shorter, and the
table says what was run.
"""

from __future__ import annotations

import torch

from icmh_hub.core.rate import actual_bpp

from .codecs import TASK, adapted_codec, parse_size, test_image
from .common import arguments, finish, interleaved, pin_threads, table

DEFAULT_CODECS = ("mbt2018-mean:3", "cheng2020-anchor:5")


def measure(codec_name: str, quality: int, height: int, width: int, repeats: int) -> dict:
    """Median compress / decompress times with and without the adapters, and their ratios."""
    codec = adapted_codec(codec_name, quality)
    image = test_image(height, width)
    with torch.inference_mode():
        coded = {}
        for task in (TASK, None):
            with codec.using(task):
                coded[task] = codec.compress(image)

        def run(task, what):
            def call():
                with codec.using(task):
                    if what == "compress":
                        return codec.compress(image)
                    out = coded[task]
                    return codec.decompress(out["strings"], out["shape"])

            return call

        calls = {f"{what}/{label}": run(task, what)
                 for what in ("compress", "decompress") for task, label in ((TASK, "adapted"), (None, "base"))}
        times = interleaved(calls, repeats)
    bpp = {label: actual_bpp(coded[task]["strings"], height * width) for task, label in ((TASK, "adapted"), (None, "base"))}
    result = {"codec": codec_name, "quality": quality, "size": [width, height], "times": times, "bpp": bpp}
    for key in ("wall_s", "cpu_s"):
        suffix = "" if key == "wall_s" else "_cpu"
        for what in ("compress", "decompress"):
            result[f"{what}_ratio{suffix}"] = times[f"{what}/adapted"][key] / times[f"{what}/base"][key]
        adapted = times["compress/adapted"][key] + times["decompress/adapted"][key]
        base = times["compress/base"][key] + times["decompress/base"][key]
        result[f"total_ratio{suffix}"] = adapted / base
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    parser = arguments(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--size", default="768x512", help="image size WIDTHxHEIGHT (default 768x512)")
    parser.add_argument("--codec", action="append", help="CODEC:QUALITY, repeatable (default: %s)" % ", ".join(DEFAULT_CODECS))
    args = parser.parse_args(argv)
    machine = pin_threads(args.threads)
    height, width = parse_size(args.size)
    results, rows = [], []
    for item in args.codec or DEFAULT_CODECS:
        name, _, quality = item.partition(":")
        result = measure(name, int(quality or 3), height, width, args.repeats)
        results.append(result)
        t = result["times"]
        rows.append([
            f"{name} q{result['quality']}", f"{width}x{height}",
            f"{t['compress/base']['wall_s']:.2f} / {t['decompress/base']['wall_s']:.2f}",
            result["compress_ratio"], result["decompress_ratio"], result["total_ratio"],
            result["total_ratio_cpu"], f"{result['bpp']['base']:.2f}",
        ])
    text = table(["codec", "size", "base enc / dec s", "enc ratio", "dec ratio", "enc+dec ratio",
                  "enc+dec ratio (CPU time)", "base bpp"], rows)
    finish("overhead", machine | {"repeats": args.repeats}, results, args.out, text)
    return results


if __name__ == "__main__":
    main()
