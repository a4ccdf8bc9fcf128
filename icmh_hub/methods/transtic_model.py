"""TransTIC's prompts ("TransTIC: Transferring Transformer-based Image Compression from Human
Perception to Machine Perception", ICCV 2023; github.com/NYCU-MAPL/TransTIC, Apache-2.0) on our
TIC (``icmh_hub.codecs.tic_model``), whose stages run them with their own, frozen weights.

Where the prompts go (the reference's ``TIC_PromptModel_first2``, classification/detection/
segmentation configs):

- encoder, one set per image: a small U-Net (``generator``) turns the image given to ``g_a0`` into
  a 128-channel context at 1/2 size; one stride-2 convolution per Swin block makes that block's
  prompt map at half the size of its image tokens (``g_a1``: from the context; ``g_a3``: from the
  context brought to 1/4 by ``context_down``). In every 8x8 window the 16 prompt tokens of the
  same area (a 4x4 window of the map, rolled by 2 where the block rolls by 4) are put before the
  64 image tokens as further keys and values: no LayerNorm, no queries, no MLP, zero position
  bias. ``g_a5``, ``g_a7`` and the hyperprior are untouched;
- decoder, one set per task: 16 learned tokens per Swin block of ``g_s0``, ``g_s2``, ``g_s4``,
  ``g_s6`` (VPT-deep), the same before every window, with zero bias and zero mask columns.

Quirks of the reference kept, because its released prompts were trained with them:

- its Swin blocks run shifted windows with Swin's shift mask (our TIC does so after
  ``set_shift_masks``; without it, every mask here is left out too);
- in a prompted encoder block the keys are ordered [16 prompts, 64 image tokens] but the mask is
  built as [64 image columns, 16 prompt columns]: image key j < 48 gets the mask of image token
  j + 16, image key j >= 48 that of image token 16 + 2 (j - 48), prompt p that of image token p.

What we add: any size our TIC accepts. Its input is padded to a multiple of 64, so the stages
see whole windows; a block given a map of other sizes pads it to whole windows (as our TIC's
blocks do) and its prompt map, with zeros, to half of that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .._compressai import compressai  # noqa: F401  (first, without its import warning)
from compressai.models.utils import conv

from ..codecs.tic_model import DEPTHS, RSTB, SwinBlock, partition, shift_mask
from ..errors import CheckpointError, InvalidArgumentError, unknown_name

TOKENS = 16  # decoder prompts per block (NUM_TOKENS); encoder prompts are (window / 2)^2 = 16
ENCODER_STAGES = ("g_a1", "g_a3")
DECODER_STAGES = ("g_s0", "g_s2", "g_s4", "g_s6")
_DECODER_DEPTHS = (DEPTHS[3], DEPTHS[2], DEPTHS[1], DEPTHS[0])  # TIC's decoder mirrors its encoder
# reference key prefix -> ours (the first that matches)
_NAMES = (
    ("g_a0_prompt_layers.", "encoder.g_a1."),
    ("g_a2_prompt_layers.", "encoder.g_a3."),
    ("g_a0_prompt.", "generator."),
    ("g_a2_prompt.", "context_down."),
) + tuple((f"{stage}.residual_group.prompt_embeddings", f"decoder.{stage}") for stage in DECODER_STAGES)


def _conv_bn_relu(channels: Sequence[int]) -> nn.Sequential:
    """3x3 convolution, BatchNorm, ReLU, for each step of ``channels``."""
    layers: list[nn.Module] = []
    for inputs, outputs in zip(channels, channels[1:]):
        layers += [nn.Conv2d(inputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class PromptGenerator(nn.Module):
    """The encoder's U-Net: (B, 3, H, W), H and W multiples of 4 -> (B, ``out``, H/2, W/2)."""

    def __init__(self, out: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.down1 = _conv_bn_relu((3, w, w))
        self.down2 = _conv_bn_relu((w, 2 * w, 2 * w))
        self.down3 = _conv_bn_relu((2 * w, 4 * w, 4 * w))
        self.up2 = _conv_bn_relu((6 * w, 2 * w, 2 * w, 2 * w))
        self.up1 = _conv_bn_relu((3 * w, w, w, w))
        self.classifier = nn.Sequential(nn.Conv2d(w, out, 3, stride=2, padding=1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        full = self.down1(image)
        half = self.down2(F.max_pool2d(full, 2))
        quarter = self.down3(F.max_pool2d(half, 2))
        half = self.up2(torch.cat((half, _upsample(quarter)), dim=1))
        full = self.up1(torch.cat((full, _upsample(half)), dim=1))
        return self.classifier(full)


class TransticPrompts(nn.Module):
    """Every tensor TransTIC trains (1,619,968 parameters for N=128, M=192, 16 tokens), and the
    prompted computation of the TIC stages they enter (``encoder_context``, ``encoder_stage``,
    ``decoder_stage``; the stages are the codec's own modules, used and never changed).

    ``tokens`` is the number of decoder prompts per block; the encoder's follow from the window.
    Initialisation as the reference's: decoder prompts uniform in +-sqrt(6 / (3 + dim)),
    convolutions and BatchNorms PyTorch's defaults.

    The generator's BatchNorm always normalises with its running statistics and never updates
    them, in train mode too (``train()`` leaves it in eval mode): training the prompts then keeps
    the generator a fixed function of each image, whatever the batch. This differs from the
    reference's training script, which puts the whole model in train mode (batch statistics,
    running statistics updated); its evaluation, and so its released numbers, use running
    statistics as here. The BatchNorms' weights and biases still train.
    """

    def __init__(self, N: int = 128, M: int = 192, tokens: int = TOKENS) -> None:
        super().__init__()
        self.generator = PromptGenerator(N)
        self.context_down = conv(N, N, kernel_size=3, stride=2)
        self.encoder = nn.ModuleDict({
            stage: nn.ModuleList(conv(N, N, kernel_size=3, stride=2) for _ in range(depth))
            for stage, depth in zip(ENCODER_STAGES, DEPTHS)
        })
        self.decoder = nn.ParameterDict()
        for stage, depth in zip(DECODER_STAGES, _DECODER_DEPTHS):
            dim = M if stage == "g_s0" else N
            bound = math.sqrt(6.0 / (3 + dim))
            self.decoder[stage] = nn.Parameter(torch.empty(depth, tokens, dim).uniform_(-bound, bound))

    def train(self, mode: bool = True) -> TransticPrompts:
        """As ``nn.Module.train``, but the generator's BatchNorms stay in eval mode."""
        super().train(mode)
        for module in self.generator.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def encoder_context(self, image: torch.Tensor) -> torch.Tensor:
        """The generator's output (B, N, H/2, W/2) for the image (B, 3, H, W) that ``g_a0`` gets
        (already padded: H and W multiples of 4, as TIC's multiples of 64 are)."""
        if image.dim() != 4 or image.shape[1] != 3 or image.shape[-2] % 4 or image.shape[-1] % 4:
            raise InvalidArgumentError(
                f"encoder_context takes the padded image given to g_a0, (B, 3, H, W) with H and W multiples "
                f"of 4; got {tuple(image.shape)}. Pad it first (TIC pads to a multiple of 64)"
            )
        return self.generator(image)

    def encoder_stage(self, name: str, stage: RSTB, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The output of ``stage`` (TIC's ``g_a1`` or ``g_a3``, as ``name`` says) for its input ``x``
        (B, C, H, W), with this image's prompts (from ``context``, ``encoder_context``'s output)."""
        if name not in ENCODER_STAGES:
            raise unknown_name("prompted encoder stage", name, ENCODER_STAGES)
        if name == "g_a3":
            context = self.context_down(context)
        maps = [layer(context) for layer in self.encoder[name]]
        blocks = _blocks(name, stage, len(maps), x.shape[1])
        h = x.permute(0, 2, 3, 1)
        for block, prompt in zip(blocks, maps):
            h = _encoder_block(name, block, h, prompt.permute(0, 2, 3, 1))
        return x + h.permute(0, 3, 1, 2)

    def decoder_stage(self, name: str, stage: RSTB, x: torch.Tensor) -> torch.Tensor:
        """The output of ``stage`` (TIC's ``g_s0``, ``g_s2``, ``g_s4`` or ``g_s6``, as ``name``
        says) for its input ``x`` (B, C, H, W), with the task's prompts before every window."""
        if name not in DECODER_STAGES:
            raise unknown_name("prompted decoder stage", name, DECODER_STAGES)
        prompts = self.decoder[name]
        blocks = _blocks(name, stage, prompts.shape[0], prompts.shape[2])
        batch, _, height, width = x.shape
        h = x.permute(0, 2, 3, 1)
        for block, tokens in zip(blocks, prompts):
            windows = batch * -(-height // block.window) * -(-width // block.window)
            h = block(h, tokens.expand(windows, -1, -1))
        return x + h.permute(0, 3, 1, 2)


def _blocks(name: str, stage: nn.Module, depth: int, channels: int) -> Sequence[SwinBlock]:
    """The Swin blocks of ``stage``; error unless it is a TIC stage of ``depth`` blocks of ``channels``."""
    blocks = getattr(getattr(stage, "residual_group", None), "blocks", None)
    if (
        not isinstance(stage, RSTB) or len(blocks) != depth
        or any(b.norm1.normalized_shape[0] != channels for b in blocks)
    ):
        raise InvalidArgumentError(
            f"the prompts of {name} need TIC's {name} stage ({depth} Swin blocks of {channels} channels) "
            f"and its input; got a {type(stage).__name__} (pass tic.{name})"
        )
    return blocks


def _encoder_block(name: str, block: SwinBlock, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """One prompted encoder block: ``x`` (B, H, W, C), ``prompt`` (B, ceil(H/2), ceil(W/2), C)."""
    _, height, width, _ = x.shape
    window, shift, half = block.window, block.shift, block.window // 2
    if prompt.shape[1:3] != (-(-height // 2), -(-width // 2)):
        raise InvalidArgumentError(
            f"{name}'s prompt map is {tuple(prompt.shape[1:3])} for tokens {(height, width)} (it must be half "
            f"their size): give encoder_context the padded image that g_a0 got"
        )
    rows, cols = -(-height // window), -(-width // window)
    prompt = F.pad(prompt, (0, 0, 0, cols * half - prompt.shape[2], 0, rows * half - prompt.shape[1]))
    if shift:
        prompt = torch.roll(prompt, (-(shift // 2), -(shift // 2)), dims=(1, 2))
    mask = _quirk_mask(rows * window, cols * window, block, x) if shift and block.masked else None
    return block(x, partition(prompt, half), mask)


def _quirk_mask(height: int, width: int, block: SwinBlock, like: torch.Tensor) -> torch.Tensor:
    """The reference's mask of a prompted encoder block, (windows, w^2, w^2 + (w/2)^2): the shift
    mask's image columns, then for the prompt columns a nearest resize of its middle columns
    (``(w/2)^2`` to ``w^2 - (w/2)^2``), in this order, though the keys are [prompts, image]."""
    image = shift_mask(height, width, block.window, block.shift, like.device).to(like.dtype)
    tokens, prompts = image.shape[-1], (block.window // 2) ** 2
    middle = image[:, :, prompts : tokens - prompts].unsqueeze(1)
    return torch.cat((image, F.interpolate(middle, size=(tokens, prompts)).squeeze(1)), dim=2)


def _rename(key: str, names: Sequence[tuple[str, str]]) -> str | None:
    for old, new in names:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def _shapes(reference: bool) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a default ``TransticPrompts`` (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        state = TransticPrompts().state_dict()
    pairs = [(ours, theirs) for theirs, ours in _NAMES]
    return {(_rename(k, pairs) if reference else k): tuple(v.shape) for k, v in state.items()}


def _checked(given: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], what: str) -> None:
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shared = set(given) & set(expected)
    wrong = sorted(f"{k} {tuple(given[k].shape)} != {expected[k]}" for k in shared if tuple(given[k].shape) != expected[k])
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{what} does not hold TransTIC's prompts (N=128, M=192, 16 tokens): {len(missing)} keys missing "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} of other shapes {wrong[:3]}"
        )


def prompts_from_reference(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A reference TransTIC state_dict (``module.`` removed; its base-codec keys, those without
    "prompt", are ignored) -> the state_dict of ``TransticPrompts()``. CheckpointError naming the
    missing, unexpected and wrong-shaped keys if it is not a complete TransTIC checkpoint."""
    given = {k: v for k, v in state.items() if "prompt" in k}
    _checked(given, _shapes(reference=True), "the checkpoint")
    return {_rename(k, _NAMES): v for k, v in given.items()}


def prompts_to_reference(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``prompts_from_reference``: ``TransticPrompts().state_dict()`` -> the
    reference's prompt keys (without ``module.``)."""
    _checked(state, _shapes(reference=False), "the state_dict")
    pairs = [(ours, theirs) for theirs, ours in _NAMES]
    return {_rename(k, pairs): v for k, v in state.items()}
