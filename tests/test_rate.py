import math

import torch

from icmh_hub import load
from icmh_hub.core.rate import actual_bpp, estimated_bpp, string_bytes

from .conftest import build_pair, make_image


def test_estimated_bpp_of_known_likelihoods():
    # 16 latents at likelihood 1/2 (1 bit each) and 4 at 1/4 (2 bits): 24 bits over 8 pixels
    likelihoods = {"y": torch.full((1, 1, 4, 4), 0.5), "z": torch.full((1, 1, 2, 2), 0.25)}
    assert math.isclose(estimated_bpp(likelihoods, 8).item(), 3.0)


def test_string_bytes_walks_nested_lists():
    assert string_bytes([[b"abc", b"d"], [b"ef"]]) == 6


def test_estimate_and_real_bitstream_agree_on_a_codec():
    model, _ = build_pair("mbt2018-mean", 1)
    image = make_image(128, 128)
    with torch.no_grad():
        estimate = estimated_bpp(model(image)["likelihoods"], 128 * 128).item()
        actual = actual_bpp(model.compress(image)["strings"], 128 * 128)
    # an untrained codec's entropy model fits its latents badly (many escape codes, scales at
    # the lower bound), so only rough agreement can be asked of it; trained codecs agree closely
    assert estimate > 0.05 and abs(actual - estimate) / estimate < 0.3


def test_random_weights_are_the_same_in_every_call():
    a, b = load("mbt2018-mean", task="cls", q=1, pretrained=False), load("mbt2018-mean", task="cls", q=1, pretrained=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
