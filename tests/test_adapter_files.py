import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from icmh_hub import AdapterFileError, AdapterMismatchError, attach, build_adapters, load_adapters, read_metadata, save_adapters

from .conftest import build_pair


def test_round_trip_keeps_tensors_layout_and_info(tmp_path):
    adapters = build_adapters("mbt2018-mean", 2, variant="sma->fma", middle_dim=8, stages=[1, 3], init="reference")
    path = save_adapters(adapters, tmp_path / "a.safetensors", task="cls", lmbda=1.8, recipe={"lr": 1e-4})
    loaded = load_adapters(path)
    assert loaded.layout() == adapters.layout()
    assert loaded.info == {"task": "cls", "lmbda": 1.8, "recipe": {"lr": 1e-4}}
    for (name, a), (_, b) in zip(adapters.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    meta = read_metadata(path)
    assert meta["codec"] == "mbt2018-mean" and meta["channels"] == 128 and meta["points"]["encoder_3"] == "g_a.5"


def test_loaded_adapters_refuse_a_codec_they_do_not_fit(tmp_path):
    path = save_adapters(build_adapters("cheng2020-anchor", 4), tmp_path / "c.safetensors", task="cls")
    model, _ = build_pair("mbt2018-mean", 4)
    with pytest.raises(AdapterMismatchError, match="'cheng2020-anchor' but the codec is 'mbt2018-mean'"):
        attach(model, "mbt2018-mean", {"cls": load_adapters(path)})


def test_not_safetensors_is_refused(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"PK\x03\x04 this is a zip file, maybe a pickle")
    with pytest.raises(AdapterFileError, match="not a readable safetensors"):
        load_adapters(path)


def test_truncated_file_is_refused(tmp_path):
    path = save_adapters(build_adapters("mbt2018-mean", 1, middle_dim=4), tmp_path / "t.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterFileError):
        load_adapters(path)


def test_plain_safetensors_and_future_versions_are_refused(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(AdapterFileError, match="not an icmh-hub adapter"):
        load_adapters(plain)

    path = save_adapters(build_adapters("mbt2018-mean", 1, middle_dim=4), tmp_path / "v.safetensors")
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"]["format_version"] = "99"
    new_header = json.dumps(header).encode()
    new_header += b" " * (-len(new_header) % 8)
    path.write_bytes(struct.pack("<Q", len(new_header)) + new_header + data[8 + size :])
    with pytest.raises(AdapterFileError, match="version 99.*upgrade"):
        load_adapters(path)


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(AdapterFileError, match="does not exist"):
        load_adapters(tmp_path / "nope.safetensors")


def _rewrite(path, **changes):
    """Rewrite metadata entries of a safetensors file in place (values JSON-encoded as icmh-hub writes them)."""
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"] |= {key: json.dumps(value) for key, value in changes.items()}
    new_header = json.dumps(header).encode()
    new_header += b" " * (-len(new_header) % 8)
    path.write_bytes(struct.pack("<Q", len(new_header)) + new_header + data[8 + size :])


def test_non_finite_tensors_are_refused_by_name(tmp_path):
    adapters = build_adapters("mbt2018-mean", 1, middle_dim=4)
    name = "adapters.decoder_2.stages.0.down.bias"
    assert name in adapters.state_dict()
    with torch.no_grad():
        adapters.state_dict()[name][1] = float("nan")
    path = save_adapters(adapters, tmp_path / "nan.safetensors")
    with pytest.raises(AdapterFileError, match=f"tensor {name} holds NaN or infinite values"):
        load_adapters(path)


@pytest.mark.parametrize("key, value", [
    ("middle_dim", 1_000_000_000), ("middle_dim", "4"), ("middle_dim", 4.5), ("middle_dim", True), ("middle_dim", 0),
    ("channels", 10_000_000), ("channels", 192), ("quality", "1"), ("quality", 9), ("codec", "jpeg"), ("codec", 5),
    ("variant", "lora"), ("init", None), ("points", {"encoder_9": "g_a.1"}), ("points", []), ("points", {"encoder_1": 7}),
])
def test_absurd_or_mistyped_metadata_is_refused_by_key(tmp_path, key, value):
    path = save_adapters(build_adapters("mbt2018-mean", 1, middle_dim=4), tmp_path / "a.safetensors")
    _rewrite(path, **{key: value})
    with pytest.raises(AdapterFileError, match=f"adapter metadata {key}="):
        load_adapters(path)


def test_metadata_is_checked_against_the_file_before_anything_is_allocated(tmp_path, monkeypatch):
    """A middle_dim in range but not the file's (4096: 6 adapters of 170M parameters) is found out
    on the meta device, from the shapes the file lists."""
    from icmh_hub.core.adapter_set import AdapterSet

    built_on = []
    real = AdapterSet.build_modules

    def spy(self, spec):
        built_on.append(torch.empty(0).device.type)
        return real(self, spec)

    path = save_adapters(build_adapters("mbt2018-mean", 1, middle_dim=4), tmp_path / "a.safetensors")
    _rewrite(path, middle_dim=4096)
    monkeypatch.setattr(AdapterSet, "build_modules", spy)
    with pytest.raises(AdapterFileError, match="has shape .* its metadata implies"):
        load_adapters(path)
    assert built_on == ["meta"]
    _rewrite(path, middle_dim=4)
    assert load_adapters(path).middle_dim == 4 and built_on == ["meta", "meta", "cpu"]
