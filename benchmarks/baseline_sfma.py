"""A straightforward SFMA, the baseline that ``icmh_hub.adapters`` is measured and tested against.

This is the paper's SFMA written the obvious way, as the paper's released code
does: three separate 1x1 projections of the input (``s_down1``, ``s_down2``, ``f_down``), the
frequency gain applied by splitting the spectrum into amplitude and angle and rebuilding it with
cos and sin, two separate ``up`` convolutions, and the residual added last. Parameter names
follow the reference code, so ``from_adapter`` / ``load_adapter_state`` map our file format v1
(one fused ``down``) onto it and the two modules compute with the same weights.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from icmh_hub.core.adapters import FFT_NORM, Adapter

# (our name inside stages.0, the baseline's name)
_RENAMES = (
    ("branches.0.dw", "s_dw"),
    ("branches.0.up", "s_up"),
    ("branches.1.dw", "f_dw"),
    ("branches.1.mix", "f_inter"),
    ("branches.1.up", "f_up"),
)


class BaselineSFMA(nn.Module):
    """``x + s_up(relu(s_dw(s_down1(x)) * s_down2(x))) + f_up(relu(irfft2(polar(A * m, angle))))``."""

    def __init__(self, channels: int, middle_dim: int = 64) -> None:
        super().__init__()
        d = middle_dim
        self.s_down1 = nn.Conv2d(channels, d, 1)
        self.s_down2 = nn.Conv2d(channels, d, 1)
        self.s_dw = nn.Conv2d(d, d, 5, padding=2, groups=d)
        self.s_up = nn.Conv2d(d, channels, 1)
        self.f_down = nn.Conv2d(channels, d, 1)
        self.f_dw = nn.Conv2d(d, d, 3, padding=1, groups=d)
        self.f_inter = nn.Conv2d(d, d, 1)
        self.f_up = nn.Conv2d(d, channels, 1)

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        return self.s_up(F.relu(self.s_dw(self.s_down1(x)) * self.s_down2(x)))

    def frequency(self, x: torch.Tensor) -> torch.Tensor:
        z = self.f_down(x)
        spectrum = torch.fft.rfft2(z, norm=FFT_NORM)
        amplitude, angle = torch.abs(spectrum), torch.angle(spectrum)
        gain = torch.sigmoid(self.f_inter(F.relu(self.f_dw(amplitude))))
        amplitude = amplitude * gain
        rebuilt = torch.complex(amplitude * torch.cos(angle), amplitude * torch.sin(angle))
        filtered = torch.fft.irfft2(rebuilt, s=z.shape[-2:], norm=FFT_NORM)
        return self.f_up(F.relu(filtered))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.spatial(x) + self.frequency(x)

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> "BaselineSFMA":
        """Load the state_dict of our ``Adapter(variant="sfma")`` (file format v1)."""
        d = self.s_down1.out_channels
        mapped = {}
        for kind in ("weight", "bias"):
            down = state[f"stages.0.down.{kind}"]
            for index, name in enumerate(("s_down1", "s_down2", "f_down")):
                mapped[f"{name}.{kind}"] = down[index * d:(index + 1) * d]
            for ours, theirs in _RENAMES:
                mapped[f"{theirs}.{kind}"] = state[f"stages.0.{ours}.{kind}"]
        self.load_state_dict(mapped)
        return self

    @classmethod
    def from_adapter(cls, adapter: Adapter) -> "BaselineSFMA":
        """A baseline computing with ``adapter``'s weights (copied), which must be an SFMA."""
        if adapter.variant != "sfma":
            raise ValueError(f"the baseline is an SFMA; got an adapter of variant {adapter.variant!r}")
        baseline = cls(adapter.channels, adapter.middle_dim)
        state = {k: v.detach().clone() for k, v in adapter.state_dict().items()}
        return baseline.load_adapter_state(state).to(next(adapter.parameters()).dtype)
