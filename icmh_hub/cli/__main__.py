"""``python -m icmh_hub.cli``: the same as the ``icmh-hub`` command."""

from .main import main

main(prog_name="icmh-hub")
