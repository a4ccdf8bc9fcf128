"""AdapterSet: the adapters of one task for one codec, keyed by where they go.

An AdapterSet knows which codec family and quality it was built for, and the module path of each
insertion point, so that it can refuse a codec it does not fit before it touches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from ..errors import AdapterMismatchError, InvalidArgumentError
from .adapters import Adapter, count_parameters
from .masking import MaskGenerator
from .spec import SIDES, check_scalable, get_codec
from .variants import SCALABLE_VARIANTS

STAGES = (1, 2, 3)


def point_key(side: str, stage: int) -> str:
    """Name of an insertion point inside an AdapterSet, e.g. ``encoder_1``."""
    return f"{side}_{stage}"


class AdapterSet(nn.Module):
    """Adapters for one task: ``adapters[point_key(side, stage)]`` goes after ``points[...]``.

    ``info`` holds what describes the task and its training (task, lambda, recipe, ...); it is
    written into adapter files and model cards and never affects the computation.
    """

    def __init__(
        self,
        codec: str,
        quality: int,
        channels: int,
        variant: str,
        middle_dim: int,
        points: Mapping[str, str],
        init: str = "identity",
        info: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.codec, self.quality, self.channels = codec, quality, channels
        self.variant, self.middle_dim, self.init = variant, middle_dim, init
        self.points = dict(points)
        self.keys_by_path = {path: key for key, path in self.points.items()}
        self.info: dict[str, Any] = dict(info or {})
        self.sha256: str | None = None  # of the file these adapters were loaded from, if any
        self.adapters = nn.ModuleDict(
            {key: Adapter(channels, middle_dim, self.adapter_variant(variant), init) for key in self.points}
        )

    @staticmethod
    def adapter_variant(variant: str) -> str:
        """The variant of the Adapter modules at the insertion points."""
        return variant

    @property
    def task(self) -> str | None:
        return self.info.get("task")

    def layout(self) -> dict[str, Any]:
        """What must match between two adapter sets (or a set and a codec) to be interchangeable."""
        return {
            "codec": self.codec,
            "quality": self.quality,
            "channels": self.channels,
            "variant": self.variant,
            "middle_dim": self.middle_dim,
            "points": dict(self.points),
        }

    def num_parameters(self) -> int:
        return count_parameters(self)

    def extra_repr(self) -> str:
        return (
            f"codec={self.codec!r}, quality={self.quality}, channels={self.channels}, "
            f"variant={self.variant!r}, middle_dim={self.middle_dim}, points={sorted(self.points)}"
        )

    def check_fits(self, codec: str, quality: int, model: nn.Module) -> None:
        """Raise AdapterMismatchError unless these adapters fit ``model`` (spec ``codec`` at ``quality``)."""
        if codec != self.codec:
            raise AdapterMismatchError(
                f"adapters were made for codec {self.codec!r} but the codec is {codec!r}; "
                f"use adapters built for {codec!r}"
            )
        if quality != self.quality:
            raise AdapterMismatchError(
                f"adapters were made for {codec} quality {self.quality} but the codec is quality "
                f"{quality}; use adapters for quality {quality} (they are trained per rate point)"
            )
        modules = dict(model.named_modules())
        for key, path in self.points.items():
            if path not in modules:
                raise AdapterMismatchError(
                    f"adapter point {key} goes after module {path!r}, which the {codec} model "
                    f"does not have; the adapters and the codec have different layouts"
                )


class ScalableAdapters(AdapterSet):
    """A scalable task's adapters (``icmh_hub.core.scalable``): the mask generator, plus decoder
    SFMAs (``scalable-sfma``; none for the ``scalable-mask`` ablation, ICMH-Net's setting).
    They attach, switch and detach like any AdapterSet; an AdaptedCodec whose active task holds
    one codes in two layers."""

    def __init__(self, codec: str, quality: int, channels: int, variant: str, middle_dim: int,
                 points: Mapping[str, str], init: str = "identity", info: Mapping[str, Any] | None = None,
                 latent_channels: int | None = None, mask_hidden: int = 64) -> None:
        spec = check_scalable(get_codec(codec))
        if variant not in SCALABLE_VARIANTS:
            raise InvalidArgumentError(f"{variant!r} is not a scalable variant ({', '.join(SCALABLE_VARIANTS)})")
        if any(not key.startswith("decoder") for key in points) or (SCALABLE_VARIANTS[variant] is None and points):
            raise InvalidArgumentError(f"{variant} puts adapters in the decoder only ({'none' if SCALABLE_VARIANTS[variant] is None else 'g_s'}): g_a stays the base codec's")
        super().__init__(codec, quality, channels, variant, middle_dim, points, init, info)
        self.latent_channels = int(latent_channels or spec.latent_channels[quality])
        self.mask_hidden = int(mask_hidden)
        self.mask_generator = MaskGenerator(self.latent_channels, spec.latent_coding == "mean-scale", self.mask_hidden)

    @staticmethod
    def adapter_variant(variant: str) -> str:
        return SCALABLE_VARIANTS[variant] or "sfma"

    def layout(self) -> dict[str, Any]:
        return super().layout() | {"latent_channels": self.latent_channels, "mask_hidden": self.mask_hidden}

    def mask(self, indexes: Any, means: Any) -> Any:
        """The coding mask (bool, the shape of y) for these scale indexes and means."""
        return self.mask_generator.decide(self.mask_generator.features(indexes, means))


def is_scalable(adapters: AdapterSet | None) -> bool:
    return isinstance(adapters, ScalableAdapters)


def _check_choice(kind: str, values: Iterable[Any], allowed: Iterable[Any]) -> tuple:
    values, allowed = tuple(values), tuple(allowed)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise InvalidArgumentError(f"{kind} must be a non-empty subset of {list(allowed)}, got {list(values)}")
    return tuple(sorted(set(values), key=allowed.index))


def build_adapters(
    codec: str,
    q: int,
    variant: str = "sfma",
    middle_dim: int = 64,
    stages: Iterable[int] = STAGES,
    sides: Iterable[str] | None = None,
    init: str = "identity",
    **info: Any,
) -> AdapterSet:
    """New adapters for ``codec`` at quality ``q``: one per (side, stage), untrained.

    ``stages`` picks among 1 (1/2 resolution), 2 (1/4) and 3 (1/8); ``sides`` among encoder
    (g_a) and decoder (g_s), both by default. The scalable variants (``scalable-sfma``,
    ``scalable-mask``) are decoder-only with a mask generator (a ScalableAdapters). Extra keyword
    arguments (task, lmbda, ...) go into ``info``.
    """
    spec = get_codec(codec)
    spec.check_quality(q)
    stages = _check_choice("stages", stages, STAGES)
    scalable = variant in SCALABLE_VARIANTS
    sides = _check_choice("sides", sides if sides is not None else (("decoder",) if scalable else SIDES), SIDES)
    if scalable and SCALABLE_VARIANTS[variant] is None:
        sides = ()
    points = {
        point_key(side, stage): spec.points(side)[stage - 1] for side in sides for stage in stages
    }
    kind = ScalableAdapters if scalable else AdapterSet
    return kind(codec, q, spec.channels[q], variant, middle_dim, points, init, info)
