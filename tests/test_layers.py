"""The package's import rule (tests/layering.py), checked on the real source and shown to bite."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import icmh_hub

from .layering import check

PACKAGE = Path(icmh_hub.__file__).parent


def test_the_package_follows_its_layers_with_no_cycles():
    assert check(PACKAGE) == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "icmh_hub"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_an_upward_import_inside_a_function_is_caught(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/spec.py": """
            def build(q):
                from ..hub.index import load_index  # core reaching up to the hub: forbidden
                return load_index()
        """,
        "hub/__init__.py": "",
        "hub/index.py": "from ..core.spec import build\n",
    })
    problems = check(root)
    assert any("core/spec.py:3" in p and "above it" in p for p in problems), problems
    assert any("import cycle" in p and "icmh_hub.core.spec" in p and "icmh_hub.hub.index" in p for p in problems), problems


def test_sibling_layers_and_the_facade_are_checked(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "from .cli import main\n",
        "cli/__init__.py": "main = None\n",
        "training/__init__.py": "",
        "training/trainer.py": "import icmh_hub.evaluation.run\n",
        "evaluation/__init__.py": "",
        "evaluation/run.py": "from icmh_hub import load\n",
    })
    problems = "\n".join(check(root))
    assert "sibling layer evaluation" in problems
    assert "imports the package facade" in problems
    assert "the facade imports icmh_hub.cli" in problems


def test_light_commands_import_neither_torch_nor_compressai(tmp_path):
    from icmh_hub.formats.bitstream import Header, pack

    header = Header("mbt2018-mean", 1, "cls", "file", "ab" * 32, True, "cd" * 16, 64, 64, 64, 64,
                    variant="scalable-sfma", layered=True)
    (tmp_path / "two.icmh").write_bytes(pack(header, [[b"base"], [b"enhancement"], [b"z"]], (1, 1)))
    strip = ["strip", str(tmp_path / "two.icmh"), "-o", str(tmp_path / "base.icmh")]  # bytes only
    for command in (["--help"], ["list"], ["info", "mbt2018-mean/cls/q3"], ["codecs"], ["variants"], strip):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "icmh_hub.cli", *command],
                              capture_output=True, text=True, check=True)
        imported = [line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
        heavy = [m for m in imported if m.split(".")[0] in ("torch", "compressai", "torchvision", "huggingface_hub")]
        assert heavy == [], (command, heavy[:5])
