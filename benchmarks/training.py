"""Training step time and peak memory: adapter tuning against full fine-tuning of the codec.

Same codec (mbt2018-mean q3 by default), same random crops, same batch, same loss
``estimated bpp + lambda * MSE(reconstruction, original)`` (the timing does not depend on which
distortion is used), Adam. Adapter tuning trains the six adapters with the codec frozen; full
fine-tuning trains every codec parameter (no adapters), as tuning a codec per task would. Both
run the trainer's own step: ``training_forward`` (noise for the likelihoods, straight-through
rounding for the decoder, noise drawn per image) under ``frozen_layers``, as ``icmh-hub train``
and ``icmh-hub train --full-finetune`` do.

A third mode, ``frozen``, measures the floor under adapter tuning: the same step with no adapters
and nothing to train, the gradient taken with respect to the input image, so that backward runs
through the same frozen g_a, h_a, h_s and g_s that the adapters' gradients must cross. What the
adapters cost on top of it is theirs; what it costs is the frozen codec's.

Memory: each mode runs in its own fresh process; the figure is the process's peak resident set
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) minus its resident set after the model and the
optimizer were built and before the first step: activations, gradients and optimizer state.
Processes alternate between the modes (adapter, full, adapter, full, ...) to spread drift.

Page faults: minor faults per timed step (``ru_minflt``). Every large tensor a step allocates
comes as fresh pages from the kernel (glibc maps allocations of tens of MB anew each time), and
each fault costs time (the kernel zeroes the page). Full fine-tuning, which allocates a weight
gradient and keeps an input for every layer, pays more of them than adapter tuning. With ``THP_MEM_ALLOC_ENABLE=1`` in the environment (PyTorch then
asks for transparent huge pages for large tensors) both modes run with most of that cost
removed, which shows what their arithmetic alone costs.

    python -m benchmarks.training [--threads 2] [--repeats 3] [--steps 3] [--crop 256] [--batch 4]
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from icmh_hub.core.rate import estimated_bpp
from icmh_hub.training.forward import SampleNoise, training_forward
from icmh_hub.training.frozen import frozen_layers

from .codecs import TASK, adapted_codec
from .common import arguments, finish, pin_threads, table

LMBDA = 0.0130 * 255**2  # CompressAI's MSE lambda at quality 3 style scale; only the timing matters
MODES = ("adapters", "full", "frozen")


def _rss_kib() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def worker(mode: str, codec_name: str, quality: int, crop: int, batch: int, steps: int, threads: int) -> dict:
    """One process's measurement: median step time after one warm-up step, and memory growth."""
    torch.set_num_threads(threads)
    codec = adapted_codec(codec_name, quality)
    for parameter in codec.base.parameters():
        parameter.requires_grad_(mode == "full")
    if mode == "full":
        codec.set_task(None)
        trainable = [p for n, p in codec.base.named_parameters() if not n.endswith("quantiles")]
    elif mode == "frozen":
        codec.set_task(None)
        trainable = []
    else:
        trainable = list(codec.adapters.parameters())
    optimizer = torch.optim.Adam(trainable or [torch.zeros(1, requires_grad=True)], lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(batch, 3, crop, crop, generator=generator) for _ in range(steps + 1)]
    rss_before = _rss_kib()
    times, faults = [], []
    for index, image in enumerate(images):
        image.requires_grad_(mode == "frozen")
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with frozen_layers(codec.base):
            out = training_forward(codec.base, image, SampleNoise(0, index, range(index * batch, (index + 1) * batch)))
            rate = estimated_bpp(out["likelihoods"], crop * crop)
            loss = rate + LMBDA * torch.mean((out["x_hat"] - image) ** 2)
        loss.backward()
        optimizer.step()
        if index:  # the first step is a warm-up (allocations, optimizer state)
            times.append(time.perf_counter() - start)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "mode": mode, "step_s": statistics.median(times), "step_times_s": times,
        "page_faults_per_step": statistics.median(faults),
        "peak_rss_mib": peak / 1024, "rss_before_mib": rss_before / 1024,
        "memory_growth_mib": (peak - rss_before) / 1024,
        "trainable_parameters": sum(p.numel() for p in trainable),
    }


def _run_worker(mode: str, args) -> dict:
    command = [sys.executable, "-m", "benchmarks.training", "--worker", mode, "--codec", args.codec,
               "--crop", str(args.crop), "--batch", str(args.batch), "--steps", str(args.steps),
               "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"worker {mode} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = arguments(__doc__.splitlines()[0], repeats=3)
    parser.add_argument("--codec", default="mbt2018-mean:3", help="CODEC:QUALITY")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process")
    parser.add_argument("--worker", choices=MODES, help=argparse_hidden())
    args = parser.parse_args(argv)
    if args.crop < 64 or args.crop % 64:
        parser.error(f"--crop must be a multiple of 64 (the codec downsamples by 64), got {args.crop}")
    name, _, quality = args.codec.partition(":")
    if args.worker:
        print(json.dumps(worker(args.worker, name, int(quality or 3), args.crop, args.batch, args.steps, args.threads)))
        return {}
    machine = pin_threads(args.threads)
    modes = MODES
    runs = {mode: [] for mode in modes}
    for round_ in range(args.repeats):
        for mode in modes if round_ % 2 == 0 else modes[::-1]:
            runs[mode].append(_run_worker(mode, args))
    summary = {
        mode: {
            "step_s": statistics.median(r["step_s"] for r in runs[mode]),
            "memory_growth_mib": statistics.median(r["memory_growth_mib"] for r in runs[mode]),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs[mode]),
            "page_faults_per_step": statistics.median(r["page_faults_per_step"] for r in runs[mode]),
            "trainable_parameters": runs[mode][0]["trainable_parameters"],
        }
        for mode in modes
    }
    floor_time = summary["frozen"]["step_s"] / summary["full"]["step_s"]
    floor_memory = summary["frozen"]["memory_growth_mib"] / summary["full"]["memory_growth_mib"]
    time_ratio = summary["adapters"]["step_s"] / summary["full"]["step_s"]
    memory_ratio = summary["adapters"]["memory_growth_mib"] / summary["full"]["memory_growth_mib"]
    peak_ratio = summary["adapters"]["peak_rss_mib"] / summary["full"]["peak_rss_mib"]
    results = {"codec": name, "quality": int(quality or 3), "crop": args.crop, "batch": args.batch,
               "summary": summary, "runs": runs, "time_ratio": time_ratio,
               "memory_growth_ratio": memory_ratio, "peak_rss_ratio": peak_ratio,
               "frozen_time_ratio": floor_time, "frozen_memory_growth_ratio": floor_memory}
    rows = [
        [mode, summary[mode]["trainable_parameters"], summary[mode]["step_s"],
         summary[mode]["memory_growth_mib"], summary[mode]["peak_rss_mib"], summary[mode]["page_faults_per_step"]]
        for mode in modes
    ]
    faults = {mode: summary[mode]["page_faults_per_step"] / summary["full"]["page_faults_per_step"] for mode in modes}
    rows.append(["adapters / full", "", time_ratio, memory_ratio, peak_ratio, faults["adapters"]])
    rows.append(["frozen / full (the floor)", "", floor_time, floor_memory,
                 summary["frozen"]["peak_rss_mib"] / summary["full"]["peak_rss_mib"], faults["frozen"]])
    text = table(["mode", "trainable params", "step s", "training memory MiB (peak - before)",
                  "peak RSS MiB", "page faults / step"], rows)
    text += f"\n{name} q{int(quality or 3)}, batch {args.batch} x {args.crop}x{args.crop} crops, {args.repeats} processes per mode"
    finish("training", machine | {"repeats": args.repeats, "steps": args.steps}, results, args.out, text)
    return results


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
