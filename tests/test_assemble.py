"""One assembler: every path that needs a codec builds its base through ``icmh_hub.assemble``, so a
user index that replaces a codec's base weights is honoured by load, eval, train and compress alike."""

from __future__ import annotations

import json
import shutil
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from icmh_hub import build_base, load, read_metadata
from icmh_hub._io import sha256_of
from icmh_hub.cli import main
from icmh_hub.codecs.demo import DEMO_CODEC
from icmh_hub.codecs.zoo import CHANNELS
from icmh_hub.core.identity import base_digest
from icmh_hub.demo.models import load_model, task_features
from icmh_hub.formats.bitstream import read_header
from icmh_hub.hub.index import INDEX_ENV
from icmh_hub.training.trainer import Trainer

from .conftest import make_image
from .test_evaluate import make_class_folder, save_png

Q = 2


@pytest.fixture
def other_base(tmp_path, monkeypatch):
    """A user index whose base_codecs item gives the demo codec at q2 the q1 weights; the digest
    those weights have; and the digest of the built-in q2 weights."""
    shipped = Path(str(files("icmh_hub.index") / "demo" / f"{DEMO_CODEC}-q1.safetensors"))
    weights = Path(shutil.copy(shipped, tmp_path / "my-q2-base.safetensors"))
    index = tmp_path / "my-index.json"
    index.write_text(json.dumps({"entries": [], "base_codecs": [{
        "codec": DEMO_CODEC, "q": Q, "source": {"kind": "local", "path": weights.name},
        "sha256": sha256_of(weights), "size": weights.stat().st_size}]}))
    builtin = base_digest(build_base(DEMO_CODEC, Q))
    monkeypatch.setenv(INDEX_ENV, str(index))
    expected = base_digest(build_base(DEMO_CODEC, 1))
    assert expected != builtin  # the override is visible
    return expected, builtin


def test_load_eval_train_and_compress_use_the_same_overridden_base(other_base, tmp_path):
    expected, builtin = other_base
    assert base_digest(load(DEMO_CODEC, task="cls", q=Q).base) == expected

    data = make_class_folder(tmp_path / "cls", classes=1, per_class=1)
    weights = tmp_path / "resnet50.pth"
    from icmh_hub.core.recognition import build_classifier

    torch.save(build_classifier(None).model.state_dict(), weights)  # a local task model: no download
    out = tmp_path / "eval.json"
    run = CliRunner().invoke(main, ["eval", "--codec", DEMO_CODEC, "--q", str(Q), "--task", "cls", "--data", str(data),
                                    "--size", "64", "--no-bitstream", "--task-weights", str(weights), "--json", str(out)])
    assert run.exit_code == 0, run.output
    assert json.loads(out.read_text())["base_digest"] == expected

    trainer = Trainer(DEMO_CODEC, Q, "cls", data, steps=1, batch_size=1, crop=64, progress=False, checkpoint_every=0,
                      out_dir=tmp_path / "run", features=task_features("cls", load_model("cls")))
    assert trainer.base_digest == expected
    assert read_metadata(trainer.fit())["info"]["training"]["base_digest"] == expected

    picture = tmp_path / "picture.png"
    save_png(make_image(64, 96), picture)
    coded = tmp_path / "picture.icmh"
    run = CliRunner().invoke(main, ["compress", str(picture), "-o", str(coded), "--codec", DEMO_CODEC, "--q", str(Q), "--task", "cls"])
    assert run.exit_code == 0, run.output
    assert read_header(coded.read_bytes()).base_digest == expected
    run = CliRunner().invoke(main, ["decompress", str(coded), "-o", str(tmp_path / "back.png")])
    assert run.exit_code == 0, run.output  # the decoder rebuilds the same overridden base


def test_without_the_user_index_the_builtin_weights_come_back(other_base, monkeypatch):
    _, builtin = other_base
    monkeypatch.delenv(INDEX_ENV)
    assert base_digest(load(DEMO_CODEC, q=Q).base) == builtin


def test_zoo_channel_tables_are_compressais():
    from icmh_hub._compressai import compressai

    for architecture, channels in CHANNELS.items():
        assert channels == {q: cfg[0] for q, cfg in compressai.zoo.image.cfgs[architecture].items()}, architecture


def test_random_weights_are_the_same_in_every_call_and_leave_the_callers_rng_alone():
    torch.manual_seed(5)
    state = torch.get_rng_state()
    first, second = build_base("mbt2018-mean", 1, pretrained=False), build_base("mbt2018-mean", 1, pretrained=False)
    assert base_digest(first) == base_digest(second)
    assert torch.equal(torch.get_rng_state(), state)
