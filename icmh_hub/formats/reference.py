"""Checkpoints of the reference implementations (TransTIC, Adapt-ICMH) and base-codec weights.

A TransTIC base codec (``base_codec_q.pth.tar``) is ``torch.save`` of a dict whose
``state_dict`` is a whole TIC; an Adapt-ICMH TIC-SFMA checkpoint holds the same codec plus six
SFMAs, ``encoder_sfmas.{0,1,2}`` (after the g_a stages at 1/2, 1/4, 1/8) and
``decoder_sfmas.{0,1,2}`` (after the g_s stages at 1/2, 1/4, 1/8: the decoder numbering runs
against the data flow). Each reference SFMA has three separate 1x1 projections of its input;
ours has one fused ``down`` convolution whose rows are, in order, ``s_down1 | s_down2 | f_down``
(the spatial branch's two projections, then the frequency branch's).

Everything is read with ``weights_only=True``: no code in a checkpoint runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import read_state_dict, sha256_of
from ..core.adapter_set import AdapterSet, build_adapters, point_key
from ..core.spec import get_codec
from ..core.tasks import TASK_NAMES, get_task
from ..errors import CheckpointError, InvalidArgumentError, unknown_name
from .adapter_files import save_adapters

if TYPE_CHECKING:
    import torch
    from torch import nn

CONVERTER = "tic-reference"
CONVERTER_VERSION = 1
TRANSTIC_CONVERTER = "transtic-reference"
TRANSTIC_CONVERTER_VERSION = 1
TASKS = TASK_NAMES  # the released checkpoints' tasks
SFMA_PREFIXES = ("encoder_sfmas.", "decoder_sfmas.")
PROMPT_MARK = "prompt"  # in every key TransTIC adds to the base codec (and in no base key)
_SIDES = {"encoder_sfmas": "encoder", "decoder_sfmas": "decoder"}
_PARTS = ("s_down1", "s_down2", "s_dw", "s_up", "f_down", "f_dw", "f_inter", "f_up")
# buffers CompressAI resizes to the checkpoint's when loading (entropy tables), and attention
# masks some reference versions store (derived from sizes, never learned)
_RESIZED = ("entropy_bottleneck._", "gaussian_conditional.")
_DERIVED = (".attn_mask",)


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state_dict (``module.`` prefixes removed) of a reference-format checkpoint."""
    import torch

    state = read_state_dict(path, "reference checkpoint")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state_dict of tensors (some values are not tensors); it is not a reference TIC checkpoint")
    return state


def codec_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The base-codec part of a reference state_dict: its adapters (SFMAs) and TransTIC prompts
    left out, and the entropy bottleneck's parameters under CompressAI's current names
    (TransTIC's files keep the older ``_matrix0`` / ``_bias0`` / ``_factor0``: CompressAI's own
    ``remap_old_keys`` renames them, as its ``load_state_dict`` does)."""
    from .._compressai import compressai  # noqa: F401  (first, without its import warning)
    from compressai.models.utils import remap_old_keys

    base = {k: v for k, v in state.items() if not k.startswith(SFMA_PREFIXES) and PROMPT_MARK not in k}
    return dict(remap_old_keys("entropy_bottleneck", base))


def differing_parameters(model: nn.Module, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> list[str]:
    """The learned parameters of ``model`` (not its buffers: entropy tables are recomputed by
    ``update``) whose values differ between two of its state_dicts, or that one of them lacks."""
    import torch

    names = [name for name, _ in model.named_parameters()]
    return [n for n in names if n not in a or n not in b or a[n].shape != b[n].shape or not torch.equal(a[n], b[n])]


def load_codec_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Load base-codec weights into ``model`` with one clear line when they do not fit it."""
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if not k.endswith(_DERIVED)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape and not k.startswith(_RESIZED))
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{source} is not a {type(model).__name__} checkpoint: {len(missing)} keys missing "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
            f"{len(wrong)} of other shapes (e.g. {wrong[:2]}); it holds weights of another codec or quality"
        )
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise CheckpointError(f"{source} does not load into {type(model).__name__} ({first})") from None
    return model


def tic_from_state_dict(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> nn.Module:
    """A TIC holding the base-codec weights of a reference state_dict; clear error if it is not one."""
    return load_codec_state(get_codec("tic").build(1, pretrained=False), codec_state(state), source)


def _reference_sfma(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of one reference SFMA (``{part}.weight`` / ``{part}.bias``); error if incomplete."""
    names = [f"{part}.{kind}" for part in _PARTS for kind in ("weight", "bias")]
    missing = [n for n in names if f"{prefix}.{n}" not in state]
    if missing:
        raise CheckpointError(
            f"the checkpoint's {prefix} lacks {missing[:3]}; it is not a TIC-SFMA checkpoint of the "
            "Adapt-ICMH release (other adapter variants cannot be converted)"
        )
    return {n: state[f"{prefix}.{n}"] for n in names}


def sfma_to_adapter(ref: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One reference SFMA's tensors -> the state_dict of our ``Adapter(variant="sfma")``."""
    import torch

    out = {}
    for kind in ("weight", "bias"):
        out[f"stages.0.down.{kind}"] = torch.cat([ref[f"{p}.{kind}"] for p in ("s_down1", "s_down2", "f_down")])
        for ours, theirs in (
            ("branches.0.dw", "s_dw"), ("branches.0.up", "s_up"),
            ("branches.1.dw", "f_dw"), ("branches.1.mix", "f_inter"), ("branches.1.up", "f_up"),
        ):
            out[f"stages.0.{ours}.{kind}"] = ref[f"{theirs}.{kind}"]
    return out


def adapters_from_state_dict(state: Mapping[str, torch.Tensor], codec: str = "tic", q: int = 1, **info: Any) -> AdapterSet:
    """Our AdapterSet holding the six SFMAs of a reference state_dict (``module.`` already removed)."""
    spec = get_codec(codec)
    spec.check_quality(q)
    if not any(k.startswith(SFMA_PREFIXES) for k in state):
        raise CheckpointError(
            "the checkpoint has no encoder_sfmas.* / decoder_sfmas.* weights; it is not a TIC-SFMA "
            "checkpoint (a base codec such as base_codec_q.pth.tar needs no conversion)"
        )
    first = _reference_sfma(state, "encoder_sfmas.0")
    middle_dim, channels = first["s_down1.weight"].shape[:2]
    if channels != spec.channels[q]:
        raise CheckpointError(
            f"the checkpoint's adapters have {channels} channels but {codec} q{q} has "
            f"{spec.channels[q]}; it was made for another codec"
        )
    adapters = build_adapters(codec, q, variant="sfma", middle_dim=int(middle_dim), init="reference", **info)
    converted = {}
    for side_ref, side in _SIDES.items():
        for index in range(3):  # reference index i is stage i + 1 on both sides
            ref = _reference_sfma(state, f"{side_ref}.{index}")
            for name, tensor in sfma_to_adapter(ref).items():
                converted[f"adapters.{point_key(side, index + 1)}.{name}"] = tensor
    expected = adapters.state_dict()
    wrong = [k for k, t in converted.items() if t.shape != expected[k].shape]
    if wrong:
        raise CheckpointError(f"the checkpoint's SFMA tensors have unexpected shapes ({wrong[:2]}); it is damaged or of another layout")
    adapters.load_state_dict(converted)
    return adapters


def check_embedded_base(state: Mapping[str, torch.Tensor], base: str | os.PathLike, codec: str, q: int, checkpoint: str) -> None:
    """Refuse a checkpoint whose embedded base codec is not ``base`` (the weights its adapters
    are used with): the paper froze the base codec, so its learned parameters must be equal.
    Entropy tables (buffers) are left out: ``update()`` recomputes them."""
    base = Path(base)
    model = get_codec(codec).build(q, pretrained=False)
    expected = codec_state(read_state_dict(base, f"{codec} q{q} base weights"))
    differing = differing_parameters(model, codec_state(state), expected)
    if differing:
        total = sum(1 for _ in model.parameters())
        raise CheckpointError(
            f"the base codec inside {checkpoint} differs from {codec} q{q}'s base weights {base.name} in "
            f"{len(differing)} of {total} learned parameters (e.g. {differing[:2]}): its adapters were trained on "
            f"another base codec. Check that the entry's q is the checkpoint's rate point; to use the checkpoint's "
            f"own base codec instead, give {codec} q{q} a base_codecs item whose source is this checkpoint (adapters/README.md)"
        )


def convert_reference(
    checkpoint: str | os.PathLike,
    codec: str = "tic",
    q: int | None = None,
    task: str | None = None,
    out: str | os.PathLike | None = None,
    base: str | os.PathLike | None = None,
    method: str = "sfma",
    **info: Any,
) -> Path:
    """Convert a released checkpoint to an adapter file at ``out``; return its path.

    ``method`` says what the checkpoint holds: "sfma", Adapt-ICMH's TIC-SFMA (the six SFMAs are
    kept), or "transtic", one of TransTIC's task checkpoints (the whole prompted codec; its
    prompts are kept). ``q`` (1..4) is the base codec's rate point and ``task`` one of cls / det
    / seg; the file records both, the checkpoint's name and sha256, the converter's version, and
    ``info``. With ``base`` (the base codec's weights file, e.g. TransTIC's
    ``base_codec_q.pth.tar``) the checkpoint's embedded base codec must equal it
    (``check_embedded_base``), and the file records the base file's name and sha256 too.
    """
    if method == "transtic":
        from ..methods.transtic import adapters_from_reference

        build = lambda state: adapters_from_reference(state, q, task=task)  # noqa: E731
        return _convert(checkpoint, codec, q, task, out, base, build, TRANSTIC_CONVERTER, TRANSTIC_CONVERTER_VERSION, info)
    if method != "sfma":
        raise unknown_name("method of a released checkpoint", method, ["sfma", "transtic"])
    build = lambda state: adapters_from_state_dict(state, codec, q, task=task)  # noqa: E731
    return _convert(checkpoint, codec, q, task, out, base, build, CONVERTER, CONVERTER_VERSION, info)


def convert_transtic(checkpoint: str | os.PathLike, **arguments: Any) -> Path:
    """``convert_reference(..., method="transtic")``: a TransTIC task checkpoint's prompts."""
    return convert_reference(checkpoint, **arguments, method="transtic")


def _convert(checkpoint: str | os.PathLike, codec: str, q: int | None, task: str | None, out: str | os.PathLike | None,
             base: str | os.PathLike | None, build: Any, converter: str, version: int, info: dict[str, Any]) -> Path:
    """Read, build the adapters, check the embedded base, save with the provenance in the info."""
    if codec != "tic":
        raise unknown_name(f"codec for the {converter} converter", codec, ["tic"])
    if q is None or task is None or out is None:
        raise InvalidArgumentError(f"the {converter} converter needs q= (1-4), task= (cls, det or seg) and out= (the .safetensors path)")
    get_codec(codec).check_quality(q)
    get_task(task)
    checkpoint = Path(checkpoint)
    state = read_checkpoint(checkpoint)
    adapters = build(state)
    if base is not None:
        check_embedded_base(state, base, codec, q, checkpoint.name)
        info = {"base_file": Path(base).name, "base_sha256": sha256_of(base), **info}
    return save_adapters(
        adapters, out, recipe="reference", source_checkpoint=checkpoint.name, source_sha256=sha256_of(checkpoint),
        converter=converter, converter_version=version, **info,
    )
