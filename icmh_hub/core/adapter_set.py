"""AdapterSet: the adapters of one task for one codec, keyed by where they go, and the base of
every method's adapters (``icmh_hub.core.methods``).

An AdapterSet knows which codec family and quality it was built for, its method's config, and
the module path of each insertion point, so that it can refuse a codec it does not fit before it
touches it. A method's subclass says how each point attaches (``hook_kind``: a hook on the
module's output, or the module's forward replaced while its weights stay the codec's) and, if it
codes differently, how the codec codes with it (``codec_forward`` / ``codec_compress`` /
``codec_decompress``; ``layered`` for two-layer files).

This class itself is SFMA and its ablations (``Adapter`` modules of the method's name after each
point).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from ..errors import AdapterMismatchError, InvalidArgumentError
from .adapters import Adapter, count_parameters
from .methods import MethodConfig, get_method, method_name
from .spec import SIDES, CodecSpec, get_codec
from .variants import AdapterConfig

if TYPE_CHECKING:
    import torch

STAGES = (1, 2, 3)


def point_key(side: str, stage: int) -> str:
    """Name of an insertion point inside an AdapterSet, e.g. ``encoder_1``."""
    return f"{side}_{stage}"


class AdapterSet(nn.Module):
    """Adapters for one task: ``adapters[point_key(side, stage)]`` goes after ``points[...]``.

    ``info`` holds what describes the task and its training (task, lambda, recipe, ...); it is
    written into adapter files and model cards and never affects the computation.
    """

    config_class: ClassVar[type[MethodConfig]] = AdapterConfig
    layered: ClassVar[bool] = False  # codes in two layers (a base layer for the task and an enhancement)
    separate_file: ClassVar[bool] = False  # training names its result after the method (beside SFMA's)

    def __init__(self, codec: str, quality: int, points: Mapping[str, str], config: MethodConfig,
                 info: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        spec = get_codec(codec)
        self.codec, self.quality, self.channels = spec.name, spec.check_quality(quality), spec.channels[quality]
        self.config = config
        self.points = dict(points)
        self.keys_by_path = {path: key for key, path in self.points.items()}
        self.info: dict[str, Any] = dict(info or {})
        self.sha256: str | None = None  # of the file these adapters were loaded from, if any
        self.build_modules(spec)

    # -- what a method defines -----------------------------------------------------------------
    @classmethod
    def allowed_points(cls, spec: CodecSpec, quality: int, config: MethodConfig) -> dict[str, str]:
        """Every point this method may use on ``spec`` (key -> module path): files may name no other."""
        return stage_points(spec, STAGES, SIDES)

    @classmethod
    def default_points(cls, spec: CodecSpec, quality: int, config: MethodConfig, stages: Iterable[int] = STAGES,
                       sides: Iterable[str] | None = None) -> dict[str, str]:
        """The points of a new set: one per chosen (side, stage)."""
        return stage_points(spec, stages, SIDES if sides is None else sides)

    def build_modules(self, spec: CodecSpec) -> None:
        """Create the modules; the config is checked by then."""
        self.adapters = nn.ModuleDict(
            {key: Adapter(self.channels, self.config.middle_dim, self.adapter_variant, self.config.init) for key in self.points}
        )

    @property
    def adapter_variant(self) -> str:
        """The ``Adapter`` variant (``VARIANTS``) at each point: SFMA's methods are their own variant."""
        return self.method

    def hook_kind(self, path: str) -> str:
        """How the point at module ``path`` attaches: "output" (a forward hook gives the module's
        output to ``adapt_output``) or "forward" (the module's forward goes to ``adapt_forward``)."""
        return "output"

    def adapt_output(self, path: str, module: nn.Module, inputs: tuple, output: Any) -> Any:
        """The adapted output of the module at ``path`` (None: leave it as it is)."""
        return self.adapters[self.keys_by_path[path]](output)

    def adapt_forward(self, path: str, module: nn.Module, forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The module's output computed the method's way (``forward`` is the module's own)."""
        raise NotImplementedError(f"{type(self).__name__} attaches no point by replacing a forward")

    def codec_forward(self, codec: Any, x: "torch.Tensor") -> dict[str, Any]:
        return codec.base(x)

    def codec_compress(self, codec: Any, x: "torch.Tensor") -> dict[str, Any]:
        return codec.base.compress(x)

    def codec_decompress(self, codec: Any, strings: Any, shape: Any, **kwargs: Any) -> dict[str, Any]:
        return codec.base.decompress(strings, shape, **kwargs)

    # -- description --------------------------------------------------------------------------
    @property
    def method(self) -> str:
        return self.config.method

    @property
    def variant(self) -> str:
        """The method's name (what 0.1 called the variant)."""
        return self.config.method

    @property
    def middle_dim(self) -> int | None:
        return getattr(self.config, "middle_dim", None)

    @property
    def init(self) -> str | None:
        return getattr(self.config, "init", None)

    @property
    def task(self) -> str | None:
        return self.info.get("task")

    def layout(self) -> dict[str, Any]:
        """What must match between two adapter sets (or a set and a codec) to be interchangeable:
        codec, quality, N, the method (under its 0.1 name "variant"), its options but the
        initialisation, and the points."""
        options = {k: v for k, v in self.config.to_metadata().items() if k not in ("method", "init")}
        return {"codec": self.codec, "quality": self.quality, "channels": self.channels, "variant": self.method,
                **options, "points": dict(self.points)}

    def num_parameters(self) -> int:
        return count_parameters(self)

    def extra_repr(self) -> str:
        return f"codec={self.codec!r}, quality={self.quality}, config={self.config}, points={sorted(self.points)}"

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


def stage_points(spec: CodecSpec, stages: Iterable[int], sides: Iterable[str]) -> dict[str, str]:
    """key -> module path of the chosen stages (1..3) on the chosen sides."""
    stages, sides = _check_choice("stages", stages, STAGES), _check_choice("sides", sides, SIDES)
    return {point_key(side, stage): spec.points(side)[stage - 1] for side in sides for stage in stages}


def _check_choice(kind: str, values: Iterable[Any], allowed: Iterable[Any]) -> tuple:
    values, allowed = tuple(values), tuple(allowed)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise InvalidArgumentError(f"{kind} must be a non-empty subset of {list(allowed)}, got {list(values)}")
    return tuple(sorted(set(values), key=allowed.index))


def build_adapters(
    codec: str,
    q: int,
    variant: str | None = None,
    middle_dim: int | None = None,
    stages: Iterable[int] = STAGES,
    sides: Iterable[str] | None = None,
    init: str | None = None,
    *,
    method: str | None = None,
    options: Mapping[str, Any] | None = None,
    **info: Any,
) -> AdapterSet:
    """New adapters of ``method`` (``variant`` is its 0.1 name; default "sfma") for ``codec`` at
    quality ``q``, untrained.

    ``stages`` picks among 1 (1/2 resolution), 2 (1/4) and 3 (1/8); ``sides`` among encoder
    (g_a) and decoder (g_s), for the methods with points at stages (each method has its
    defaults: the scalable ones are decoder-only). ``middle_dim``, ``init`` and ``options`` set
    the method's config fields; other keyword arguments (task, lmbda, ...) go into ``info``.
    """
    found = get_method(method_name(method, variant))
    spec = get_codec(codec)
    spec.check_quality(q)
    found.check_codec(spec.name)
    values = dict(options or {}) | {k: v for k, v in (("middle_dim", middle_dim), ("init", init)) if v is not None}
    config = found.make_config(**values)
    kind = found.adapter_class()
    return kind(spec.name, q, kind.default_points(spec, q, config, stages, sides), config, info)
