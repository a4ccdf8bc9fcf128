"""Adapter methods as plug-ins: a method registered here, in a test file alone (nothing under
icmh_hub/ knows it), trains, saves, loads, attaches and codes; the built-in methods are listed by
the registry; files of another icmh-hub's unknown method are refused by name."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import icmh_hub
from icmh_hub import AdapterFileError, InvalidArgumentError, attach, build_adapters, detach, load_adapters, save_adapters
from icmh_hub.cli import main
from icmh_hub.codecs.demo import DEMO_CODEC
from icmh_hub.coding import Decoder, Encoder
from icmh_hub.core.adapter_set import AdapterSet, stage_points
from icmh_hub.core.methods import MethodConfig, get_method, register_method
from icmh_hub.demo.models import load_model, task_features
from icmh_hub.training.trainer import Trainer

from .conftest import make_image
from .test_evaluate import make_class_folder

Q = 2


@dataclass(frozen=True)
class GainConfig(MethodConfig):
    method: str = "test-gain"
    scale: float = 0.5
    limits: ClassVar[dict] = {}


class GainAdapters(AdapterSet):
    """A per-channel gain after each decoder stage: stage 1 through a hook on the module's output,
    stages 2 and 3 by replacing the module's forward (both attach kinds of the registry)."""

    config_class = GainConfig
    separate_file = True

    @classmethod
    def allowed_points(cls, spec, quality, config):
        return stage_points(spec, (1, 2, 3), ("decoder",))

    @classmethod
    def default_points(cls, spec, quality, config, stages=(1, 2, 3), sides=None):
        return stage_points(spec, stages, ("decoder",))

    def build_modules(self, spec):
        self.gains = nn.ParameterDict({key: nn.Parameter(0.1 * torch.randn(self.channels)) for key in self.points})

    def hook_kind(self, path):
        return "output" if self.keys_by_path[path] == "decoder_1" else "forward"

    def _gain(self, path, y):
        return y * (1 + self.config.scale * self.gains[self.keys_by_path[path]].view(1, -1, 1, 1))

    def adapt_output(self, path, module, inputs, output):
        return self._gain(path, output)

    def adapt_forward(self, path, module, forward, x):
        return self._gain(path, forward(x))


@pytest.fixture
def gain_method():
    from icmh_hub.core import methods

    register_method("test-gain", GainConfig, GainAdapters, "a per-channel gain (tests only)")
    yield get_method("test-gain")
    methods._METHODS.pop("test-gain")


def test_builtin_methods_are_registered_and_listed():
    assert {"sfma", "naive", "scalable-sfma", "scalable-mask", "transtic"} <= set(icmh_hub.list_methods())
    assert get_method("transtic").codecs == ("tic",)
    with pytest.raises(InvalidArgumentError, match="runs on tic only"):
        build_adapters("mbt2018-mean", 3, method="transtic")
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_method("sfma", GainConfig, GainAdapters)
    run = CliRunner().invoke(main, ["methods"])
    assert run.exit_code == 0 and "transtic" in run.output and "scalable-mask" in run.output


def test_a_method_registered_in_a_test_file_trains_saves_loads_attaches_and_codes(gain_method, tmp_path):
    data = make_class_folder(tmp_path / "cls", classes=1, per_class=2)
    trainer = Trainer(DEMO_CODEC, Q, "cls", data, method="test-gain", steps=2, batch_size=1, crop=64, progress=False,
                      checkpoint_every=0, out_dir=tmp_path / "run", features=task_features("cls", load_model("cls")))
    before = {k: v.clone() for k, v in trainer.adapters.state_dict().items()}
    path = trainer.fit()
    assert path.name.endswith("-test-gain.safetensors")
    assert any(not torch.equal(before[k], v) for k, v in trainer.adapters.state_dict().items())  # it trained
    meta = icmh_hub.read_metadata(path)
    assert (meta["method"], meta["scale"]) == ("test-gain", 0.5)

    adapters = load_adapters(path)
    assert isinstance(adapters, GainAdapters) and adapters.config == GainConfig(scale=0.5)
    base = icmh_hub.build_base(DEMO_CODEC, Q)
    untouched = copy.deepcopy(base)
    codec = attach(base, DEMO_CODEC, {"cls": adapters})
    image = make_image(64, 64)
    with torch.no_grad():
        assert not torch.equal(codec(image)["x_hat"], untouched(image)["x_hat"])  # both attach kinds act
    encoded = Encoder(codec).encode(image)
    assert encoded.header.variant == "test-gain"
    decoded = Decoder(adapter=path).decode(encoded.data)
    with torch.no_grad():
        expected = codec.decompress(codec.compress(image)["strings"], encoded.header and codec.compress(image)["shape"])["x_hat"]
    torch.testing.assert_close(decoded.image, expected.clamp(0, 1), rtol=0, atol=0)

    plain = detach(codec)
    assert all("forward" not in module.__dict__ for module in plain.modules())  # replaced forwards given back
    with torch.no_grad():
        assert plain.compress(image)["strings"] == untouched.compress(image)["strings"]
        torch.testing.assert_close(plain(image)["x_hat"], untouched(image)["x_hat"], rtol=0, atol=0)


def test_a_file_of_an_unknown_method_is_refused_by_name(gain_method, tmp_path):
    path = save_adapters(build_adapters(DEMO_CODEC, Q, method="test-gain", task="cls"), tmp_path / "gain.safetensors")
    from icmh_hub.core import methods

    methods._METHODS.pop("test-gain")
    try:
        with pytest.raises(AdapterFileError, match="method='test-gain' is invalid .*plug-in that registers it"):
            load_adapters(path)
    finally:
        register_method("test-gain", GainConfig, GainAdapters)


def test_a_config_value_of_the_wrong_type_is_refused_before_building(gain_method, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = save_adapters(build_adapters(DEMO_CODEC, Q, method="test-gain", task="cls"), tmp_path / "gain.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        meta, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    save_file(tensors, str(path), metadata=meta | {"scale": json.dumps("big")})
    with pytest.raises(AdapterFileError, match="scale='big' is invalid"):
        load_adapters(path)


def test_points_outside_the_methods_own_are_refused(tmp_path):
    """A file cannot hook modules its method does not use (the entropy models, the last layer):
    such files would code but never decode."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = save_adapters(build_adapters("mbt2018-mean", 1, middle_dim=4, task="cls"), tmp_path / "a.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        meta, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    for points in ({"encoder_1": "entropy_bottleneck"}, {"decoder_1": "g_s.6"}, {"encoder_1": "gaussian_conditional"}):
        save_file(tensors, str(path), metadata=meta | {"points": json.dumps(points)})
        with pytest.raises(AdapterFileError, match="adapter metadata points="):
            load_adapters(path)


def test_files_written_by_icmh_hub_0_1_still_load(tmp_path):
    """A 0.1 file names its method "variant" and has no "method" key."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    adapters = build_adapters("mbt2018-mean", 1, "naive", middle_dim=4, init="reference", task="cls")
    path = save_adapters(adapters, tmp_path / "a.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        meta, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    old = {k: v for k, v in meta.items() if k != "method"}
    assert set(old) == {"format", "format_version", "codec", "quality", "channels", "variant", "middle_dim", "points", "init", "info"}
    save_file(tensors, str(path), metadata=old)
    loaded = load_adapters(path)
    assert (loaded.method, loaded.middle_dim, loaded.init) == ("naive", 4, "reference")
    assert loaded.layout() == adapters.layout()
    for a, b in zip(loaded.state_dict().values(), adapters.state_dict().values()):
        assert torch.equal(a, b)


def test_transtic_trains_its_prompts_only_on_a_frozen_tic(tmp_path):
    """``train --method transtic``: every tensor named prompt trains, nothing of the codec does."""
    data = make_class_folder(tmp_path / "cls", classes=1, per_class=2)
    trainer = Trainer("tic", 1, "cls", data, method="transtic", steps=1, batch_size=1, crop=64, progress=False,
                      checkpoint_every=0, out_dir=tmp_path / "run", pretrained=False,
                      features=task_features("cls", load_model("cls")))
    base_before = {k: v.clone() for k, v in trainer.codec.base.state_dict().items()}
    prompts_before = {k: v.clone() for k, v in trainer.adapters.state_dict().items()}
    path = trainer.fit()
    assert path.name.endswith("-transtic.safetensors") and load_adapters(path).method == "transtic"
    assert all(torch.equal(base_before[k], v) for k, v in trainer.codec.base.state_dict().items())
    changed = [k for k, v in trainer.adapters.state_dict().items() if not torch.equal(prompts_before[k], v)]
    assert any(k.startswith("prompts.decoder") for k in changed) and any(k.startswith("prompts.generator") for k in changed)
    assert not any("running_" in k for k in changed)  # the generator's BatchNorm statistics stay as they were


@pytest.mark.parametrize("info", ['{"task": "\\u001b[2Jcls"}', '{"task": "../../x"}', "[" * 100_000 + "]" * 100_000,
                                  '{"task": "cls", "task": "det"}', '"cls"'])
def test_hostile_adapter_metadata_is_refused_with_one_line(tmp_path, info):
    """Escape sequences or paths as task names, absurd nesting and duplicate keys: our error."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = save_adapters(build_adapters("mbt2018-mean", 1, middle_dim=4, task="cls"), tmp_path / "a.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        meta, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    save_file(tensors, str(path), metadata=meta | {"info": info})
    with pytest.raises(AdapterFileError) as caught:
        load_adapters(path)
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)
