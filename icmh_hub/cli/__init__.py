"""The ``icmh-hub`` command line: click commands that parse, call the library, and print.

Command modules import the library inside their commands, so ``icmh-hub --help``, ``list`` and
``info`` start without torch or CompressAI.
"""

from .main import main

__all__ = ["main"]
