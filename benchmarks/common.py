"""What every benchmark shares: pinned threads, interleaved timing, medians, a table, JSON out.

Timing protocol: the variants being compared run in turn inside each round (the order rotates
from round to round), so that load from other processes and frequency changes hit all of them
alike; each figure reported is the median over rounds, and ratios are taken between medians
measured in the same run. Wall time is the headline; process CPU time is recorded too, because
on a shared machine it is less disturbed by time other processes take from us.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def arguments(description: str, repeats: int = 5, **extra: Any) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes (--threads, --repeats, --out)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=repeats, help=f"timed rounds (default {repeats})")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/<name>.json)")
    return parser


def pin_threads(threads: int) -> dict[str, Any]:
    """Pin torch's thread count and describe the machine the figures come from."""
    torch.set_num_threads(threads)
    return {
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "loadavg_start": list(os.getloadavg()),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def interleaved(
    functions: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, dict[str, float]]:
    """Time each function ``repeats`` times, taking turns; median wall and CPU seconds per name."""
    names = list(functions)
    for _ in range(warmup):
        for name in names:
            functions[name]()
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            w0, c0 = time.perf_counter(), time.process_time()
            functions[name]()
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    return {
        n: {
            "wall_s": statistics.median(wall[n]),
            "cpu_s": statistics.median(cpu[n]),
            "wall_min_s": min(wall[n]),
            "runs": len(wall[n]),
        }
        for n in names
    }


def ratio(times: Mapping[str, Mapping[str, float]], top: str, bottom: str, key: str = "wall_s") -> float:
    return times[top][key] / times[bottom][key]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (so that it pastes into the docs as it is)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def finish(name: str, machine: dict[str, Any], results: Any, out: Path | None, text: str) -> Path:
    """Print the table, and write machine + results as JSON (load average at the end included)."""
    machine = dict(machine, loadavg_end=list(os.getloadavg()))
    print(text)
    print(
        f"\nthreads={machine['threads']}  load average start {_load(machine['loadavg_start'])}"
        f"  end {_load(machine['loadavg_end'])}  ({machine['cpu_count']} CPUs, {machine['processor']})"
    )
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": name, "machine": machine, "results": results}, indent=2))
    print(f"wrote {path}")
    return path


def _load(values: Sequence[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)
