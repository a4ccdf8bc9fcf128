"""Mixed-task streams: images per second, one mixed call vs switching task per image.

A stream of images, each for one of several tasks or for people (in turn), is compressed three
ways, in turns in one run (``benchmarks.common``): ``compress_mixed`` on the whole stream (one
task switch per task, each image coded on its own, bytes bit-exact with coding it alone);
``set_task`` and ``compress`` image by image (what a service does without it); and one batch per
task (``compress`` on each task's images at once), which is faster where batching pays but not
bit-exact with coding alone (``icmh_hub.core.mixed`` says why). Figures are ratios to switching
per image.

    python -m benchmarks.mixed [--threads 2] [--repeats 5] [--images 12] [--size 256x256]
"""

from __future__ import annotations

import torch

from icmh_hub import build_adapters
from icmh_hub.core.mixed import compress_mixed, task_groups

from .codecs import adapted_codec, parse_size, test_image
from .common import arguments, finish, interleaved, pin_threads, table

CODEC, QUALITY = "mbt2018-mean", 3
EXTRA_TASKS = ("det", "seg")


def stream_codec():
    """The benchmark codec with three tasks' adapters (random, different per task)."""
    codec = adapted_codec(CODEC, QUALITY)
    for seed, task in enumerate(EXTRA_TASKS, start=1):
        torch.manual_seed(seed)
        codec.add_adapters(task, build_adapters(CODEC, QUALITY, init="reference", task=task))
    return codec


def measure(images: int, height: int, width: int, repeats: int) -> dict:
    codec = stream_codec()
    cycle = [*codec.tasks, None]
    tasks = [cycle[i % len(cycle)] for i in range(images)]
    x = torch.cat([test_image(height, width, seed=i) for i in range(images)])

    def switching():
        for i, task in enumerate(tasks):
            codec.set_task(task)
            codec.compress(x[i : i + 1])

    def grouped():
        for task, indices in task_groups(tasks, images).items():
            codec.set_task(task)
            codec.compress(x[indices])

    calls = {"mixed": lambda: compress_mixed(codec, x, tasks), "switching": switching, "grouped": grouped}
    with torch.inference_mode():
        times = interleaved(calls, repeats)
    return {"images": images, "size": [width, height], "tasks": tasks, "times": times,
            "images_per_s": {name: images / t["wall_s"] for name, t in times.items()}}


def main(argv: list[str] | None = None) -> dict:
    parser = arguments(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--images", type=int, default=12, help="images in the stream (default 12)")
    parser.add_argument("--size", default="256x256", help="image size WIDTHxHEIGHT (default 256x256)")
    args = parser.parse_args(argv)
    machine = pin_threads(args.threads)
    height, width = parse_size(args.size)
    result = measure(args.images, height, width, args.repeats)
    rate, times = result["images_per_s"], result["times"]
    rows = [[name, f"{rate[name]:.2f}", times[name]["wall_s"] / times["switching"]["wall_s"],
             times[name]["cpu_s"] / times["switching"]["cpu_s"], "yes" if name != "grouped" else "no"]
            for name in ("mixed", "switching", "grouped")]
    text = table(["way", "images/s", "time / switching", "CPU time / switching", "bit-exact with coding alone"], rows)
    finish("mixed", machine | {"repeats": args.repeats, "codec": f"{CODEC} q{QUALITY}"}, result, args.out, text)
    return result


if __name__ == "__main__":
    main()
