"""Task swap and adapter load times on a loaded codec, next to the time of one compress().

``set_task`` switches the active adapter set (an attribute change); loading from a warm cache is
reading an adapter file already on disk (and in the OS page cache) with ``load_adapters`` and
attaching it with ``add_adapters``. Both are reported in milliseconds and as a fraction of one
``compress()`` of the same codec measured in the same run.

    python -m benchmarks.swap [--threads 2] [--repeats 5] [--size 768x512] [--codec mbt2018-mean:3]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from icmh_hub import build_adapters, load_adapters, save_adapters

from .codecs import TASK, adapted_codec, parse_size, test_image
from .common import arguments, finish, interleaved, pin_threads, table

SWAPS_PER_ROUND = 1000


def main(argv: list[str] | None = None) -> dict:
    parser = arguments(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--size", default="768x512")
    parser.add_argument("--codec", default="mbt2018-mean:3", help="CODEC:QUALITY")
    args = parser.parse_args(argv)
    machine = pin_threads(args.threads)
    name, _, quality = args.codec.partition(":")
    quality = int(quality or 3)
    height, width = parse_size(args.size)
    codec = adapted_codec(name, quality)
    other = build_adapters(name, quality, init="reference", task="other")
    codec.add_adapters("other", other)
    image = test_image(height, width)
    with tempfile.TemporaryDirectory() as folder:
        path = save_adapters(other, Path(folder) / "other.safetensors")
        load_adapters(path)  # warm the page cache and the imports

        def swap() -> None:
            for _ in range(SWAPS_PER_ROUND // 2):
                codec.set_task("other")
                codec.set_task(TASK)

        def load() -> None:
            codec.add_adapters("other", load_adapters(path), replace=True)

        def compress() -> None:
            with torch.inference_mode():
                codec.compress(image)

        times = interleaved({"swap x1000": swap, "load+attach": load, "compress": compress}, args.repeats)
        file_bytes = path.stat().st_size
    set_task_s = times["swap x1000"]["wall_s"] / SWAPS_PER_ROUND
    load_s = times["load+attach"]["wall_s"]
    compress_s = times["compress"]["wall_s"]
    results = {
        "codec": name, "quality": quality, "size": [width, height], "times": times,
        "set_task_ms": set_task_s * 1e3, "load_ms": load_s * 1e3, "compress_ms": compress_s * 1e3,
        "set_task_over_compress": set_task_s / compress_s, "load_over_compress": load_s / compress_s,
        "adapter_file_bytes": file_bytes,
    }
    rows = [
        ["set_task", set_task_s * 1e3, set_task_s / compress_s],
        [f"load_adapters + add_adapters ({file_bytes / 1e6:.2f} MB file, warm cache)", load_s * 1e3, load_s / compress_s],
        [f"compress() {width}x{height}, for scale", compress_s * 1e3, 1.0],
    ]
    text = table(["operation", "ms", "fraction of one compress()"], rows)
    finish("swap", machine | {"repeats": args.repeats}, results, args.out, text)
    return results


if __name__ == "__main__":
    main()
