"""The built-in codec families. Each module declares its specs (``register_codec``) and nothing
else runs at import: the networks are built, and torch / CompressAI imported, only when a codec
is. ``import icmh_hub`` imports this package, so every layer finds the built-in codecs."""

from . import demo, tic, zoo  # noqa: F401
