"""The TIC network (Lu et al., "Transformer-based Image Compression", DCC 2022), the codec of the
paper's released weights, as a CompressAI ``CompressionModel`` (its spec: ``icmh_hub.codecs.tic``).

The analysis and synthesis transforms alternate strided (transposed) convolutions with residual
Swin transformer stages (RSTB: a stack of window-attention blocks, every second one on windows
shifted by half a window, with a residual around the stack); the hyperprior is the mean-scale
one of Minnen et al. Module names and buffers equal those of the reference implementation
(TransTIC / Adapt-ICMH), so their checkpoints (``base_codec_{1..4}.pth.tar``) load as they are.

Two behaviours of the reference are kept on purpose, because the released weights were trained
and evaluated with them:

- shifted-window attention runs without the usual mask (tokens wrapped around by the cyclic
  shift attend to each other), as Adapt-ICMH's code runs it; TransTIC's code, which trained the
  base codecs, adds Swin's shift mask (0 inside a region, -100 across the wrap-around), and so
  do its prompted codecs: ``set_shift_masks(model)`` switches a model's blocks to that;
- the two stages at 1/64 of the image size (``h_a3``, ``h_s0``) never shift, because the
  reference builds them for 256x256 inputs, where 1/64 (4) is not larger than their window (4).

What we add: any image size. The input is padded (replicating the border) to a multiple of 64,
and every attention block pads its own input to a whole number of windows and crops back, so the
reference's limit (1/64 of the size a multiple of 4) is gone; sizes it accepted give its numbers.
Stochastic depth (drop path) is left out: the codec is frozen here, and it is a no-op in eval.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .._compressai import compressai  # noqa: F401  (first, without its import warning)
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models import CompressionModel
from compressai.models.utils import conv, deconv
from compressai.ops import quantize_ste

from ..core.padding import pad
from ..errors import BitstreamError, CheckpointError
from .tic import PAD_MULTIPLE

WINDOW = 8  # g_a / g_s
HYPER_WINDOW = 4  # h_a / h_s
DEPTHS = (2, 4, 6, 2, 2, 2)  # g_a1, g_a3, g_a5, g_a7, h_a1, h_a3 (mirrored on the decoder side)
HEADS = (8, 8, 8, 16, 16, 16)
MLP_RATIO = 2.0


def _relative_position_index(window: int) -> torch.Tensor:
    """Index into the (2w-1)^2 bias table for every (query, key) pair of a w x w window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return relative[:, :, 0] * (2 * window - 1) + relative[:, :, 1]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative position bias."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.window, self.heads = window, heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", _relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, windows: torch.Tensor, extra: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``windows``: (num_windows * B, w*w, C) -> same shape.

        ``extra`` (num_windows * B, P, C), optional: tokens put before each window's as further
        keys and values only (no queries), with a zero position bias (prompt tuning).
        ``mask`` (num_windows, w*w, P + w*w), optional: added to the attention logits of every
        image in the batch (windows ordered image by image, as ``partition`` makes them).
        """
        count, tokens, dim = windows.shape
        prompts = 0 if extra is None else extra.shape[1]
        keys = windows if extra is None else torch.cat((extra, windows), dim=1)
        qkv = self.qkv(keys).reshape(count, prompts + tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        bias = bias.reshape(tokens, tokens, self.heads).permute(2, 0, 1)
        query, key, value = qkv.unbind(0)
        if prompts:
            query, bias = query[:, :, prompts:], F.pad(bias, (prompts, 0))
        scores = torch.matmul(query * (dim // self.heads) ** -0.5, key.transpose(-2, -1)) + bias
        if mask is not None:
            scores = (scores.view(-1, mask.shape[0], *scores.shape[1:]) + mask.unsqueeze(1)).view(scores.shape)
        out = torch.matmul(scores.softmax(dim=-1), value)
        return self.proj(out.transpose(1, 2).reshape(count, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C), H and W multiples of ``window`` -> (B * windows, window^2, C), image by image,
    windows row by row."""
    batch, height, width, dim = x.shape
    rows, cols = height // window, width // window
    return x.reshape(batch, rows, window, cols, window, dim).transpose(2, 3).reshape(-1, window * window, dim)


def merge(windows: torch.Tensor, batch: int, rows: int, cols: int) -> torch.Tensor:
    """The inverse of ``partition``: (B * rows * cols, w^2, C) -> (B, rows * w, cols * w, C)."""
    window, dim = math.isqrt(windows.shape[1]), windows.shape[2]
    x = windows.reshape(batch, rows, cols, window, window, dim).transpose(2, 3)
    return x.reshape(batch, rows * window, cols * window, dim)


def shift_mask(height: int, width: int, window: int, shift: int, device: torch.device | None = None) -> torch.Tensor:
    """Swin's mask for windows shifted by ``shift`` on a (height, width) map (multiples of
    ``window``): (windows, w^2, w^2), 0 where query and key lie in the same region of the rolled
    map and -100 where the cyclic shift brought them together from opposite borders."""

    def regions(size: int) -> torch.Tensor:
        label = torch.zeros(size, dtype=torch.long, device=device)
        label[size - window : size - shift] = 1
        label[size - shift :] = 2
        return label

    labels = (regions(height)[:, None] * 3 + regions(width)[None, :])[None, :, :, None]
    labels = partition(labels, window).squeeze(-1)
    apart = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(apart.shape, device=device).masked_fill_(apart, -100.0)


class SwinBlock(nn.Module):
    """Pre-norm window attention and MLP, both residual; ``shift`` rolls by half a window.

    ``masked`` (False unless ``set_shift_masks``): shifted windows get Swin's shift mask.
    """

    def __init__(self, dim: int, heads: int, window: int, shift: bool) -> None:
        super().__init__()
        self.window, self.shift = window, window // 2 if shift else 0
        self.masked = False
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * MLP_RATIO))

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: (B, H, W, C), channels last. ``extra`` and ``mask``: as ``WindowAttention``
        takes them, for the map padded to whole windows (ceil(H / w) x ceil(W / w) windows);
        without ``mask`` the block's own (the shift mask when ``masked``, zero for ``extra``)."""
        batch, height, width, dim = x.shape
        w = self.window
        h = F.pad(self.norm1(x), (0, 0, 0, -width % w, 0, -height % w))  # whole windows
        if self.shift:
            h = torch.roll(h, (-self.shift, -self.shift), dims=(1, 2))
        rows, cols = h.shape[1] // w, h.shape[2] // w
        if mask is None and self.masked and self.shift:
            mask = shift_mask(rows * w, cols * w, w, self.shift, h.device).to(h.dtype)
            mask = mask if extra is None else F.pad(mask, (extra.shape[1], 0))
        h = merge(self.attn(partition(h, w), extra, mask), batch, rows, cols)
        if self.shift:
            h = torch.roll(h, (self.shift, self.shift), dims=(1, 2))
        x = x + h[:, :height, :width]
        return x + self.mlp(self.norm2(x))


def set_shift_masks(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch every Swin block of ``model`` (a TIC or any of its stages) to run its shifted
    windows with Swin's shift mask (TransTIC's computation) or without (Adapt-ICMH's); return it."""
    for module in model.modules():
        if isinstance(module, SwinBlock):
            module.masked = enabled
    return model


class BasicLayer(nn.Module):
    """``depth`` Swin blocks; odd ones on shifted windows (when ``shift``)."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, shift: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(SwinBlock(dim, heads, window, shift and i % 2 == 1) for i in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class RSTB(nn.Module):
    """Residual Swin transformer stage on (B, C, H, W) maps: ``x + blocks(x)``.

    One tensor in, one tensor out, so that an adapter hook on it sees and replaces its output.
    """

    def __init__(self, dim: int, depth: int, heads: int, window: int, shift: bool = True) -> None:
        super().__init__()
        self.residual_group = BasicLayer(dim, depth, heads, window, shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual_group(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TIC(CompressionModel):
    """TIC with N=128, M=192 (the configuration of all of TransTIC's base codecs).

    ``forward`` follows the reference: likelihoods from the entropy models (additive noise in
    train mode), and the synthesis gets latents rounded with a straight-through estimator around
    the entropy bottleneck's medians (z) and the predicted means (y), so that gradients reach
    everything before the quantiser and eval mode is deterministic.
    """

    def __init__(self, N: int = 128, M: int = 192) -> None:
        super().__init__()
        self.N, self.M = N, M
        d, h = DEPTHS, HEADS
        self.g_a0 = conv(3, N, kernel_size=5, stride=2)
        self.g_a1 = RSTB(N, d[0], h[0], WINDOW)
        self.g_a2 = conv(N, N, kernel_size=3, stride=2)
        self.g_a3 = RSTB(N, d[1], h[1], WINDOW)
        self.g_a4 = conv(N, N, kernel_size=3, stride=2)
        self.g_a5 = RSTB(N, d[2], h[2], WINDOW)
        self.g_a6 = conv(N, M, kernel_size=3, stride=2)
        self.g_a7 = RSTB(M, d[3], h[3], WINDOW)

        self.h_a0 = conv(M, N, kernel_size=3, stride=2)
        self.h_a1 = RSTB(N, d[4], h[4], HYPER_WINDOW)
        self.h_a2 = conv(N, N, kernel_size=3, stride=2)
        self.h_a3 = RSTB(N, d[5], h[5], HYPER_WINDOW, shift=False)

        self.h_s0 = RSTB(N, d[5], h[5], HYPER_WINDOW, shift=False)
        self.h_s1 = deconv(N, N, kernel_size=3, stride=2)
        self.h_s2 = RSTB(N, d[4], h[4], HYPER_WINDOW)
        self.h_s3 = deconv(N, 2 * M, kernel_size=3, stride=2)

        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)

        self.g_s0 = RSTB(M, d[3], h[3], WINDOW)
        self.g_s1 = deconv(M, N, kernel_size=3, stride=2)
        self.g_s2 = RSTB(N, d[2], h[2], WINDOW)
        self.g_s3 = deconv(N, N, kernel_size=3, stride=2)
        self.g_s4 = RSTB(N, d[1], h[1], WINDOW)
        self.g_s5 = deconv(N, N, kernel_size=3, stride=2)
        self.g_s6 = RSTB(N, d[0], h[0], WINDOW)
        self.g_s7 = deconv(N, 3, kernel_size=5, stride=2)
        self.apply(_init_weights)

    # -- transforms (methods, as in the reference: its stages are top-level modules) ----------
    def g_a(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, "g_a", 8)

    def h_a(self, y: torch.Tensor) -> torch.Tensor:
        return self._run(y, "h_a", 4)

    def h_s(self, z: torch.Tensor) -> torch.Tensor:
        return self._run(z, "h_s", 4)

    def g_s(self, y: torch.Tensor) -> torch.Tensor:
        return self._run(y, "g_s", 8)

    def _run(self, x: torch.Tensor, prefix: str, count: int) -> torch.Tensor:
        for i in range(count):
            x = getattr(self, f"{prefix}{i}")(x)
        return x

    # -- CompressAI interface ---------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        height, width = x.shape[-2:]
        y = self.g_a(pad(x, PAD_MULTIPLE))
        z = self.h_a(y)
        _, z_likelihoods = self.entropy_bottleneck(z)
        medians = self.entropy_bottleneck._get_medians()
        z_hat = quantize_ste(z - medians) + medians
        scales_hat, means_hat = self.h_s(z_hat).chunk(2, 1)
        _, y_likelihoods = self.gaussian_conditional(y, scales_hat, means=means_hat)
        y_hat = quantize_ste(y - means_hat) + means_hat
        x_hat = self.g_s(y_hat)[..., :height, :width]
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def compress(self, x: torch.Tensor) -> dict[str, Any]:
        """Entropy-coded strings; ``shape`` is z's (CompressAI's convention), ``image_size`` the
        input's, for ``decompress(..., image_size=...)`` to crop the padding off."""
        y = self.g_a(pad(x, PAD_MULTIPLE))
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        scales_hat, means_hat = self.h_s(z_hat).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales_hat)
        y_strings = self.gaussian_conditional.compress(y, indexes, means=means_hat)
        return {"strings": [y_strings, z_strings], "shape": z.shape[-2:], "image_size": tuple(x.shape[-2:])}

    def decompress(self, strings: list, shape: Any, image_size: tuple[int, int] | None = None) -> dict[str, Any]:
        """Pixels in [0, 1]; of size 64 * ``shape``, or cropped to ``image_size`` when given."""
        if not isinstance(strings, (list, tuple)) or len(strings) != 2:
            raise BitstreamError("TIC.decompress takes the two string lists [y_strings, z_strings] from compress()")
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        scales_hat, means_hat = self.h_s(z_hat).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales_hat)
        y_hat = self.gaussian_conditional.decompress(strings[0], indexes, means=means_hat)
        x_hat = self.g_s(y_hat).clamp_(0, 1)
        if image_size is not None:
            x_hat = x_hat[..., : image_size[0], : image_size[1]]
        return {"x_hat": x_hat}

    def load_state_dict(self, state_dict, strict: bool = True):
        """CompressAI's loading (entropy tables resized to the checkpoint's); attention masks that
        some reference versions store are dropped: they are derived from sizes, never learned."""
        state_dict = {k: v for k, v in state_dict.items() if not k.endswith(".attn_mask")}
        return super().load_state_dict(state_dict, strict=strict)


def _init_weights(module: nn.Module) -> None:
    """The reference's init: truncated normal linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def build(quality: int, pretrained: bool) -> TIC:
    """The spec's builder. TransTIC's weights are not built in: the index names them (base_codecs
    in tic_reference.json), and ``icmh_hub.assemble`` downloads and loads them."""
    if pretrained:
        raise CheckpointError("TIC's pretrained weights come from the index (tic_reference.json); build it with icmh_hub.build_base('tic', q)")
    return TIC()
