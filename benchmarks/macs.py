"""Multiply-accumulates per image pixel of the codec's transforms and of its adapters.

Counted with ``torch.utils.flop_counter.FlopCounterMode`` (which counts 2 FLOPs per MAC) on one
forward of each part at its real feature size: g_a, h_a, h_s, g_s and the adapters of each side.
Convolutions (depth-wise ones included) and matrix products are counted; FFTs, activations and
element-wise products are not (the paper counts the same way). Compare the arithmetic share with
the time share from ``benchmarks.overhead``.

    python -m benchmarks.macs [--size 768x512] [--codec mbt2018-mean:3]
"""

from __future__ import annotations

import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from icmh_hub.core.adapter_set import point_key

from .codecs import adapted_codec, parse_size, test_image
from .common import RESULTS, arguments, finish, pin_threads, table


# the counter knows baddbmm but not its in-place form, which the adapters accumulate with
def _baddbmm_flops(input_shape, batch1_shape, batch2_shape, *args, out_shape=None, **kwargs) -> int:
    batch, rows, inner = batch1_shape
    return 2 * batch * rows * inner * batch2_shape[-1]


IN_PLACE = {torch.ops.aten.baddbmm_: _baddbmm_flops}


def count_macs(function, *inputs) -> tuple[int, object]:
    """MACs of one call of ``function(*inputs)`` (FLOPs / 2), and its output."""
    with FlopCounterMode(display=False, custom_mapping=IN_PLACE) as counter, torch.no_grad():
        out = function(*inputs)
    return counter.get_total_flops() // 2, out


def feature_inputs(codec, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """The output of each insertion point's module for ``image`` (what each adapter sees)."""
    captured, handles = {}, []
    modules = dict(codec.base.named_modules())
    for key, path in codec.adapters.points.items():
        handles.append(modules[path].register_forward_hook(
            lambda m, i, o, key=key: captured.__setitem__(key, o.detach())))
    try:
        with codec.human(), torch.no_grad():
            y = codec.base.g_a(image)
            codec.base.g_s(y)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def main(argv: list[str] | None = None) -> dict:
    parser = arguments(__doc__.splitlines()[0], repeats=1)
    parser.add_argument("--size", default="768x512")
    parser.add_argument("--codec", default="mbt2018-mean:3", help="CODEC:QUALITY")
    args = parser.parse_args(argv)
    machine = pin_threads(args.threads)
    name, _, quality = args.codec.partition(":")
    height, width = parse_size(args.size)
    pixels = height * width
    codec = adapted_codec(name, int(quality or 3))
    base = codec.base
    image = test_image(height, width)
    macs = {}
    with codec.human():
        macs["g_a"], y = count_macs(base.g_a, image)
        macs["h_a"], z = count_macs(base.h_a, y)
        macs["h_s"], _ = count_macs(base.h_s, z)
        macs["g_s"], _ = count_macs(base.g_s, y)
    features = feature_inputs(codec, image)
    for side in ("encoder", "decoder"):
        macs[f"adapters ({side})"] = sum(
            count_macs(codec.adapters.adapters[point_key(side, stage)], features[point_key(side, stage)])[0]
            for stage in (1, 2, 3)
        )
    per_pixel = {part: value / pixels for part, value in macs.items()}
    codec_total = per_pixel["g_a"] + per_pixel["h_a"] + per_pixel["h_s"] + per_pixel["g_s"]
    adapters_total = per_pixel["adapters (encoder)"] + per_pixel["adapters (decoder)"]
    results = {
        "codec": name, "quality": int(quality or 3), "size": [width, height],
        "macs_per_pixel": per_pixel, "codec_total": codec_total, "adapters_total": adapters_total,
        "adapters_over_codec": adapters_total / codec_total,
        "arithmetic_ratio": (codec_total + adapters_total) / codec_total,
    }
    rows = [[part, value / 1e3, value / codec_total] for part, value in per_pixel.items()]
    rows.append(["codec (g_a + h_a + h_s + g_s)", codec_total / 1e3, 1.0])
    rows.append(["adapters (all six)", adapters_total / 1e3, adapters_total / codec_total])
    overhead = RESULTS / "overhead.json"
    note = ""
    if overhead.is_file():
        for run in json.loads(overhead.read_text())["results"]:
            if run["codec"] == name and run["quality"] == int(quality or 3):
                note = (f"\narithmetic (codec + adapters) / codec = {results['arithmetic_ratio']:.3f}; "
                        f"time, adapted / base, enc+dec (benchmarks.overhead, {run['size'][0]}x{run['size'][1]}) "
                        f"= {run['total_ratio']:.3f}")
                results["measured_time_ratio"] = run["total_ratio"]
    text = table(["part", "KMACs / pixel", "share of codec"], rows) + note
    finish("macs", machine, results, args.out, text)
    return results


if __name__ == "__main__":
    main()
