"""benchmarks.real_photos: split by photograph, crops at the protocol size, a manifest that checks out."""

from __future__ import annotations

import hashlib
import json

from PIL import Image

from benchmarks.real_photos import Photo, build, gather


def _photo(name: str, size: tuple[int, int], colour: tuple[int, int, int]) -> Photo:
    return Photo(name, "test", "CC0", lambda: Image.new("RGB", size, colour))


def test_split_is_by_photograph_and_manifest_matches_files(tmp_path):
    photos = [_photo(f"p{i}", (160 + 32 * i, 96), (20 * i, 100, 50)) for i in range(6)]
    manifest = build(tmp_path, crop=64, short_side=96, share=0.5, seed=1, photos=photos)
    train, held = (set(manifest["photographs"][side]) for side in ("train", "heldout"))
    assert train and held and not train & held and train | held == {p.name for p in photos}
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")}
    assert on_disk == {f["file"] for f in manifest["files"]}
    for record in manifest["files"]:
        path = tmp_path / record["file"]
        assert record["split"] == path.parent.name and record["photograph"] in manifest["photographs"][record["split"]]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
        assert Image.open(path).size == (64, 64) and record["licence"] == "CC0"
    assert json.loads((tmp_path / "manifest.json").read_text())["counts"] == manifest["counts"]
    assert manifest["counts"]["heldout"] >= 0.5 * sum(manifest["counts"].values())


def test_photographs_are_scaled_down_never_up(tmp_path):
    manifest = build(tmp_path, crop=64, short_side=128, photos=[_photo("big", (512, 256), (1, 2, 3)), _photo("small", (100, 70), (4, 5, 6))])
    per_photo = {name: sum(f["photograph"] == name for f in manifest["files"]) for name in ("big", "small")}
    assert per_photo == {"big": 8, "small": 1}  # 256x128 -> 4 x 2 tiles; 100x70 kept -> one tile


def test_every_gathered_photograph_names_its_package_and_licence():
    photos = gather()
    assert any(p.package == "scikit-image" for p in photos)
    assert all(p.licence and p.package for p in photos) and len({p.name for p in photos}) == len(photos)
