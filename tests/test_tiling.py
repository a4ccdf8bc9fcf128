"""Tiled coding (format version 3): tiles are independent images in one file, decoded tile by tile
into the output; the same bytes with parallel workers; the grid chosen from the pixel limit."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from icmh_hub import BitstreamError, InvalidArgumentError, load
from icmh_hub.cli import main
from icmh_hub.coding import Decoder, Encoder
from icmh_hub.errors import ImageTooLargeError
from icmh_hub.formats.bitstream import layer_bytes, strip, unpack_tiles
from icmh_hub.tiling import default_tile

from .conftest import make_image
from .test_crafted import _spread, _write


@pytest.fixture(scope="module")
def codec():
    """mbt2018-mean q1 with cls adapters, random weights spread over many bins."""
    return _spread(load("mbt2018-mean", "cls", 1, pretrained=False))


@pytest.fixture(scope="module")
def image():
    return make_image(150, 200, seed=7)


@pytest.fixture(scope="module")
def tiled(codec, image):
    return Encoder(codec, pretrained=True, tile=64).encode(image)


def test_tiles_are_independent_images(codec, image, tiled):
    """Each tile of the decoded picture is what coding that crop alone gives, bit for bit, and a
    second decode gives the same pixels."""
    assert tiled.header.tile == (64, 64) and len(tiled.header.tile_boxes()) == 12  # 3 rows x 4 columns
    decoder = Decoder(codecs=[codec])
    picture = decoder.decode(tiled.data).image
    assert picture.shape == image.shape
    assert torch.equal(picture, decoder.decode(tiled.data).image)
    whole = Encoder(codec, pretrained=True, tile=False)
    for top, left, height, width in (tiled.header.tile_boxes()[i] for i in (0, 7, 11)):  # inner, last column, corner
        alone = whole.encode(image[..., top : top + height, left : left + width])
        assert torch.equal(picture[..., top : top + height, left : left + width], decoder.decode(alone.data).image)


def test_parallel_workers_give_the_same_bytes(codec, image, tiled):
    assert Encoder(codec, pretrained=True, tile=64, workers=2).encode(image).data == tiled.data


def test_the_grid_comes_from_the_pixel_limit(codec):
    """Above max_pixels an image is tiled with the default tile (a multiple of 64 whose square is
    at most half the limit); tile=False refuses it instead; below, it is coded whole."""
    x = make_image(100, 140, seed=1)
    assert default_tile(9000, 64) == 64 and default_tile(10_000_000, 64) == 2176
    auto = Encoder(codec, pretrained=True, max_pixels=9000).encode(x)
    assert auto.header.tile == (64, 64) and auto.header.padded_height == 128
    assert Encoder(codec, pretrained=True, max_pixels=20_000).encode(x).header.tile is None
    with pytest.raises(ImageTooLargeError, match="more than the limit"):
        Encoder(codec, pretrained=True, max_pixels=9000, tile=False).encode(x)
    for bad in (100, 0, -64, True):
        with pytest.raises(InvalidArgumentError, match="multiple of 64"):
            Encoder(codec, pretrained=True, tile=bad)
    with pytest.raises(InvalidArgumentError, match="at most 64"):
        Encoder(codec, pretrained=True, max_pixels=9000, tile=128)
    with pytest.raises(InvalidArgumentError, match="workers"):
        Encoder(codec, workers=0)


def test_layered_tiled_files_strip_to_their_base_layers():
    """A scalable codec's tiled file: all base layers, then all enhancement layers, so strip is
    still a cut; the stripped file decodes to the same machine picture."""
    codec = _spread(load("mbt2018-mean", "seg", 1, pretrained=False, variant="scalable-sfma"))
    x = make_image(70, 130, seed=2)
    data = Encoder(codec, pretrained=True, tile=64).encode(x).data
    header, parts = unpack_tiles(data)
    assert header.layered and header.layers == ("base", "enhancement") and len(parts) == 6
    base = strip(data)
    assert data.startswith(base) and unpack_tiles(base)[0].layers == ("base",)
    assert layer_bytes(data)["base"] == layer_bytes(base)["base"]
    decoder = Decoder(codecs=[codec])
    machine = decoder.decode(base)
    assert machine.layer == "base" and torch.equal(machine.image, decoder.decode(data, layer="base").image)
    assert decoder.decode(data).layer == "full"


def test_tiles_that_do_not_fit_the_codec_are_refused(codec, tiled):
    """A grid whose inner tiles are not multiples of the pad multiple does not fit the codec."""
    header, parts = unpack_tiles(tiled.data)
    strings, shapes = [part[1] for part in parts], [part[2] for part in parts]
    with pytest.raises(BitstreamError, match="padding in this file does not fit"):
        Decoder(codecs=[codec]).decode(_write(header, strings, shapes, tile=(50, 50)))  # also 3 x 4 tiles


def test_cli_tile_options(tmp_path, codec):
    source = tmp_path / "a.png"
    Image.fromarray((make_image(90, 130, seed=3)[0].permute(1, 2, 0) * 255).byte().numpy()).save(source)
    runner = CliRunner()
    coded = runner.invoke(main, ["compress", str(source), "-o", str(tmp_path / "a.icmh"), "--q", "1", "--task", "cls",
                                 "--no-pretrained", "--tile", "64"])
    assert coded.exit_code == 0, coded.output
    assert unpack_tiles((tmp_path / "a.icmh").read_bytes())[0].tile == (64, 64)
    decoded = runner.invoke(main, ["decompress", str(tmp_path / "a.icmh"), "-o", str(tmp_path / "b.png")])
    assert decoded.exit_code == 0, decoded.output
    assert Image.open(tmp_path / "b.png").size == (130, 90)
    both = runner.invoke(main, ["compress", str(source), "-o", str(tmp_path / "c.icmh"), "--no-pretrained", "--tile", "64", "--no-tile"])
    assert both.exit_code != 0 and "contradict" in both.output
