"""Tiled coding: its rate cost and seams on photographs, and a 36 MP photo within the memory budget.

``photos`` codes photographs whole and in tiles at the same quality, and reports
bpp (whole file, headers included) of both, and PSNR in a band of ``--band`` pixels either side
of the tile borders against PSNR elsewhere (in both decodes, so a seam shows as a band that
loses more in the tiled one than in the whole one). Codecs: the photo zoo's mbt2018-mean-photo
(trained on photo crops) on photographs it was not trained on, the demo zoo's mbt2018-mean-demo
(trained on 64x64 proxy images), both with their cls adapters (real rates and pictures), and mbt2018-mean q3 with
seeded random weights and random cls adapters on the first three (rates only: its pictures are
noise).

``big`` codes a 6000x6000 photo (astronaut, upscaled) with ``icmh-hub compress`` (mbt2018-mean
q3, random weights, cls adapters: default tiling), decodes it with ``icmh-hub decompress``, and
compresses it again; each command is its own process under ``/usr/bin/time -v`` (peak RSS and
wall time of the whole command), and the two files must be the same bytes.

    python -m benchmarks.tiling photos [--tiles 128 256] [--band 4] [--codec mbt2018-mean-photo] [--human]
    python -m benchmarks.tiling big [--side 6000]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from .common import arguments, finish, pin_threads, table

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
# mbt2018-mean-photo was trained on crops of real photographs: code it on photographs it was not
# trained on, the held-out scikit-image ones and (when installed) held-out wallpapers at 1280 lines
HELD_OUT = ("chelsea", "rocket", "immunohistochemistry", "plasma-Kite", "plasma-EveningGlow")
CODECS = (("mbt2018-mean-photo", 3, True, HELD_OUT), ("mbt2018-mean-demo", 3, True, PHOTOS),
          ("mbt2018-mean", 3, False, PHOTOS[:3]))  # name, q, trained, photos


def photo(name: str) -> torch.Tensor | None:
    """A scikit-image photograph, or a Plasma wallpaper scaled to a short side of 1280, as a
    (1, 3, H, W) tensor in [0, 1] (None: the wallpaper package is not installed)."""
    import numpy as np
    import skimage.data

    if name.startswith("plasma-"):
        from .real_photos import gather

        found = [p for p in gather() if p.name == name]
        if not found:
            return None
        image = found[0].load().convert("RGB")
        scale = 1280 / min(image.size)
        array = np.asarray(image.resize((round(image.width * scale), round(image.height * scale))))
    else:
        array = getattr(skimage.data, name)()
    return torch.from_numpy(array[..., :3].copy()).permute(2, 0, 1)[None].float() / 255


def border_mask(height: int, width: int, tile: int, band: int) -> torch.Tensor:
    """True within ``band`` pixels of an inner tile border."""
    rows, columns = torch.arange(height), torch.arange(width)
    near_row = torch.zeros(height, dtype=torch.bool)
    near_column = torch.zeros(width, dtype=torch.bool)
    for edge in range(tile, height, tile):
        near_row |= (rows >= edge - band) & (rows < edge + band)
    for edge in range(tile, width, tile):
        near_column |= (columns >= edge - band) & (columns < edge + band)
    return near_row[:, None] | near_column[None, :]


def psnr(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    error = ((x - y) ** 2).mean(dim=1)[0][mask].mean().item()
    return 10 * torch.log10(torch.tensor(1 / max(error, 1e-12))).item()


def photos(tiles: list[int], band: int, codecs: list[str] | None = None, human: bool = False) -> list[dict]:
    import icmh_hub
    from icmh_hub.coding import Decoder, Encoder

    results = []
    for codec_name, quality, pretrained, names in [c for c in CODECS if not codecs or c[0] in codecs]:
        codec = icmh_hub.load(codec_name, task="cls", q=quality, pretrained=pretrained).set_task(None if human else "cls")
        decoder = Decoder(codecs=[codec])
        for name in names:
            x = photo(name)
            if x is None:
                continue
            whole = Encoder(codec, pretrained=pretrained, tile=False).encode(x)
            whole_image = decoder.decode(whole.data).image
            for tile in tiles:
                tiled = Encoder(codec, pretrained=pretrained, tile=tile).encode(x)
                tiled_image = decoder.decode(tiled.data).image
                mask = border_mask(*x.shape[-2:], tile, band)
                results.append({
                    "codec": f"{codec_name} q{quality}" + ("" if pretrained else " (random)") + (", human" if human else ", cls"), "photo": name,
                    "size": f"{x.shape[-1]}x{x.shape[-2]}", "tile": tile, "tiles": len(tiled.header.tile_boxes()),
                    "bpp_whole": whole.bpp, "bpp_tiled": tiled.bpp, "rate_cost": tiled.bpp / whole.bpp - 1,
                    "psnr_whole_border": psnr(whole_image, x, mask), "psnr_whole_rest": psnr(whole_image, x, ~mask),
                    "psnr_tiled_border": psnr(tiled_image, x, mask), "psnr_tiled_rest": psnr(tiled_image, x, ~mask),
                })
                print(results[-1], flush=True)
    return results


def timed(command: list[str]) -> dict:
    """Run ``command`` under /usr/bin/time -v: peak RSS (MB) and wall seconds."""
    process = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    if process.returncode:
        raise RuntimeError(f"{command} failed:\n{process.stdout}\n{process.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", process.stderr).group(1))
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", process.stderr).group(1)
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(clock.split(":"))))
    return {"peak_rss_mb": rss / 1e3, "wall_s": seconds, "output": process.stdout.strip().splitlines()[-1]}


def big(side: int, threads: int) -> list[dict]:
    from PIL import Image

    from icmh_hub.coding import MEMORY_BUDGET_MB

    cli = [sys.executable, "-m", "icmh_hub.cli"]
    coding = ["--codec", "mbt2018-mean", "--q", "3", "--task", "cls", "--no-pretrained"]
    env_threads = {"OMP_NUM_THREADS": str(threads)}
    os.environ.update(env_threads)
    with tempfile.TemporaryDirectory() as folder:
        source, first, second, decoded = (Path(folder) / name for name in ("big.png", "a.icmh", "b.icmh", "big-out.png"))
        picture = (photo("astronaut")[0].permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(picture).resize((side, side), Image.BICUBIC).save(source)
        rows = [{"step": "compress", **timed([*cli, "compress", str(source), "-o", str(first), *coding])}]
        rows.append({"step": "decompress", **timed([*cli, "decompress", str(first), "-o", str(decoded)])})
        rows.append({"step": "compress again", **timed([*cli, "compress", str(source), "-o", str(second), *coding])})
        same = first.read_bytes() == second.read_bytes()
        for row in rows:
            row.update(pixels=side * side, file_bytes=first.stat().st_size, same_bytes=same, budget_mb=MEMORY_BUDGET_MB)
    return rows


def main() -> None:
    parser = arguments(__doc__.splitlines()[0], repeats=1)
    parser.add_argument("what", choices=["photos", "big"])
    parser.add_argument("--tiles", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--band", type=int, default=4)
    parser.add_argument("--side", type=int, default=6000)
    parser.add_argument("--codec", action="append", choices=[c[0] for c in CODECS], help="photos: these codecs only (repeatable)")
    parser.add_argument("--human", action="store_true", help="photos: code for people (no adapters) instead of with the cls adapters")
    args = parser.parse_args()
    machine = pin_threads(args.threads)
    if args.what == "photos":
        results = photos(args.tiles, args.band, args.codec, args.human)
        text = table(["codec", "photo", "size", "tile", "tiles", "bpp whole", "bpp tiled", "cost", "border whole", "rest whole",
                      "border tiled", "rest tiled"],
                     [[r["codec"], r["photo"], r["size"], r["tile"], r["tiles"], r["bpp_whole"], r["bpp_tiled"],
                       f"{100 * r['rate_cost']:+.1f}%", r["psnr_whole_border"], r["psnr_whole_rest"], r["psnr_tiled_border"],
                       r["psnr_tiled_rest"]] for r in results])
    else:
        results = big(args.side, args.threads)
        text = table(["step", "pixels", "peak RSS (MB)", "wall (s)", "file bytes", "same bytes"],
                     [[r["step"], r["pixels"], r["peak_rss_mb"], r["wall_s"], r["file_bytes"], r["same_bytes"]] for r in results])
    finish(f"tiling_{args.what}", machine, results, args.out, text)


if __name__ == "__main__":
    main()
