"""Adapter modules: SFMA (spatial-frequency modulation adapter) and the paper's ablation variants.

The modules here know nothing about codecs: each maps a feature map (B, C, H, W) to one of the
same shape, as ``x + sum(branch(x))``. The spatial branch (SMA) gates a depth-wise 5x5 view of
the features with a second projection; the frequency branch (FMA) rescales the amplitude of the
half spectrum (rfft2) of a projection and keeps its phase. DESIGN.md section 2 gives the maths.

All 1x1 projections that read the same input are one convolution (``down``), split afterwards:
the same numbers as separate projections, in one pass over the input.

Initialisation (``init``):

- ``"identity"`` (our default): the last 1x1 convolution of every branch starts at zero, so a
  fresh adapter returns its input exactly and training starts from the base codec's behaviour
  (as LoRA does). Gradients still reach every parameter after the first step.
- ``"reference"``: PyTorch's default convolution init everywhere, as the paper's released code.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .errors import unknown_name

VARIANTS: dict[str, tuple[tuple[str, ...], ...]] = {
    # variant name -> sequence of stages; each stage is the tuple of parallel branches in it
    "sfma": (("spatial", "frequency"),),
    "sma": (("spatial",),),
    "fma": (("frequency",),),
    "sma->fma": (("spatial",), ("frequency",)),
    "fma->sma": (("frequency",), ("spatial",)),
    "sma+sma": (("spatial", "spatial"),),
    "naive": (("bottleneck",),),
}
INITS = ("identity", "reference")
FFT_NORM = "backward"  # torch's default; the reference code calls rfft2 / irfft2 without a norm


class SpatialModulation(nn.Module):
    """SMA on projected features: ``up(relu(dw5x5(a) * b))`` with ``a, b`` the two projections."""

    in_width_factor = 2  # needs two d-wide projections of the input

    def __init__(self, channels: int, middle_dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(middle_dim, middle_dim, 5, padding=2, groups=middle_dim)
        self.up = nn.Conv2d(middle_dim, channels, 1)

    def forward(self, projected: torch.Tensor) -> torch.Tensor:
        a, b = projected.chunk(2, dim=1)
        return self.up(F.relu(self.dw(a) * b))


class FrequencyModulation(nn.Module):
    """FMA on projected features: a learned, input-dependent gain on the amplitude spectrum.

    The gain ``sigmoid(mix(relu(dw3x3(|Z|))))`` is computed on the amplitude of the half
    spectrum only and multiplies the complex spectrum, which scales the amplitude and keeps the
    phase without a polar round trip. FFTs run in float32 (half precision FFTs only take powers
    of two) and the result is cast back.
    """

    in_width_factor = 1

    def __init__(self, channels: int, middle_dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(middle_dim, middle_dim, 3, padding=1, groups=middle_dim)
        self.mix = nn.Conv2d(middle_dim, middle_dim, 1)
        self.up = nn.Conv2d(middle_dim, channels, 1)

    def forward(self, projected: torch.Tensor) -> torch.Tensor:
        height, width = projected.shape[-2:]
        spectrum = torch.fft.rfft2(projected.float(), norm=FFT_NORM)
        amplitude = spectrum.abs()
        gain = torch.sigmoid(self.mix(F.relu(self.dw(amplitude.to(self.dw.weight.dtype)))))
        filtered = torch.fft.irfft2(spectrum * gain.float(), s=(height, width), norm=FFT_NORM)
        return self.up(F.relu(filtered.to(projected.dtype)))


class Bottleneck(nn.Module):
    """The naive adapter's branch: ``up(relu(z))`` on one d-wide projection."""

    in_width_factor = 1

    def __init__(self, channels: int, middle_dim: int) -> None:
        super().__init__()
        self.up = nn.Conv2d(middle_dim, channels, 1)

    def forward(self, projected: torch.Tensor) -> torch.Tensor:
        return self.up(F.relu(projected))


BRANCHES: dict[str, type[nn.Module]] = {
    "spatial": SpatialModulation,
    "frequency": FrequencyModulation,
    "bottleneck": Bottleneck,
}


class ParallelAdapter(nn.Module):
    """``x + sum_i branch_i(down(x)[i])``: parallel branches behind one fused 1x1 projection."""

    def __init__(self, channels: int, middle_dim: int, branches: tuple[str, ...]) -> None:
        super().__init__()
        self.branch_names = branches
        self.branches = nn.ModuleList(BRANCHES[name](channels, middle_dim) for name in branches)
        self.widths = [b.in_width_factor * middle_dim for b in self.branches]
        self.down = nn.Conv2d(channels, sum(self.widths), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.down(x).split(self.widths, dim=1)
        out = x
        for branch, part in zip(self.branches, projected):
            out = out + branch(part)
        return out

    def zero_output(self) -> None:
        """Make the adapter an exact identity by zeroing each branch's last convolution."""
        for branch in self.branches:
            nn.init.zeros_(branch.up.weight)
            nn.init.zeros_(branch.up.bias)


class Adapter(nn.Module):
    """One adapter of a named variant (see ``VARIANTS``): one or more ParallelAdapters in a row."""

    def __init__(
        self, channels: int, middle_dim: int = 64, variant: str = "sfma", init: str = "identity"
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise unknown_name("adapter variant", variant, VARIANTS)
        if init not in INITS:
            raise unknown_name("adapter init", init, INITS)
        if middle_dim < 1 or channels < 1:
            raise ValueError(f"channels and middle_dim must be positive, got {channels}, {middle_dim}")
        self.channels, self.middle_dim, self.variant = channels, middle_dim, variant
        self.stages = nn.ModuleList(
            ParallelAdapter(channels, middle_dim, branches) for branches in VARIANTS[variant]
        )
        if init == "identity":
            for stage in self.stages:
                stage.zero_output()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters in ``module``."""
    return sum(p.numel() for p in module.parameters())
