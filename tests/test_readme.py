"""README and docs/*.md stay true: README's generated tables match the registry index and the
CLI, the set-up commands come first, README stays short, every relative link and anchor
resolves, every docs page is linked from README, and every code block marked
``<!-- runnable -->`` runs (offline)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from icmh_hub.cli import readme_tables
from icmh_hub.cli import main
from icmh_hub.errors import IcmhError
from icmh_hub.hub.index import INDEX_ENV, entry_from_dict

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
README_MAX_LINES = 400
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
RUNNABLE = "<!-- runnable -->"
FENCE = re.compile(r"^```(\w*)\s*$")
LANGUAGES = ("python", "bash")
# CompressAI's own import warns so (torch_geometric calls torch.jit.script): icmh-hub's imports of
# CompressAI filter exactly this warning, a user's ``from compressai... import`` does not
COMPRESSAI_IMPORT_WARNING = re.compile(r".*FutureWarning: `torch\.jit\.script` is deprecated.*\n\s*warnings\.warn\(\n")


def code_blocks(text: str) -> list[tuple[int, str, str, bool]]:
    """(line number, language, code, marked runnable) of every fenced block in ``text``."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        marked = i > 0 and lines[i - 1].strip() == RUNNABLE
        blocks.append((i + 1, opening.group(1), "\n".join(lines[i + 1:end]) + "\n", marked))
        i = end + 1
    return blocks


def runnable_blocks() -> list:
    return [pytest.param(lang, code, id=f"{page.stem}-line{line}-{lang}")
            for page in PAGES for line, lang, code, marked in code_blocks(page.read_text()) if marked]


# ----------------------------------------------------------------------------- structure


def test_set_up_commands_are_the_first_code_block_and_come_early():
    line, lang, code, _ = code_blocks(README.read_text())[0]
    clone, install = code.splitlines()
    assert lang == "bash" and clone.startswith("git clone ") and install == 'pip install -e ".[dev]"'
    assert line < 30, "the set-up commands belong on README's first screen"


def test_readme_stays_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README has {lines} lines; move details to docs/*.md (at most {README_MAX_LINES})"


def test_no_command_that_does_not_exist():
    """icmh-hub is not on PyPI: no page may offer to install or upgrade it from there."""
    for page in PAGES:
        assert not re.search(r"pip install (-U |--upgrade )?icmh-hub", page.read_text()), page.name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_runnable_marker_sits_on_a_python_or_bash_block(page):
    text = page.read_text()
    marked = [lang for _, lang, _, is_marked in code_blocks(text) if is_marked]
    assert len(marked) == text.count(RUNNABLE), f"{page.name}: a {RUNNABLE} marker is not on the line just before a code fence"
    assert set(marked) <= set(LANGUAGES)
    if page == README:
        assert {"python", "bash"} <= set(marked), "the quickstart and a CLI example must stay runnable"


def anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as dashes."""
    headings = [line.lstrip("#").strip() for line in text.splitlines() if re.match(r"^#{1,6} ", line)]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links in code are not links
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked.read_text()), f"{page.name} links to {target}: no such heading"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in LINK.findall(README.read_text())}
    assert not [page.name for page in DOCS if page.resolve() not in linked]


def test_anchors_follow_githubs_rules():
    assert anchors("# Scalable coding: one file for machines and people\n## TIC, the paper's codec\n") == {
        "scalable-coding-one-file-for-machines-and-people", "tic-the-papers-codec"}


def test_code_blocks_parser_sees_markers_and_languages():
    text = f"a\n```bash\nls\n```\n{RUNNABLE}\n```python\nprint(1)\n```\n"
    assert code_blocks(text) == [(2, "bash", "ls\n", False), (6, "python", "print(1)\n", True)]


# ----------------------------------------------------------------------------- registry table


def test_registry_table_matches_the_index(monkeypatch):
    monkeypatch.delenv(INDEX_ENV, raising=False)
    in_readme = readme_tables.between(README.read_text(), *readme_tables.REGISTRY_MARKERS)
    assert in_readme == readme_tables.registry_table(), "README's registry table is stale: run python -m icmh_hub.cli.readme_tables"


def test_registry_table_ignores_the_users_index(monkeypatch, tmp_path):
    user = tmp_path / "mine.json"
    user.write_text('{"entries": [{"id": "x/cls/q1", "codec": "x", "task": "cls", "q": 1, "status": "recipe"}]}')
    monkeypatch.setenv(INDEX_ENV, str(user))
    assert "| x | cls |" not in readme_tables.registry_table()
    assert os.environ[INDEX_ENV] == str(user)  # restored


def _entry(metrics):
    return entry_from_dict({"id": "c/det/q2", "codec": "c", "task": "det", "q": 2, "lmbda": 10.0, "status": "published",
                            "source": {"kind": "local", "path": "a.safetensors"}, "sha256": "0" * 64, "size": 1,
                            "metrics": metrics})


def test_registry_table_shows_measured_bpp_and_accuracy_only():
    def metric(name, value, source="measured", dataset="coco-val2017"):
        return {"dataset": dataset, "images": 500, "metric": name, "value": value, "date": "2024-01-01", "source": source}

    paper_only = _entry([metric("bbox_AP50", 55.0, source="paper")])
    measured = _entry([metric("bbox_AP", 30.0), metric("bbox_AP50", 51.234), metric("bpp_est", 0.12345),
                       metric("bbox_AP50", 60.0, source="paper")])
    actual_only = _entry([metric("bpp_actual", 0.2, dataset="tiny"), metric("psnr", 30.0, dataset="tiny")])
    assert readme_tables.registry_table([paper_only]).splitlines()[2:] == ["| c | sfma | det | 2 | 10 | published | - |"]
    rows = readme_tables.registry_table([paper_only, measured, actual_only]).splitlines()[2:]
    assert rows == ["| c | sfma | det | 2 | 10 | published | q2: 0.1235, bbox_AP50 51.23<br>q2: 0.2000 (actual), - "
                    "(coco-val2017, 500 images; tiny, 500 images) |"]


# ----------------------------------------------------------------------------- CLI table


def test_cli_table_lists_every_command_and_nothing_else():
    listed = readme_tables.table_commands(README.read_text())
    assert len(listed) == len(set(listed)), f"a command is listed twice: {listed}"
    missing, removed = sorted(set(main.commands) - set(listed)), sorted(set(listed) - set(main.commands))
    assert not missing and not removed, (
        f"README's CLI table lacks {missing} and lists removed {removed}: run python -m icmh_hub.cli.readme_tables")


def test_cli_table_generator_covers_main():
    assert sorted(readme_tables.table_commands(readme_tables.CLI_MARKERS[0] + "\n" + readme_tables.cli_table() + "\n"
                                               + readme_tables.CLI_MARKERS[1])) == sorted(main.commands)


# ----------------------------------------------------------------------------- the rewriting tool


def test_tool_rewrites_a_stale_readme_and_check_reports_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(INDEX_ENV, raising=False)
    start, end = readme_tables.REGISTRY_MARKERS
    stale = README.read_text().replace(start, start + "\n| stale | row |", 1)
    path = tmp_path / "README.md"
    path.write_text(stale)
    assert readme_tables.main([str(path), "--check"]) == 1
    assert path.read_text() == stale
    assert readme_tables.main([str(path)]) == 0
    assert "| stale | row |" not in path.read_text()
    assert readme_tables.main([str(path), "--check"]) == 0


def test_missing_markers_are_a_clear_error(tmp_path, capsys):
    with pytest.raises(IcmhError, match="registry-table:start"):
        readme_tables.render("# no tables here\n")
    path = tmp_path / "README.md"
    path.write_text("# no tables here\n")
    assert readme_tables.main([str(path)]) == 1
    assert "error:" in capsys.readouterr().err


# ----------------------------------------------------------------------------- runnable blocks


@pytest.fixture(scope="module")
def shims(tmp_path_factory) -> Path:
    """``python`` and ``icmh-hub`` that run this interpreter (a README block tests this install)."""
    folder = tmp_path_factory.mktemp("bin")
    scripts = {  # scripts, not symlinks: a symlinked venv python would lose the venv
        "python": f'exec "{sys.executable}" "$@"',
        "icmh-hub": f'exec "{sys.executable}" -c "import sys; sys.argv[0] = \'icmh-hub\'; from icmh_hub.cli import main; main()" "$@"',
    }
    for name, line in scripts.items():
        (folder / name).write_text(f"#!/bin/sh\n{line}\n")
        (folder / name).chmod(0o755)
    return folder


@pytest.mark.parametrize("lang, code", runnable_blocks())
def test_runnable_block_runs(lang, code, tmp_path, shims):
    env = dict(os.environ, PATH=f"{shims}{os.pathsep}{os.environ.get('PATH', '')}", HF_HUB_OFFLINE="1")
    env.pop(INDEX_ENV, None)
    command = [sys.executable, "-c", code] if lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"README {lang} block failed:\n{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    # what a user sees in a fresh shell (pytest's warning filters do not reach the child process)
    stderr = COMPRESSAI_IMPORT_WARNING.sub("", done.stderr)
    assert "Warning" not in stderr and "Traceback" not in stderr, f"README {lang} block:\n{code}\n{done.stderr}"
