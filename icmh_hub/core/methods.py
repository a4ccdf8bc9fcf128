"""Adapter methods by name: one registration per method, as PEFT registers its tuners.

A method is a way of adapting a frozen codec to a task: SFMA and its ablations (adapters on
the outputs of the transforms' stages), the two scalable variants (decoder adapters plus a mask
that splits the latent into two layers), TransTIC (prompts inside the Swin blocks), or one of
yours. ``register_method`` names three things:

- ``config``: a frozen dataclass (subclass of ``MethodConfig``) whose fields are the method's
  hyper-parameters; its ``method`` field is the discriminator an adapter file's metadata holds,
  so a file says which class reads it (PEFT's ``peft_type``);
- ``adapters``: the ``AdapterSet`` subclass that builds the method's modules for a codec spec
  and quality, says how each insertion point attaches (a hook on the module's output, or its
  forward replaced while its weights stay the codec's) and, optionally, how the codec codes
  with it (one layer by default, two for the scalable methods);
- which codec families it runs on (``codecs``; empty: all of them).

This module is plain data (the adapter class may be named as ``"module:Class"``), so the CLI
lists methods without importing torch; the built-in methods register in ``icmh_hub.methods``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import AdapterFileError, InvalidArgumentError, unknown_name

DEFAULT_METHOD = "sfma"


@dataclass(frozen=True)
class MethodConfig:
    """Hyper-parameters of one method; every field is written to (and read back from) adapter
    files, so fields hold JSON scalars only (int, float, str, bool)."""

    method: str = DEFAULT_METHOD
    limits: ClassVar[Mapping[str, tuple[int, int]]] = {}  # integer fields' allowed range, checked on load

    def to_metadata(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], where: str = "adapter metadata") -> "MethodConfig":
        """The config whose fields ``meta`` holds (missing ones take their defaults); a value of the
        wrong type or out of range is refused by name, before anything is built from it."""
        values = {}
        for item in dataclasses.fields(cls):
            if item.name not in meta:
                continue
            value, default = meta[item.name], item.default
            if type(value) is not type(default) and not (isinstance(default, float) and type(value) is int):
                raise AdapterFileError(f"{where} {item.name}={value!r} is invalid (a {type(default).__name__}); the file is damaged")
            low, high = cls.limits.get(item.name, (None, None))
            if low is not None and not low <= value <= high:
                raise AdapterFileError(f"{where} {item.name}={value!r} is invalid (from {low} to {high}); the file is damaged")
            values[item.name] = value
        return cls(**values)


@dataclass(frozen=True)
class Method:
    """One registered method (see the module docstring)."""

    name: str
    config: type[MethodConfig]
    adapters: type | str = field(repr=False)  # an AdapterSet subclass, or "module:Class" naming one
    description: str = ""
    codecs: tuple[str, ...] = ()

    def adapter_class(self) -> type:
        """The method's AdapterSet subclass (imported now if named as "module:Class")."""
        if not isinstance(self.adapters, str):
            return self.adapters
        module, _, name = self.adapters.partition(":")
        return getattr(importlib.import_module(module), name)

    def make_config(self, **values: Any) -> MethodConfig:
        """This method's config from ``values`` (the others at their defaults), ``method`` set to its name."""
        unknown = sorted(name for name in values if not self.has_option(name))
        if unknown:
            options = sorted(item.name for item in dataclasses.fields(self.config) if item.name != "method")
            raise InvalidArgumentError(f"method {self.name} has no option {', '.join(unknown)}; its options: {', '.join(options)}")
        return self.config(**(values | {"method": self.name}))

    def has_option(self, name: str) -> bool:
        """Whether the method's config has the field ``name`` (e.g. "middle_dim", "init")."""
        return name in {item.name for item in dataclasses.fields(self.config)}

    def check_codec(self, codec: str) -> None:
        if self.codecs and codec not in self.codecs:
            raise InvalidArgumentError(f"method {self.name} runs on {', '.join(self.codecs)} only, not on {codec}")


_METHODS: dict[str, Method] = {}


def register_method(
    name: str, config: type[MethodConfig], adapters: type | str, description: str = "",
    codecs: tuple[str, ...] = (), replace: bool = False,
) -> Method:
    """Declare a method; ``replace=True`` to overwrite an existing name on purpose."""
    if not isinstance(name, str) or not name or name in ("none", "human"):
        raise InvalidArgumentError(f"a method name is a non-empty string other than 'none' / 'human', got {name!r}")
    if name in _METHODS and not replace:
        raise InvalidArgumentError(f"method {name!r} is already registered; pass replace=True to override it")
    if not (isinstance(config, type) and issubclass(config, MethodConfig)):
        raise InvalidArgumentError(f"a method's config is a MethodConfig dataclass, got {config!r}")
    method = Method(name, config, adapters, description, tuple(codecs))
    _METHODS[name] = method
    return method


def method_name(method: str | None, variant: str | None = None) -> str:
    """The method a call asks for: ``method``, or ``variant`` (its 0.1 name), else the default;
    both given and different is an error."""
    if method and variant and method != variant:
        raise InvalidArgumentError(f"method={method!r} and variant={variant!r} disagree; give one (variant is method's old name)")
    return method or variant or DEFAULT_METHOD


def get_method(name: str) -> Method:
    """The method called ``name``; an unknown name lists the closest ones."""
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise unknown_name("method", name, sorted(_METHODS)) from None


def list_methods() -> list[str]:
    return list(_METHODS)
