"""Kernel rates against this machine's best matrix product: what bounds the adapters' overhead.

The adapters' share of coding time cannot drop below the time of their arithmetic at the best
rate the CPU reaches, plus their FFTs (which no MAC count includes). This script measures, in
one run and taking turns, a large square ``sgemm`` (the practical peak: the most arithmetic per
byte any kernel gets) and the kernels an SFMA adapter and the base codec run at the first stage
of a 768x512 image (256x384 maps): every rate is printed as a fraction of the ``sgemm`` rate.
``benchmarks.overhead`` gives the base codec's time, and docs/performance.md puts the two
together into the floor of the adapted / base ratio.

    python -m benchmarks.kernels [--threads 2] [--repeats 7]
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from icmh_hub.core.memory import keep_freed_memory

from .common import arguments, finish, interleaved, pin_threads, table

HEIGHT, WIDTH, CHANNELS, MIDDLE = 256, 384, 128, 64  # first stage of mbt2018-mean q3 at 768x512
SQUARE = 2048


def _channels_last(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).contiguous(memory_format=torch.channels_last)


def kernels() -> dict[str, tuple[object, int]]:
    """name -> (a call, its MACs; 0 where MACs do not describe it)."""
    pixels = HEIGHT * WIDTH
    square = torch.randn(SQUARE, SQUARE)
    feature = _channels_last(1, CHANNELS, HEIGHT, WIDTH)
    projection = _channels_last(3 * MIDDLE, CHANNELS, 1, 1)
    half = _channels_last(MIDDLE, CHANNELS, 1, 1)
    depthwise = _channels_last(MIDDLE, 1, 5, 5)
    hidden = _channels_last(1, MIDDLE, HEIGHT, WIDTH)
    up = torch.randn(MIDDLE, CHANNELS)
    wide = _channels_last(1, CHANNELS, 2 * HEIGHT, 2 * WIDTH)
    strided = _channels_last(CHANNELS, CHANNELS, 5, 5)
    projected = torch.randn(1, MIDDLE, HEIGHT, WIDTH)
    spectrum = torch.fft.rfft2(projected)
    out_pixels = torch.zeros(1, pixels, CHANNELS)
    return {
        f"sgemm {SQUARE}^3 (reference)": (lambda: square @ square, SQUARE ** 3),
        "base: 5x5 stride-2 conv 128->128 (g_a)": (lambda: F.conv2d(wide, strided, stride=2, padding=2), pixels * CHANNELS ** 2 * 25),
        "adapter: 1x1 conv 128->192, one projection": (lambda: F.conv2d(feature, projection), pixels * CHANNELS * 3 * MIDDLE),
        "adapter: 1x1 conv 128->64 (each of three)": (lambda: F.conv2d(feature, half), pixels * CHANNELS * MIDDLE),
        "adapter: 1x1 64->128 accumulated (baddbmm_)": (
            lambda: out_pixels.baddbmm_(hidden.permute(0, 2, 3, 1).reshape(1, pixels, MIDDLE), up[None]), pixels * MIDDLE * CHANNELS),
        "adapter: depth-wise 5x5, 64 channels": (lambda: F.conv2d(hidden, depthwise, padding=2, groups=MIDDLE), pixels * MIDDLE * 25),
        "adapter: rfft2, 64 channels": (lambda: torch.fft.rfft2(projected), 0),
        "adapter: irfft2, 64 channels": (lambda: torch.fft.irfft2(spectrum, s=(HEIGHT, WIDTH)), 0),
        "adapter: abs of the spectrum, 64 channels": (lambda: spectrum.abs(), 0),
    }


def measure(repeats: int) -> dict:
    calls = kernels()
    with keep_freed_memory(), torch.inference_mode():
        times = interleaved({name: call for name, (call, _) in calls.items()}, repeats)
    rates = {name: macs / times[name]["wall_s"] / 1e9 for name, (_, macs) in calls.items() if macs}
    return {"times": times, "gmac_per_s": rates, "macs": {name: macs for name, (_, macs) in calls.items()}}


def main(argv: list[str] | None = None) -> dict:
    args = arguments(__doc__.splitlines()[0], repeats=7).parse_args(argv)
    machine = pin_threads(args.threads)
    result = measure(args.repeats)
    reference = result["gmac_per_s"][f"sgemm {SQUARE}^3 (reference)"]
    rows = [[name, 1e3 * t["wall_s"], result["gmac_per_s"].get(name, "-"),
             result["gmac_per_s"][name] / reference if name in result["gmac_per_s"] else "-"]
            for name, t in result["times"].items()]
    text = table(["kernel (256x384 maps, channels-last)", "ms", "GMAC/s", "rate / sgemm"], rows)
    finish("kernels", machine | {"repeats": args.repeats}, result, args.out, text)
    return result


if __name__ == "__main__":
    main()
