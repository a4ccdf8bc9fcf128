"""CompressAI, imported once without the one warning its import prints.

``import compressai`` pulls in torch_geometric, which calls ``torch.jit.script`` at import time;
current torch answers with ``FutureWarning: torch.jit.script is deprecated``. That warning is
about a dependency of a dependency and says nothing to our users, so exactly it is filtered
here, around that import and nowhere else. Every module of ours that needs CompressAI imports it
from here first (``from icmh_hub._compressai import compressai``); later ``from compressai...``
imports find it loaded and print nothing.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    import compressai  # noqa: F401  (imports every compressai submodule)

__all__ = ["compressai"]
