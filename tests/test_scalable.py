"""Scalable coding (issue 19): the layered codec, its mask, its training forward."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from icmh_hub import InvalidArgumentError, attach, build_adapters, build_base, detach, get_codec
from icmh_hub.codecs.demo import DEMO_CODEC
from icmh_hub.core.scalable import ScalableAdapters
from icmh_hub.coding import Decoder, Encoder
from icmh_hub.core.scalable import compress_layers, decompress_layers, entropy_parameters
from icmh_hub.formats.bitstream import strip
from icmh_hub.demo.proxy import make_proxy
from icmh_hub.training.forward import SampleNoise
from icmh_hub.training.scalable import scalable_training_forward

from .conftest import coded, hooks_left

Q = 2


def scalable(variant: str = "scalable-sfma", keep_logit: float = 0.0, seed: int = 0) -> ScalableAdapters:
    """Random scalable adapters whose mask keeps about half of y (an untrained generator keeps
    nearly all of it)."""
    torch.manual_seed(seed)
    adapters = build_adapters(DEMO_CODEC, Q, variant=variant, middle_dim=8, init="reference", task="cls")
    torch.nn.init.constant_(adapters.mask_generator.out.bias, keep_logit)
    return adapters


@pytest.fixture(scope="module")
def images():
    return make_proxy(3, 64, seed=4).images


def test_variants_are_decoder_only_with_a_mask_generator():
    sfma, mask_only = scalable(), scalable("scalable-mask")
    assert sorted(sfma.points) == ["decoder_1", "decoder_2", "decoder_3"] and mask_only.points == {}
    assert sfma.layout()["variant"] == "scalable-sfma" and sfma.layout()["latent_channels"] == 96
    assert mask_only.num_parameters() == sum(p.numel() for p in mask_only.mask_generator.parameters()) > 0
    with pytest.raises(InvalidArgumentError, match="decoder only"):
        build_adapters(DEMO_CODEC, Q, variant="scalable-sfma", sides=("encoder", "decoder"))


@pytest.mark.parametrize("codec", ["mbt2018", "cheng2020-anchor", "elic2022"])
def test_autoregressive_codecs_are_refused_in_one_line(codec):
    with pytest.raises(InvalidArgumentError, match="context model.*cannot be split") as info:
        build_adapters(codec, 1, variant="scalable-sfma")
    assert "\n" not in str(info.value) and "mbt2018-mean" in str(info.value)


def test_full_layers_decode_to_the_base_codecs_picture_bit_for_bit(images):
    codec = attach(build_base(DEMO_CODEC, Q), DEMO_CODEC, {"cls": scalable()})
    untouched = build_base(DEMO_CODEC, Q)
    with torch.no_grad():
        layers = codec.compress(images)
        human = codec.decompress(layers["strings"], layers["shape"], layer="full")["x_hat"]
        base_layer = codec.decompress([layers["strings"][0], None, layers["strings"][2]], layers["shape"])
    machine = base_layer["x_hat"]
    _, reference = coded(untouched, images)
    assert torch.equal(human, reference)
    assert not torch.equal(machine, reference)  # the base layer alone, through the decoder SFMAs
    sent = base_layer["mask"].flatten(1).sum(1).tolist()  # the elements the base layer carries
    assert all(0 < n < 96 * 4 * 4 for n in sent)  # the mask splits y
    # the two layers together cost about what the plain codec's y string costs
    plain = untouched.compress(images)["strings"][0]
    together = [len(a) + len(b) for a, b in zip(layers["strings"][0], layers["strings"][1])]
    assert all(abs(t - len(p)) <= 8 for t, p in zip(together, plain)), (together, [len(p) for p in plain])


def test_mask_only_variant_decodes_the_base_layer_without_adapters(images):
    adapters = scalable("scalable-mask")
    codec = attach(build_base(DEMO_CODEC, Q), DEMO_CODEC, {"cls": adapters})
    with torch.no_grad():
        layers = codec.compress(images)
        machine = codec.decompress(layers["strings"], layers["shape"])["x_hat"]
        plain = decompress_layers(codec.base, adapters, layers["strings"], layers["shape"], "base")["x_hat"]
    assert torch.equal(machine, plain)


def test_empty_and_full_masks_code(images):
    for keep, empty in ((-50.0, 0), (50.0, 1)):
        adapters = scalable(keep_logit=keep)
        codec = attach(build_base(DEMO_CODEC, Q), DEMO_CODEC, {"cls": adapters})
        with torch.no_grad():
            layers = codec.compress(images)
            human = codec.decompress(layers["strings"], layers["shape"], layer="full")["x_hat"]
        assert all(s == b"" for s in layers["strings"][empty])  # one layer holds everything
        _, reference = coded(build_base(DEMO_CODEC, Q), images)
        assert torch.equal(human, reference)


def test_the_integer_mask_follows_the_float_network(images):
    """The exact fixed-point evaluation is the float network up to rounding of its weights."""
    adapters = scalable()
    base = build_base(DEMO_CODEC, Q)
    generator = adapters.mask_generator
    with torch.no_grad():
        z = base.h_a(base.g_a(images))
        z_hat = base.entropy_bottleneck.decompress(base.entropy_bottleneck.compress(z), z.shape[-2:])
        scales, means = entropy_parameters(base, z_hat, get_codec(DEMO_CODEC))
        features = generator.features(base.gaussian_conditional.build_indexes(scales), means)
        logits = generator.logits(features)
    decided = generator.decide(features)
    differ = decided != (logits > 0)
    # the weights are rounded to 2**-16: only logits within about 1e-3 of zero may come out differently
    assert logits[differ].abs().max() < 1e-3 if differ.any() else True
    assert differ.float().mean() < 0.01


def test_the_decoder_recomputes_the_encoders_mask_in_another_process(images, tmp_path):
    """Encoder and decoder in different processes with different thread counts (which change float
    summation orders) agree on every element of the mask."""
    adapters = scalable()
    codec = attach(build_base(DEMO_CODEC, Q), DEMO_CODEC, {"cls": adapters})
    with torch.no_grad():
        layers = codec.compress(images)
        here = decompress_layers(codec.base, adapters, layers["strings"], layers["shape"])["mask"]
    torch.save({"adapters": adapters.state_dict(), "strings": layers["strings"], "shape": tuple(layers["shape"])}, tmp_path / "coded.pt")
    script = textwrap.dedent(f"""
        import torch
        torch.set_num_threads(2)
        from icmh_hub import build_adapters, build_base
        from icmh_hub.core.scalable import decompress_layers
        saved = torch.load({str(tmp_path / "coded.pt")!r}, weights_only=True)
        adapters = build_adapters({DEMO_CODEC!r}, {Q}, variant="scalable-sfma", middle_dim=8, task="cls")
        adapters.load_state_dict(saved["adapters"])
        out = decompress_layers(build_base({DEMO_CODEC!r}, {Q}), adapters, saved["strings"], saved["shape"], "full")
        torch.save(out["mask"], {str(tmp_path / "mask.pt")!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, env={"OMP_NUM_THREADS": "2", "PATH": ""})
    assert torch.equal(torch.load(tmp_path / "mask.pt", weights_only=True), here)


def test_detach_gives_back_the_codec_bit_for_bit(images):
    base, untouched = build_base(DEMO_CODEC, Q), build_base(DEMO_CODEC, Q)
    codec = attach(base, DEMO_CODEC, {"cls": scalable()})
    with torch.no_grad():
        codec.compress(images)
    back = detach(codec)
    assert hooks_left(back) == 0
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), untouched.state_dict().values()))
    assert coded(back, images)[0] == coded(untouched, images)[0]


def test_training_forward_counts_the_base_layer_and_trains_only_mask_and_decoder_adapters(images):
    adapters = scalable(keep_logit=0.0)
    base = build_base(DEMO_CODEC, Q)
    for p in base.parameters():
        p.requires_grad_(False)
    codec = attach(base, DEMO_CODEC, {"cls": adapters})
    out = scalable_training_forward(base, adapters, images, SampleNoise(0, 0, range(len(images))))
    mask = out["mask"]
    assert set(mask.detach().unique().tolist()) <= {0.0, 1.0} and 0 < mask.detach().mean() < 1
    bits_y = -torch.log2(out["likelihoods"]["y"])
    assert torch.all(bits_y[mask.detach() == 0] == 0)  # unsent elements cost nothing
    (bits_y.sum() + out["x_hat"].square().sum()).backward()
    assert adapters.mask_generator.out.weight.grad.abs().sum() > 0  # through the straight-through mask
    assert all(p.grad is not None for p in adapters.adapters.parameters())
    assert all(p.grad is None for p in base.parameters())
    again = scalable_training_forward(base, adapters, images, SampleNoise(0, 0, range(len(images))))
    assert torch.equal(again["mask"], out["mask"])  # the Gumbel noise is the seeded one
    assert codec.tasks == ["cls"]


# -- files and the command line -------------------------------------------------------------------


@pytest.fixture(scope="module")
def layered_codec():
    """The shipped demo base with random scalable adapters keeping about half of y."""
    return attach(build_base(DEMO_CODEC, Q), DEMO_CODEC, {"cls": scalable()}, quality=Q).eval()


def test_layered_file_round_trip_strip_and_human_picture(layered_codec, images):
    """One file: base layer first (a valid file by itself), the human picture from both layers
    equal bit for bit to the base codec's decode of an ordinary (single-layer) file."""
    image = images[:1]
    encoded = Encoder(layered_codec).encode(image)
    header = encoded.header
    assert (header.variant, header.layered, encoded.data[4]) == ("scalable-sfma", True, 3)
    sizes = encoded.layer_bytes
    assert list(sizes) == ["header", "base", "enhancement"] and min(sizes.values()) > 20
    decoder = Decoder(codecs=[layered_codec])
    human, machine = decoder.decode(encoded.data), decoder.decode(encoded.data, "base")
    assert (human.layer, machine.layer) == ("full", "base")
    plain = attach(build_base(DEMO_CODEC, Q), DEMO_CODEC, {}, quality=Q).eval()
    ordinary = Encoder(plain).encode(image)
    assert not ordinary.header.layered and list(ordinary.layer_bytes) == ["header", "all"]
    assert torch.equal(human.image, Decoder().decode(ordinary.data).image)  # the base codec's picture
    base_only = strip(encoded.data)
    assert encoded.data.startswith(base_only) and len(base_only) == sizes["header"] + sizes["base"]
    stripped = Decoder(codecs=[layered_codec]).decode(base_only)
    assert stripped.layer == "base" and torch.equal(stripped.image, machine.image)
    assert not torch.equal(machine.image, human.image)
    with pytest.raises(InvalidArgumentError, match="base layer only"):
        decoder.decode(base_only, "full")
    with pytest.raises(InvalidArgumentError, match="single layer"):
        decoder.decode(ordinary.data, "base")
    with pytest.raises(InvalidArgumentError, match="force-task"):
        Decoder(force_task="human", codecs=[layered_codec]).decode(encoded.data)


def test_cli_compress_strip_decompress(tmp_path):
    """The commands of the README, with seeded random weights: bytes per layer, human picture by
    default, machine picture with --layer base and from the stripped file, one line for --layer
    full on it, for stripping a single-layer file and for an autoregressive codec."""
    from click.testing import CliRunner
    from PIL import Image

    from icmh_hub.cli import main

    Image.fromarray((make_proxy(1, 64, seed=1).images[0].permute(1, 2, 0).numpy() * 255).astype("uint8")).save(tmp_path / "img.png")
    run = lambda *args: CliRunner().invoke(main, [str(a) for a in args])  # noqa: E731
    common = ["--codec", "mbt2018-mean", "--q", "1", "--task", "cls", "--no-pretrained"]
    done = run("compress", tmp_path / "img.png", "-o", tmp_path / "img.icmh", *common, "--variant", "scalable-sfma")
    assert done.exit_code == 0, done.output
    row = done.stdout.splitlines()[1].split()
    assert (row[2], row[4], row[5]) == ("base", "+", "enh")
    assert int(row[3]) + int(row[6]) < int(row[1])
    assert run("decompress", tmp_path / "img.icmh", "-o", tmp_path / "human.png").stdout.splitlines()[1].split()[4] == "full"
    assert run("decompress", tmp_path / "img.icmh", "-o", tmp_path / "machine.png", "--layer", "base").exit_code == 0
    done = run("strip", tmp_path / "img.icmh", "--layer", "base", "-o", tmp_path / "base.icmh")
    assert done.exit_code == 0 and (tmp_path / "img.icmh").read_bytes().startswith((tmp_path / "base.icmh").read_bytes())
    assert run("decompress", tmp_path / "base.icmh", "-o", tmp_path / "base.png").exit_code == 0
    assert (tmp_path / "base.png").read_bytes() == (tmp_path / "machine.png").read_bytes() != (tmp_path / "human.png").read_bytes()
    for args, message in (
        (("decompress", tmp_path / "base.icmh", "-o", tmp_path / "x.png", "--layer", "full"), "holds the base layer only"),
        (("strip", tmp_path / "img.icmh", "-o", tmp_path / "base.icmh"), "exists; pass --force"),
        (("compress", tmp_path / "img.png", "-o", tmp_path / "ar.icmh", "--codec", "mbt2018", "--q", "1", "--task", "cls",
          "--no-pretrained", "--variant", "scalable-sfma"), "cannot be split"),
    ):
        done = run(*args)
        errors = [line for line in done.stderr.splitlines() if "files failed" not in line]
        assert done.exit_code == 1 and len(errors) == 1 and message in errors[0], done.stderr
    assert run("compress", tmp_path / "img.png", "-o", tmp_path / "plain.icmh", *common).exit_code == 0
    done = run("strip", tmp_path / "plain.icmh", "-o", tmp_path / "plain-base.icmh")
    assert done.exit_code == 1 and "single layer" in done.stderr and not (tmp_path / "plain-base.icmh").exists()


def test_cli_trains_scalable_adapters_and_eval_reports_both_layers(tmp_path):
    """train --variant scalable-sfma writes its own file (a ScalableAdapters with the mask
    generator trained); eval with it reports the base layer's rate and accuracy and the whole
    file's rate and human PSNR (the base codec's: equal to eval --human's PSNR)."""
    import json

    from click.testing import CliRunner
    from PIL import Image

    from icmh_hub import load_adapters
    from icmh_hub.cli import main

    rng = torch.Generator().manual_seed(0)
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(2):
            pixels = (torch.rand(64, 64, 3, generator=rng) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "data" / label / f"{i}.png")
    run = lambda *args: CliRunner().invoke(main, [str(a) for a in args])  # noqa: E731
    base = ["--codec", "mbt2018-mean", "--q", "1", "--task", "cls", "--no-pretrained"]
    done = run("train", *base, "--data", tmp_path / "data", "--variant", "scalable-sfma", "--steps", "2", "--batch-size", "2",
               "--crop", "64", "--middle-dim", "8", "--quiet", "--out", tmp_path / "run")
    assert done.exit_code == 0, done.output
    path = tmp_path / "run" / "mbt2018-mean-cls-q1-scalable-sfma.safetensors"
    adapters = load_adapters(path)
    assert isinstance(adapters, ScalableAdapters) and adapters.variant == "scalable-sfma"
    untrained = build_adapters("mbt2018-mean", 1, variant="scalable-sfma", middle_dim=8)
    assert not torch.equal(adapters.mask_generator.out.weight, untrained.mask_generator.out.weight)
    evaluation = ["eval", *base, "--data", tmp_path / "data", "--size", "64"]
    done = run(*evaluation, "--adapter", path, "--json", tmp_path / "layers.json")
    assert done.exit_code == 0, done.output
    assert "bpp_full" in done.stdout and "the whole file's (the human picture)" in done.stdout
    metrics = json.loads((tmp_path / "layers.json").read_text())["metrics"]
    assert metrics["bpp_full"] >= metrics["bpp_actual"] > 0
    assert run(*evaluation, "--human", "--json", tmp_path / "human.json").exit_code == 0
    human = json.loads((tmp_path / "human.json").read_text())["metrics"]
    assert metrics["psnr_full"] == pytest.approx(human["psnr"], abs=1e-9)  # the human picture is the base codec's


@pytest.mark.parametrize("kept", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_layers_of_a_few_elements_code_safely(images, kept):
    """CompressAI's encoder overruns its buffer on strings of one or two symbols (heap corruption,
    measured: "double free or corruption" within 3000 one-symbol strings); short layers are padded
    to MIN_SYMBOLS symbols. Run in a subprocess so that a regression ends in a signal, not in a
    corrupted test process."""
    script = textwrap.dedent(f"""
        import torch
        from icmh_hub import attach, build_adapters, build_base
        from icmh_hub.core import scalable
        from icmh_hub.demo.proxy import make_proxy
        torch.manual_seed(0)
        adapters = build_adapters("{DEMO_CODEC}", {Q}, variant="scalable-mask", task="cls")
        images = make_proxy(2, 64, seed=4).images
        first = {{}}

        def mask(indexes, means):  # keep exactly {kept} elements of each image
            keep = torch.zeros(indexes.shape, dtype=torch.bool)
            keep.view(len(keep), -1)[:, :{kept}] = True
            return keep

        adapters.mask = mask
        codec = attach(build_base("{DEMO_CODEC}", {Q}), "{DEMO_CODEC}", {{"cls": adapters}}, quality={Q}).eval()
        for _ in range(100):
            layers = codec.compress(images)
            full = codec.decompress(layers["strings"], layers["shape"], layer="full")["x_hat"]
        plain = attach(build_base("{DEMO_CODEC}", {Q}), "{DEMO_CODEC}", {{}}, quality={Q}).eval()
        with torch.no_grad():
            out = plain.compress(images)
            assert torch.equal(full, plain.decompress(out["strings"], out["shape"])["x_hat"])
        assert all(len(s) > 0 for s in layers["strings"][0])
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])


def test_shipped_scalable_entries_load_and_decode_from_the_registry_alone(images):
    """The demo zoo's scalable entries: load by variant; a fresh decoder finds the adapters by the
    sha256 in the header; the plain entry stays what load() gives without a variant."""
    from icmh_hub import load
    from icmh_hub.hub.index import resolve

    codec = load(DEMO_CODEC, task="cls", q=Q, variant="scalable-sfma")
    assert isinstance(codec.adapters, ScalableAdapters) and codec.adapters.sha256
    assert resolve(DEMO_CODEC, "cls", Q).variant == "sfma"
    assert resolve(DEMO_CODEC, "seg", Q, variant="scalable-sfma").id == f"{DEMO_CODEC}/seg/q{Q}/scalable-sfma"
    encoded = Encoder(codec).encode(images[:1])
    assert encoded.header.adapter_kind == "file" and encoded.layer_bytes["base"] < encoded.layer_bytes["enhancement"] * 20
    machine = Decoder().decode(strip(encoded.data))
    assert machine.layer == "base" and torch.equal(machine.image, Decoder(codecs=[codec]).decode(encoded.data, "base").image)
