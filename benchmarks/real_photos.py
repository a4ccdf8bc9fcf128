"""A data set of real photographs gathered from installed packages, nothing downloaded.

    python -m benchmarks.real_photos --out data/real-photos

Sources (each kept only when its package is installed, each file's licence in the manifest):
scikit-image's ``data`` photographs (CC0 / public domain per their docstrings), scikit-learn's
``china.jpg`` and ``flower.jpg`` (CC-BY-2.0), and the photographs among Debian's
``plasma-workspace-wallpapers`` (LGPL-3.0 per each wallpaper's metadata; the package's
copyright file says GPL-2+ for all its files; renders and drawings are left out).

Every photograph is scaled down (never up) so its short side is at most ``--short-side``, then
cut into non-overlapping ``--crop`` x ``--crop`` crops. Photographs, not crops, are split between
``train/`` and ``heldout/`` (a seeded shuffle; held-out photographs are taken until they hold
``--heldout-share`` of the crops), so no photograph has crops on both sides. ``manifest.json``
lists every crop: its photograph, source package, licence, box and sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from icmh_hub.demo.photos import Photo, crops, skimage_photos

SKLEARN = {"china.jpg": "CC-BY-2.0 (danielbuechele, Flickr)", "flower.jpg": "CC-BY-2.0 (vultilion, Flickr)"}
WALLPAPERS = Path("/usr/share/wallpapers")
WALLPAPER_PHOTOS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
                    "OneStandsOut", "Path", "summer_1am")  # the photographs; the others are renders and drawings


def _sklearn_photos() -> Iterator[Photo]:
    try:
        import sklearn.datasets
    except ImportError:
        return
    folder = Path(sklearn.datasets.__file__).parent / "images"
    for name, licence in SKLEARN.items():
        if (folder / name).is_file():
            yield Photo(f"sklearn-{Path(name).stem}", "scikit-learn", licence, lambda path=folder / name: Image.open(path))


def _wallpaper_licence(folder: Path) -> str:
    metadata = folder / "metadata.json"
    declared = json.loads(metadata.read_text()).get("KPlugin", {}).get("License", "?") if metadata.is_file() else "?"
    return f"{declared} (wallpaper metadata; Debian copyright file: GPL-2+)"


def _largest(folder: Path) -> Path:
    return max((folder / "contents" / "images").iterdir(), key=lambda p: int(p.name.split("x")[0]))


def _wallpaper_photos() -> Iterator[Photo]:
    for name in WALLPAPER_PHOTOS:
        folder = WALLPAPERS / name
        if folder.is_dir():
            yield Photo(f"plasma-{name}", "plasma-workspace-wallpapers", _wallpaper_licence(folder),
                        lambda path=_largest(folder): Image.open(path))


def gather() -> list[Photo]:
    """Every photograph the installed packages hold, in a fixed order."""
    return [*skimage_photos(), *_sklearn_photos(), *_wallpaper_photos()]


def split(counts: dict[str, int], share: float, seed: int) -> set[str]:
    """Names of the held-out photographs: a seeded shuffle, taken until they hold ``share`` of the crops."""
    names = sorted(counts)
    random.Random(seed).shuffle(names)
    held, total = set(), sum(counts.values())
    for name in names:
        if sum(counts[n] for n in held) >= share * total:
            break
        held.add(name)
    return held


def build(out: Path, crop: int = 256, short_side: int = 1280, share: float = 0.5, seed: int = 0,
          photos: list[Photo] | None = None) -> dict:
    """Write train/ and heldout/ crops and manifest.json under ``out``; returns the manifest."""
    photos = gather() if photos is None else photos
    if not photos:
        raise SystemExit("no photographs found: install scikit-image (and scikit-learn, plasma-workspace-wallpapers)")
    tiles = {photo.name: crops(photo.load(), crop, short_side) for photo in photos}
    held = split({name: len(t) for name, t in tiles.items()}, share, seed)
    files = []
    for photo in photos:
        side = "heldout" if photo.name in held else "train"
        (out / side).mkdir(parents=True, exist_ok=True)
        for (left, top), tile in tiles[photo.name]:
            path = out / side / f"{photo.name}-{left}-{top}.png"
            tile.save(path)
            files.append({"file": str(path.relative_to(out)), "split": side, "photograph": photo.name, "package": photo.package,
                          "licence": photo.licence, "box": [left, top, crop, crop],
                          "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    manifest = {"crop": crop, "short_side": short_side, "seed": seed, "heldout_share": share,
                "photographs": {side: sorted({f["photograph"] for f in files if f["split"] == side}) for side in ("train", "heldout")},
                "counts": {side: sum(f["split"] == side for f in files) for side in ("train", "heldout")}, "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for train/, heldout/ and manifest.json.")
    parser.add_argument("--crop", type=int, default=256, help="Crop size (the protocol's 256).")
    parser.add_argument("--short-side", type=int, default=1280, help="Scale photographs down to this short side first.")
    parser.add_argument("--heldout-share", type=float, default=0.5, help="Share of the crops held out (by photograph).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if (args.out / "manifest.json").exists():
        raise SystemExit(f"{args.out} holds a data set already; give another --out or remove it")
    manifest = build(args.out, args.crop, args.short_side, args.heldout_share, args.seed)
    print(f"{manifest['counts']['train']} training crops from {len(manifest['photographs']['train'])} photographs, "
          f"{manifest['counts']['heldout']} held-out crops from {len(manifest['photographs']['heldout'])}: {args.out}")


if __name__ == "__main__":
    main()
