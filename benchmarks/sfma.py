"""Our SFMA against the straightforward formulation (benchmarks/baseline_sfma.py), same weights.

Forward (inference, no autograd) and forward+backward (training: gradients of the input and of
every parameter), at the three feature sizes an SFMA sees in mbt2018-mean at 768x512
(N=128 channels at 1/2, 1/4 and 1/8 of the image), d=64.

    python -m benchmarks.sfma [--threads 2] [--repeats 7] [--size 768x512] [--channels 128]
"""

from __future__ import annotations

import torch

from icmh_hub.core.adapters import Adapter

from .baseline_sfma import BaselineSFMA
from .common import arguments, finish, interleaved, pin_threads, table


def parse_size(text: str) -> tuple[int, int]:
    """'768x512' (width x height) -> (height, width)."""
    width, height = (int(v) for v in text.lower().split("x"))
    return height, width


def _training_step(module: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor):
    def step() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(grad)

    return step


def main(argv: list[str] | None = None) -> dict:
    parser = arguments(__doc__.splitlines()[0], repeats=7)
    parser.add_argument("--size", default="768x512", help="image size WxH the feature sizes derive from")
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--middle-dim", type=int, default=64)
    args = parser.parse_args(argv)
    machine = pin_threads(args.threads)
    height, width = parse_size(args.size)
    torch.manual_seed(0)
    results, rows = [], []
    for stage in (1, 2, 3):
        shape = (1, args.channels, height >> stage, width >> stage)
        ours = Adapter(args.channels, args.middle_dim, "sfma", init="reference")
        base = BaselineSFMA.from_adapter(ours)
        x = torch.randn(shape)
        with torch.no_grad():
            forward = interleaved({"ours": lambda: ours(x), "baseline": lambda: base(x)}, args.repeats)
        xg, grad = x.clone().requires_grad_(), torch.randn(shape)
        train = interleaved(
            {"ours": _training_step(ours, xg, grad), "baseline": _training_step(base, xg, grad)},
            args.repeats,
        )
        for mode, times in (("forward", forward), ("forward+backward", train)):
            speedup = times["baseline"]["wall_s"] / times["ours"]["wall_s"]
            cpu_speedup = times["baseline"]["cpu_s"] / times["ours"]["cpu_s"]
            results.append({"stage": stage, "shape": list(shape), "mode": mode, "times": times,
                            "speedup": speedup, "speedup_cpu": cpu_speedup})
            rows.append([f"{stage} {shape[2]}x{shape[3]}", mode, times["ours"]["wall_s"] * 1e3,
                         times["baseline"]["wall_s"] * 1e3, speedup, cpu_speedup])
    text = table(["stage HxW", "mode", "ours ms", "baseline ms", "speed-up", "speed-up (CPU time)"], rows)
    finish("sfma", machine | {"size": args.size, "channels": args.channels, "middle_dim": args.middle_dim,
                              "repeats": args.repeats}, results, args.out, text)
    return {"results": results}


if __name__ == "__main__":
    main()
