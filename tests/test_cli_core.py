import json
import subprocess
import sys

from click.testing import CliRunner

from icmh_hub import build_adapters, save_adapters
from icmh_hub.cli import main


def test_codecs_lists_every_spec():
    result = CliRunner().invoke(main, ["codecs", "--json"])
    assert result.exit_code == 0
    names = {row["codec"] for row in json.loads(result.output)}
    assert {"mbt2018-mean", "cheng2020-anchor", "elic2022"} <= names


def test_inspect_shows_layout_and_hash(tmp_path):
    path = save_adapters(build_adapters("mbt2018-mean", 3), tmp_path / "a.safetensors", task="cls")
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    meta = json.loads(result.output)
    assert meta["parameters"] == 287_232 and len(meta["sha256"]) == 64 and meta["info"]["task"] == "cls"


def test_errors_are_one_line_with_exit_status_1(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nonsense")
    result = CliRunner().invoke(main, ["inspect", str(bad)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert "Traceback" not in result.output


def test_every_command_has_help():
    runner = CliRunner()
    for name in main.commands:
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, name


def test_commands_in_a_fresh_interpreter_print_no_warning():
    """What a user sees: stderr of real processes (pytest's own warning filters do not apply).
    ``compress`` and ``decompress`` in a fresh shell: README's runnable CLI block, which
    ``test_readme`` runs with the same check."""
    runs = [["--help"], ["list"], ["info", "mbt2018-mean/cls/q3"], ["codecs"], ["variants"]]
    for args in runs:
        done = subprocess.run([sys.executable, "-m", "icmh_hub.cli", *args], capture_output=True, text=True)
        assert done.returncode == 0, (args, done.stderr)
        assert "Warning" not in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)


def test_commands_that_code_nothing_import_neither_torch_nor_compressai():
    """They answer in a fraction of a second: PyTorch and CompressAI's imports take seconds
    (docs/performance.md, Start-up)."""
    script = ("import sys\nfrom icmh_hub.cli import main\n"
              "for args in (['--help'], ['list'], ['info', 'mbt2018-mean/cls/q3'], ['codecs'], ['methods']):\n"
              "    main(args, standalone_mode=False)\n"
              "print(sorted(m for m in ('torch', 'compressai', 'torchvision') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-500:]


def test_a_reader_that_stops_early_ends_the_command_quietly():
    """`icmh-hub list | head`: the closed pipe ends the command with status 141 and no message."""
    import subprocess
    import sys

    script = ("import click, sys\nfrom icmh_hub.cli.main import main\n"
              "@main.command('flood')\ndef flood():\n    for _ in range(200000):\n        click.echo('x' * 60)\n"
              "main(['flood'])")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.readline()
    process.stdout.close()  # the reader is gone
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 141 and stderr == b"", stderr.decode()[-500:]
