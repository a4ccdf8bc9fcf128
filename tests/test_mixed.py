"""Mixed-task batches (issue 28): every image's bytes and pixels are those of coding it alone."""

from __future__ import annotations

import pytest
import torch

from icmh_hub import InvalidArgumentError, attach, build_adapters, build_base
from icmh_hub.codecs.demo import DEMO_CODEC
from icmh_hub.core.mixed import compress_mixed, decompress_mixed, forward_mixed, task_groups
from icmh_hub.demo.proxy import make_proxy

Q = 2
TASKS = ["cls", None, "det", "cls", "human"]


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    sets = {task: build_adapters(DEMO_CODEC, Q, middle_dim=8, init="reference", task=task) for task in ("cls", "det")}
    return attach(build_base(DEMO_CODEC, Q), DEMO_CODEC, sets).eval()


@pytest.fixture(scope="module")
def images():
    return make_proxy(5, 64, seed=3).images


def alone(codec, images, what):
    """Each image coded on its own with its task: its strings, decoded pixels or forward outputs."""
    out = []
    for i, task in enumerate(TASKS):
        with codec.using(task), torch.no_grad():
            one = images[i : i + 1]
            if what == "forward":
                out.append(codec(one))
                continue
            coded = codec.compress(one)
            out.append(coded["strings"] if what == "strings" else codec.decompress(coded["strings"], coded["shape"])["x_hat"])
    return out


def test_groups_keep_first_appearance_order_and_human_is_none():
    assert task_groups(TASKS, 5) == {"cls": [0, 3], None: [1, 4], "det": [2]}


def test_compress_gives_each_image_the_bytes_of_coding_it_alone(codec, images):
    with torch.no_grad():
        mixed = compress_mixed(codec, images, TASKS)
    singles = alone(codec, images, "strings")
    for i, single in enumerate(singles):
        assert [kind[i] for kind in mixed["strings"]] == [kind[0] for kind in single]
    # the tasks really differ: the same image coded for cls and for people gives other bytes
    with codec.using(None), torch.no_grad():
        assert codec.compress(images[:1])["strings"][0][0] != mixed["strings"][0][0]


def test_decompress_gives_each_image_the_pixels_of_decoding_it_alone(codec, images):
    with torch.no_grad():
        mixed = compress_mixed(codec, images, TASKS)
        pixels = decompress_mixed(codec, mixed["strings"], mixed["shape"], TASKS)["x_hat"]
    for i, single in enumerate(alone(codec, images, "x_hat")):
        assert torch.equal(pixels[i : i + 1], single), i


def test_forward_gives_each_image_its_own_outputs(codec, images):
    with torch.no_grad():
        mixed = forward_mixed(codec, images, TASKS)
    for i, single in enumerate(alone(codec, images, "forward")):
        assert torch.equal(mixed["x_hat"][i : i + 1], single["x_hat"])
        for key in ("y", "z"):
            assert torch.equal(mixed["likelihoods"][key][i : i + 1], single["likelihoods"][key])


def test_gradients_flow_back_through_a_mixed_forward(codec, images):
    x = images[:3].clone().requires_grad_()
    codec.train()  # noise instead of rounding, as in training
    try:
        forward_mixed(codec, x, TASKS[:3])["x_hat"].sum().backward()
    finally:
        codec.eval()
    assert all(x.grad[i].abs().sum() > 0 for i in range(3))


@pytest.mark.parametrize("tasks, message", [
    (["cls"], "1 entries for a batch of 5"),
    ("cls", "one task"),
    ([1, None, None, None, None], r"tasks\[0\] is 1"),
])
def test_bad_task_lists_are_refused_in_one_line(codec, images, tasks, message):
    with pytest.raises(InvalidArgumentError, match=message):
        compress_mixed(codec, images, tasks)


def test_an_unknown_task_names_the_ones_held(codec, images):
    with pytest.raises(Exception, match="cls"):
        compress_mixed(codec, images, ["seg", None, None, None, None])


def test_cli_codes_each_file_for_the_task_its_map_names(tmp_path):
    import json

    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from icmh_hub.cli import main
    from icmh_hub.formats.bitstream import read_header

    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    (tmp_path / "map.json").write_text(json.dumps({"a.png": "det", str(tmp_path / "c.png"): "human"}))
    fast = ["--codec", "mbt2018-mean", "--q", "1", "--no-pretrained", "--task", "cls"]
    run = lambda *args: CliRunner().invoke(main, [str(a) for a in args])  # noqa: E731
    result = run("compress", *(tmp_path / f"{n}.png" for n in "abc"), "-o", tmp_path / "o", *fast,
                 "--task-per-file", tmp_path / "map.json")
    assert result.exit_code == 0, result.output
    tasks = {n: read_header((tmp_path / "o" / f"{n}.icmh").read_bytes()).task for n in "abc"}
    assert tasks == {"a": "det", "b": "cls", "c": None}
    alone = run("compress", tmp_path / "a.png", "-o", tmp_path / "alone.icmh", *fast[:-1], "det")
    assert alone.exit_code == 0 and (tmp_path / "alone.icmh").read_bytes() == (tmp_path / "o" / "a.icmh").read_bytes()
    (tmp_path / "bad.json").write_text(json.dumps({"typo.png": "det"}))
    result = run("compress", tmp_path / "a.png", "-o", tmp_path / "p", *fast, "--task-per-file", tmp_path / "bad.json")
    assert result.exit_code != 0 and "'typo.png' is none of the input files" in result.output


def test_the_adapted_codec_takes_tasks_in_its_own_methods(codec, images):
    """``codec.compress(x, tasks=...)``, ``decompress(..., tasks=...)`` and ``codec(x, tasks=...)``
    are the mixed functions (the public API, as PEFT's ``adapter_names=``)."""
    with torch.no_grad():
        ours = codec.compress(images, tasks=TASKS)
        assert ours["strings"] == compress_mixed(codec, images, TASKS)["strings"]
        pixels = codec.decompress(ours["strings"], ours["shape"], tasks=TASKS)["x_hat"]
        assert torch.equal(pixels, decompress_mixed(codec, ours["strings"], ours["shape"], TASKS)["x_hat"])
        assert torch.equal(codec(images, tasks=TASKS)["x_hat"], forward_mixed(codec, images, TASKS)["x_hat"])
