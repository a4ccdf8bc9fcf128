"""Names checked where they enter (load(), compress, decompress, index files), printed escaped,
and the last bad-input classes of the audit: a NUL in an argument, a too-wide image, huge
training crops and training images that are decompression bombs."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from PIL import Image

from icmh_hub import load
from icmh_hub.cli import main
from icmh_hub.core.names import MAX_NAME_LENGTH, check_name, escaped
from icmh_hub.errors import DataError, InvalidArgumentError
from icmh_hub.training.data import ImageFolder


@pytest.mark.parametrize("value, reason", [
    (["cls", 5], "must be a string"), ({"cls": 1}, "as a name or a list of names"), ("../../x", "holds other characters"),
    ("a.b", "holds other characters"), ("cl\x00s", "holds other characters"), ("x" * 100, "is 100 characters long"),
    ("\x1b[2J", "holds other characters"), ("", "is empty"),
])
def test_load_refuses_a_bad_task_with_one_clear_error(value, reason):
    with pytest.raises(InvalidArgumentError, match=reason) as caught:
        load("mbt2018-mean", value, 1, pretrained=False)
    assert "\x1b" not in str(caught.value) and "\x00" not in str(caught.value)


def test_check_name_and_escaped():
    assert check_name("task", "cls") == "cls" and check_name("codec", "x" * MAX_NAME_LENGTH)
    assert escaped("a\x1b[2Jb\x00\n") == "a\\x1b[2Jb\\x00\\n"
    assert escaped("long" * 50, 20) == "longlonglonglongl..."


@pytest.mark.parametrize("command, flag, value", [("compress", "--task", "../../x"), ("decompress", "--force-task", "a.b")])
def test_cli_task_arguments_are_checked(command, flag, value, tmp_path):
    Image.new("RGB", (64, 64)).save(tmp_path / "in.png")
    (tmp_path / "in.icmh").write_bytes(b"ICMH")  # never read: the name is refused first
    source = tmp_path / ("in.png" if command == "compress" else "in.icmh")
    extra = ["--codec", "mbt2018-mean", "--no-pretrained"] if command == "compress" else []
    run = CliRunner().invoke(main, [command, str(source), "-o", str(tmp_path / "out"), flag, value, *extra])
    assert run.exit_code == 1 and run.output.count("\n") == 1, run.output
    assert run.output.startswith(f"error: task name '{value}' holds other characters"), run.output


def test_a_nul_in_an_argument_is_a_usage_error():
    run = CliRunner().invoke(main, ["compress", "pic\x00.png", "--codec", "mbt2018-mean"])
    assert run.exit_code == 2 and "holds a NUL character" in run.output and "\x00" not in run.output, run.output


def test_a_too_wide_image_is_refused_before_coding(tmp_path):
    Image.new("RGB", (70000, 1)).save(tmp_path / "wide.png")
    run = CliRunner().invoke(main, ["compress", str(tmp_path / "wide.png"), "--codec", "mbt2018-mean", "--q", "1",
                                    "--no-pretrained", "-o", str(tmp_path / "out")])
    assert run.exit_code == 1 and "70000x1 is too wide" in run.output and "damaged" not in run.output, run.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_training_images_over_the_pixel_limit_are_refused_naming_the_file(tmp_path):
    big = tmp_path / "big.png"
    Image.new("L", (13000, 13000)).save(big, optimize=False)  # 169 MP: Pillow's own bomb error threshold is 179 MP
    with pytest.raises(DataError, match=rf"{big}: 13000x13000 is 169.0 MP, more than the limit of 89.5 MP for a training image"):
        ImageFolder(tmp_path, crop=64).load(big)
    with pytest.raises(InvalidArgumentError, match="crop size must be 1 to 9459 pixels, got 65536"):
        ImageFolder(tmp_path, crop=65536)
