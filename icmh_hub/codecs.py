"""Codec specs: everything icmh-hub needs to know about one base codec family, declared once.

A spec names the builder, the quality levels, the channel width N at each level, and the module
paths after which adapters go (``encoder_points[k-1]`` / ``decoder_points[k-1]`` is stage k, at
1/2**k of the image size on both sides). Adding a codec is one ``register_codec(CodecSpec(...))``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from torch import nn

from .errors import IcmhError, unknown_name

Builder = Callable[[int, bool], nn.Module]  # (quality, pretrained) -> CompressAI model


@dataclass(frozen=True)
class CodecSpec:
    """One base codec family.

    ``channels`` maps quality -> N, the width of the features at every insertion point.
    ``pad_multiple``: the input size must be a multiple of it (64 for CompressAI's 4-stride
    hyperprior codecs); the bitstream layer pads and crops back.
    """

    name: str
    builder: Builder = field(repr=False)
    channels: Mapping[int, int]
    encoder_points: tuple[str, str, str]
    decoder_points: tuple[str, str, str]
    pad_multiple: int = 64
    description: str = ""

    @property
    def qualities(self) -> tuple[int, ...]:
        return tuple(sorted(self.channels))

    def check_quality(self, quality: int) -> int:
        if quality not in self.channels:
            raise unknown_name(f"quality for {self.name}", quality, self.qualities)
        return quality

    def build(self, quality: int, pretrained: bool = False) -> nn.Module:
        """The base codec at ``quality``, in eval mode (pretrained weights or random ones)."""
        model = self.builder(self.check_quality(quality), pretrained)
        return model.eval()

    def points(self, side: str) -> tuple[str, str, str]:
        if side == "encoder":
            return self.encoder_points
        if side == "decoder":
            return self.decoder_points
        raise unknown_name("side", side, SIDES)


SIDES = ("encoder", "decoder")
_CODECS: dict[str, CodecSpec] = {}


def register_codec(spec: CodecSpec, replace: bool = False) -> CodecSpec:
    """Declare a codec family; ``replace=True`` to overwrite an existing name on purpose."""
    if spec.name in _CODECS and not replace:
        raise IcmhError(f"codec {spec.name!r} is already registered; pass replace=True to override it")
    _CODECS[spec.name] = spec
    return spec


def get_codec(name: str) -> CodecSpec:
    """The spec called ``name``; an unknown name lists the closest ones."""
    try:
        return _CODECS[name]
    except KeyError:
        raise unknown_name("codec", name, sorted(_CODECS)) from None


def list_codecs() -> list[str]:
    return sorted(_CODECS)


def _zoo_builder(architecture: str) -> Builder:
    """Build through CompressAI's zoo: its URLs, its cache, its state-dict conversion."""

    def build(quality: int, pretrained: bool) -> nn.Module:
        from compressai.zoo import image_models

        return image_models[architecture](quality=quality, metric="mse", pretrained=pretrained)

    return build


def _zoo_channels(architecture: str) -> dict[int, int]:
    from compressai.zoo.image import cfgs

    return {q: cfg[0] for q, cfg in cfgs[architecture].items()}


def _elic_builder(quality: int, pretrained: bool) -> nn.Module:
    if pretrained:
        raise IcmhError(
            "CompressAI ships no pretrained weights for Elic2022Official; build it with "
            "pretrained=False and load your own checkpoint into it"
        )
    from compressai.models import Elic2022Official

    return Elic2022Official(N=192, M=320)


_GDN_POINTS = (("g_a.1", "g_a.3", "g_a.5"), ("g_s.5", "g_s.3", "g_s.1"))

for _arch, _about in (
    ("bmshj2018-hyperprior", "Balle et al. 2018, scale hyperprior"),
    ("mbt2018-mean", "Minnen et al. 2018, mean-scale hyperprior"),
    ("mbt2018", "Minnen et al. 2018, joint autoregressive and hierarchical priors"),
):
    register_codec(
        CodecSpec(_arch, _zoo_builder(_arch), _zoo_channels(_arch), *_GDN_POINTS, description=_about)
    )

register_codec(
    CodecSpec(
        "cheng2020-anchor",
        _zoo_builder("cheng2020-anchor"),
        _zoo_channels("cheng2020-anchor"),
        encoder_points=("g_a.1", "g_a.3", "g_a.5"),  # after the residual block of each stride stage
        decoder_points=("g_s.6", "g_s.4", "g_s.2"),  # after the residual block behind each upsample
        description="Cheng et al. 2020, residual blocks, GMM entropy model with context",
    )
)
register_codec(
    CodecSpec(
        "cheng2020-attn",
        _zoo_builder("cheng2020-attn"),
        _zoo_channels("cheng2020-attn"),
        encoder_points=("g_a.1", "g_a.4", "g_a.6"),
        decoder_points=("g_s.8", "g_s.6", "g_s.3"),
        description="Cheng et al. 2020 with attention blocks",
    )
)
register_codec(
    CodecSpec(
        "elic2022",
        _elic_builder,
        {q: 192 for q in range(1, 9)},
        encoder_points=("g_a.3", "g_a.8", "g_a.12"),  # end of each stage before the next stride
        decoder_points=("g_s.13", "g_s.9", "g_s.4"),
        description="He et al. 2022 (CompressAI Elic2022Official, N=192, M=320; bring weights)",
    )
)

DEMO_CODEC = "mbt2018-mean-demo"
DEMO_N, DEMO_M = 32, 96


def _demo_builder(quality: int, pretrained: bool) -> nn.Module:
    """A narrow mean-scale hyperprior that trains on a CPU; its weights ship in the package
    (the demo zoo, ``adapters/demo``), trained by ``python -m benchmarks.proxy``."""
    if pretrained:
        from .registry import build_base, load_index

        if (DEMO_CODEC, quality) not in load_index().bases:
            raise IcmhError(f"no {DEMO_CODEC} q{quality} weights in the index; run `python -m benchmarks.proxy` to train them")
        return build_base(DEMO_CODEC, quality)
    from compressai.models import MeanScaleHyperprior

    return MeanScaleHyperprior(N=DEMO_N, M=DEMO_M)


register_codec(
    CodecSpec(
        DEMO_CODEC,
        _demo_builder,
        {q: DEMO_N for q in range(1, 5)},
        *_GDN_POINTS,
        description=f"mbt2018-mean with N={DEMO_N}, M={DEMO_M}, trained on the proxy data set (demo zoo, offline)",
    )
)

from . import tic as _tic  # noqa: E402,F401  registers "tic" (the paper's codec; defined in its own module)
