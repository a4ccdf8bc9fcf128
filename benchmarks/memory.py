"""Peak memory of compress and decompress per megapixel, for each codec family.

Each measurement runs in a fresh process, exactly as ``icmh-hub compress`` / ``decompress`` do it:
compress reads a PNG and encodes it into a .icmh file; decompress decodes that file and writes a
PNG. The figure is the process's peak resident memory (VmHWM, reset after the codec is built,
so it covers the coding only) at two image sizes; a straight line through them gives the cost
per megapixel and the fixed part (Python, torch, the codec's weights). Memory is linear in the
pixels for these codecs (their transforms are convolutions or windowed attention), and
``--check`` measures one larger size against the line's prediction.

The codecs have random weights with latents spread over many quantisation bins (as in the other
benchmarks) and their task adapters active (the larger case; ``--human`` adds rows without).
Each family runs at its widest quality (N=192 where it has one) and mbt2018-mean also at q3.

    python -m benchmarks.memory [--sizes 1024x512 1024x1024] [--check 2048x1024] [--codec mbt2018-mean:3 ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from .common import arguments, finish, pin_threads, table

DEFAULT_CODECS = (
    "mbt2018-mean:3", "mbt2018-mean:8", "bmshj2018-hyperprior:8", "mbt2018:8", "cheng2020-anchor:6",
    "cheng2020-attn:6", "elic2022:1", "tic:4", "mbt2018-mean-demo:4",
)
OPERATIONS = ("compress", "decompress")
MB = 1e6


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(spec: dict) -> dict:
    """One measurement in this (fresh) process: build the codec, reset the peak, code, report."""
    import gc

    import torch

    from icmh_hub.coding import Decoder, Encoder
    from icmh_hub.formats.images import tensor_to_pil, write_png

    from .codecs import adapted_codec, test_image

    torch.set_num_threads(spec["threads"])
    codec = adapted_codec(spec["codec"], spec["quality"])
    if spec["human"]:
        codec.set_task(None)
    folder = Path(spec["folder"])
    image_path, coded_path = folder / "image.png", folder / "image.icmh"
    if spec["operation"] == "compress":
        tensor_to_pil(test_image(spec["height"], spec["width"])).save(image_path)
    encoder, decoder = Encoder(codec, pretrained=True), Decoder(codecs=[codec])
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
    start_kb = _status_kb("VmRSS")
    if spec["operation"] == "compress":
        coded_path.write_bytes(encoder.encode(image_path).data)
    else:
        decoded = decoder.decode(coded_path.read_bytes())
        write_png(decoded.image, folder / "decoded.png", decoded.info)
    peak_kb = _status_kb("VmHWM")
    return {"start_mb": start_kb * 1e3 / MB, "peak_mb": peak_kb * 1e3 / MB, "file_bytes": coded_path.stat().st_size}


def measure(codec: str, quality: int, human: bool, height: int, width: int, threads: int, folder: str) -> dict:
    """Peak memory of compress, then of decompress (of the file compress wrote), each in a fresh process."""
    out = {}
    for operation in OPERATIONS:
        spec = {"codec": codec, "quality": quality, "human": human, "operation": operation, "height": height,
                "width": width, "threads": threads, "folder": folder}
        process = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--child", json.dumps(spec)],
                                 capture_output=True, text=True)
        if process.returncode != 0:
            raise SystemExit(f"{codec} q{quality} {operation} {width}x{height} failed:\n{process.stderr[-3000:]}")
        out[operation] = json.loads(process.stdout.strip().splitlines()[-1])
    return out


def line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(fixed MB, MB per megapixel) of the straight line through the first and last points."""
    (x0, y0), (x1, y1) = points[0], points[-1]
    slope = (y1 - y0) / (x1 - x0)
    return y0 - slope * x0, slope


def main(argv: list[str] | None = None) -> dict:
    parser = arguments(__doc__.splitlines()[0], repeats=1)
    parser.add_argument("--child", help=argparse_hidden())
    parser.add_argument("--sizes", nargs=2, default=["1024x512", "1024x1024"], help="two sizes WIDTHxHEIGHT")
    parser.add_argument("--check", default=None, help="one larger size to compare with the line's prediction")
    parser.add_argument("--codec", action="append", default=None, help="CODEC:QUALITY (repeatable)")
    parser.add_argument("--human", action="store_true", help="also measure without adapters")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return {}
    from .codecs import parse_size

    machine = pin_threads(args.threads)
    sizes = [parse_size(s) for s in args.sizes]
    checks = [parse_size(args.check)] if args.check else []
    results, rows = [], []
    for item in args.codec or DEFAULT_CODECS:
        name, _, quality = item.partition(":")
        for human in (False, True) if args.human else (False,):
            with tempfile.TemporaryDirectory() as folder:
                runs = {(h, w): measure(name, int(quality), human, h, w, args.threads, folder) for h, w in sizes + checks}
            row = {"codec": name, "quality": int(quality), "adapters": not human, "runs": {f"{w}x{h}": r for (h, w), r in runs.items()}}
            for operation in OPERATIONS:
                points = [(h * w / 1e6, runs[(h, w)][operation]["peak_mb"]) for h, w in sizes]
                fixed, per_mp = line(points)
                row[operation] = {"fixed_mb": fixed, "mb_per_mp": per_mp}
                for h, w in checks:
                    predicted = fixed + per_mp * h * w / 1e6
                    row[operation]["check"] = {"size": f"{w}x{h}", "predicted_mb": predicted,
                                               "measured_mb": runs[(h, w)][operation]["peak_mb"]}
            results.append(row)
            rows.append(_row(row))
            print(table(HEADERS, rows[-1:]), flush=True)
    text = table(HEADERS, rows)
    finish("memory", machine | {"sizes": args.sizes, "check": args.check}, results, args.out, text)
    return {"results": results}


HEADERS = ["codec", "adapters", "compress MB/MP", "compress fixed MB", "decompress MB/MP", "decompress fixed MB", "check"]


def _row(row: dict) -> list:
    check = "; ".join(
        f"{op} {row[op]['check']['size']}: {row[op]['check']['measured_mb']:.0f} MB (line: {row[op]['check']['predicted_mb']:.0f})"
        for op in OPERATIONS if "check" in row[op]
    )
    return [f"{row['codec']} q{row['quality']}", "yes" if row["adapters"] else "no", row["compress"]["mb_per_mp"],
            row["compress"]["fixed_mb"], row["decompress"]["mb_per_mp"], row["decompress"]["fixed_mb"], check or "-"]


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
