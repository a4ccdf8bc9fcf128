"""Convert the paper's released TIC-SFMA checkpoints (Adapt-ICMH format) into our adapter files.

A reference checkpoint holds the whole codec plus six SFMAs, ``encoder_sfmas.{0,1,2}`` (after
the g_a stages at 1/2, 1/4, 1/8) and ``decoder_sfmas.{0,1,2}`` (after the g_s stages at 1/2,
1/4, 1/8: the decoder numbering runs against the data flow). Each SFMA has three separate 1x1
projections of its input; ours has one fused ``down`` convolution whose rows are, in order,
``s_down1 | s_down2 | f_down`` (the spatial branch's two projections, then the frequency
branch's). The codec weights are left out: the adapter file holds the adapters only, and the
base codec comes from TransTIC's ``base_codec_q``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .adapter_files import save_adapters, sha256_of
from .adapter_set import AdapterSet, build_adapters, point_key
from .codecs import get_codec
from .errors import IcmhError, unknown_name

CONVERTER = "tic-reference"
CONVERTER_VERSION = 1
TASKS = ("cls", "det", "seg")
_SIDES = {"encoder_sfmas": "encoder", "decoder_sfmas": "decoder"}
_PARTS = ("s_down1", "s_down2", "s_dw", "s_up", "f_down", "f_dw", "f_inter", "f_up")


def _reference_sfma(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of one reference SFMA (``{part}.weight`` / ``{part}.bias``); error if incomplete."""
    names = [f"{part}.{kind}" for part in _PARTS for kind in ("weight", "bias")]
    missing = [n for n in names if f"{prefix}.{n}" not in state]
    if missing:
        raise IcmhError(
            f"the checkpoint's {prefix} lacks {missing[:3]}; it is not a TIC-SFMA checkpoint of the "
            "Adapt-ICMH release (other adapter variants cannot be converted)"
        )
    return {n: state[f"{prefix}.{n}"] for n in names}


def sfma_to_adapter(ref: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One reference SFMA's tensors -> the state_dict of our ``Adapter(variant="sfma")``."""
    out = {}
    for kind in ("weight", "bias"):
        out[f"stages.0.down.{kind}"] = torch.cat([ref[f"{p}.{kind}"] for p in ("s_down1", "s_down2", "f_down")])
        for ours, theirs in (
            ("branches.0.dw", "s_dw"), ("branches.0.up", "s_up"),
            ("branches.1.dw", "f_dw"), ("branches.1.mix", "f_inter"), ("branches.1.up", "f_up"),
        ):
            out[f"stages.0.{ours}.{kind}"] = ref[f"{theirs}.{kind}"]
    return out


def adapters_from_state_dict(state: dict[str, torch.Tensor], codec: str = "tic", q: int = 1, **info) -> AdapterSet:
    """Our AdapterSet holding the six SFMAs of a reference state_dict (``module.`` already removed)."""
    spec = get_codec(codec)
    spec.check_quality(q)
    if not any(k.startswith(tuple(_SIDES)) for k in state):
        raise IcmhError(
            "the checkpoint has no encoder_sfmas.* / decoder_sfmas.* weights; it is not a TIC-SFMA "
            "checkpoint (a base codec such as base_codec_q.pth.tar needs no conversion)"
        )
    first = _reference_sfma(state, "encoder_sfmas.0")
    middle_dim, channels = first["s_down1.weight"].shape[:2]
    if channels != spec.channels[q]:
        raise IcmhError(
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
        raise IcmhError(f"the checkpoint's SFMA tensors have unexpected shapes ({wrong[:2]}); it is damaged or of another layout")
    adapters.load_state_dict(converted)
    return adapters


def convert_reference(
    checkpoint: str | os.PathLike,
    codec: str = "tic",
    q: int | None = None,
    task: str | None = None,
    out: str | os.PathLike | None = None,
) -> Path:
    """Convert a released TIC-SFMA checkpoint to an adapter file at ``out``; return its path.

    ``q`` (1..4) is the base codec's rate point and ``task`` one of cls / det / seg; the file
    records both, the checkpoint's name and sha256, and this converter's version.
    """
    from .tic import read_checkpoint  # registers "tic" too

    if codec != "tic":
        raise unknown_name("codec for the reference converter", codec, ["tic"])
    if q is None or task is None or out is None:
        raise IcmhError("convert_reference needs q= (1-4), task= (cls, det or seg) and out= (the .safetensors path)")
    if task not in TASKS:
        raise unknown_name("task", task, TASKS)
    checkpoint = Path(checkpoint)
    adapters = adapters_from_state_dict(read_checkpoint(checkpoint), codec, q, task=task)
    return save_adapters(
        adapters,
        out,
        recipe="reference",
        source_checkpoint=checkpoint.name,
        source_sha256=sha256_of(checkpoint),
        converter=CONVERTER,
        converter_version=CONVERTER_VERSION,
    )


CONVERTERS = {CONVERTER: convert_reference}  # converter name in index entries -> function
