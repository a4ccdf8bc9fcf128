"""``icmh-hub eval / sweep / bd`` end to end on tiny generated data, and the plots."""

from __future__ import annotations

import json
import re

import pytest
import torch
from click.testing import CliRunner

from icmh_hub import build_adapters, save_adapters
from icmh_hub.cli import main
from icmh_hub.evaluation.plots import plot_bit_allocation, plot_rate_accuracy
from tests.test_evaluate import make_class_folder, make_coco

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture()
def adapter_file(tmp_path):
    torch.manual_seed(3)
    adapters = build_adapters("mbt2018-mean", 1, init="reference", task="cls")
    return save_adapters(adapters, tmp_path / "mbt2018-mean_cls_q1.safetensors", task="cls", lmbda=1.8)


def test_eval_cls_writes_json_plot_bit_map_and_card(tmp_path, adapter_file):
    data = make_class_folder(tmp_path / "tiny-cls")
    out, plot, bits, card = (tmp_path / n for n in ("r.json", "r.png", "bits.png", "README.md"))
    result = invoke("eval", "--codec", "mbt2018-mean", "--q", 1, "--task", "cls", "--data", data, "--adapter", adapter_file,
                    "--no-pretrained", "--size", 64, "--json", out, "--plot", plot, "--bit-map", bits, "--card", card)
    assert result.exit_code == 0, result.output
    measured = json.loads(out.read_text())
    assert measured["mode"] == "adapted" and measured["images"] == 4 and measured["dataset"] == "tiny-cls"
    assert measured["compared_with"]["mode"] == "human"
    assert re.fullmatch("[0-9a-f]{64}", measured["adapter_sha256"])
    assert "top1" in result.output and "bpp_est" in result.output  # the table
    for png in (plot, bits):
        assert png.read_bytes()[:8] == PNG_MAGIC
    text = card.read_text()
    top1 = round(measured["metrics"]["top1"], 4)
    assert f"| tiny-cls (64) | 4 | top1 | {top1} | {measured['date']} |" in text
    assert f"| bpp_est | {round(measured['metrics']['bpp_est'], 4)} |" in text
    assert "Not evaluated yet" not in text


def test_eval_det_on_coco(tmp_path):
    annotations = make_coco(tmp_path)
    out = tmp_path / "det.json"
    result = invoke("eval", "--codec", "mbt2018-mean", "--q", 1, "--task", "det", "--data", annotations,
                    "--images", tmp_path / "images", "--no-pretrained", "--size", 96, "--limit", 1, "--json", out)
    assert result.exit_code == 0, result.output
    measured = json.loads(out.read_text())
    assert measured["images"] == 1 and measured["protocol"] == "short side 96"
    assert {"bbox_AP", "bbox_AP50", "bbox_AP75", "bpp_est", "bpp_actual"} <= set(measured["metrics"])
    assert "segm_AP" not in measured["metrics"]


def test_eval_records_metrics_in_a_registry_index(tmp_path, adapter_file):
    from icmh_hub.hub import index as registry
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"entries": [], "base_codecs": []}))
    entry = {"id": "mbt2018-mean/cls/q1", "codec": "mbt2018-mean", "task": "cls", "q": 1, "lmbda": 1.8, "variant": "sfma",
             "middle_dim": 64, "status": "recipe", "source": {"kind": "local", "path": adapter_file.name},
             "sha256": None, "size": None, "metrics": [], "notes": ""}
    registry.add_entry(index, entry)
    data = make_class_folder(tmp_path / "tiny-cls", classes=1, per_class=2)
    result = invoke("eval", "--codec", "mbt2018-mean", "--q", 1, "--task", "cls", "--data", data, "--adapter", adapter_file,
                    "--no-pretrained", "--size", 64, "--no-bitstream", "--index", index, "--entry", "mbt2018-mean/cls/q1")
    assert result.exit_code == 0, result.output
    metrics = json.loads(index.read_text())["entries"][0]["metrics"]
    assert {m["metric"] for m in metrics} >= {"top1", "bpp_est", "psnr"}
    assert all(m["source"] == "measured" and m["images"] == 2 for m in metrics)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--index", "x.json"], "--index and --entry go together"),
        (["--human", "--card", "c.md"], "drop --human"),
        (["--card", "c.md"], "--card needs --adapter"),
        (["--protocol", "224"], "Invalid value"),
    ],
)
def test_eval_errors_are_one_line(tmp_path, extra, message):
    data = make_class_folder(tmp_path / "d", classes=1, per_class=1)
    result = invoke("eval", "--codec", "mbt2018-mean", "--q", 1, "--task", "cls", "--data", data, "--no-pretrained",
                    "--size", 64, "--no-bitstream", *extra)
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output


def test_eval_unknown_codec(tmp_path):
    data = make_class_folder(tmp_path / "d", classes=1, per_class=1)
    result = invoke("eval", "--codec", "mbt2018-men", "--q", 1, "--task", "cls", "--data", data, "--no-pretrained")
    assert result.exit_code == 1 and "did you mean 'mbt2018-mean'" in result.output


def test_sweep_writes_curves_and_plot(tmp_path):
    data = make_class_folder(tmp_path / "d", classes=1, per_class=2)
    out, plot = tmp_path / "sweep.json", tmp_path / "sweep.png"
    result = invoke("sweep", "--codec", "mbt2018-mean", "--task", "cls", "--qualities", "1,2,3,4", "--data", data,
                    "--no-pretrained", "--size", 64, "--no-bitstream", "--json", out, "--plot", plot)
    assert result.exit_code == 0, result.output
    curves = json.loads(out.read_text())
    assert [p["q"] for p in curves["base"]] == [1, 2, 3, 4] == [p["q"] for p in curves["adapted"]]
    assert curves["metric"] == "top1" and curves["rate"] == "bpp_est"
    # random models give no meaningful curve: either a BD value or the reason it is not computed
    assert ("bd_rate" in curves) != ("bd_error" in curves)
    assert plot.read_bytes()[:8] == PNG_MAGIC


def test_bd_command():
    result = invoke("bd", "--ref-rate", "0.1,0.2,0.4,0.8", "--ref-metric", "50,60,66,70",
                    "--test-rate", "0.05,0.1,0.2,0.4", "--test-metric", "50,60,66,70", "--method", "pchip")
    assert result.exit_code == 0 and "BD-rate   -50.0000 %" in result.output
    result = invoke("bd", "--ref-rate", "0.1,0.2,0.4", "--ref-metric", "50,60,66",
                    "--test-rate", "0.05,0.1,0.2,0.4", "--test-metric", "50,60,66,70")
    assert result.exit_code == 1 and result.output.startswith("error: ") and "at least 4" in result.output
    result = invoke("bd", "--ref-rate", "a,b", "--ref-metric", "1", "--test-rate", "1", "--test-metric", "1")
    assert result.exit_code == 1 and "comma-separated numbers" in result.output


def test_plots(tmp_path):
    path = plot_rate_accuracy({"base": {"rate": [0.1, 0.2], "metric": [50, 60], "q": [1, 2]},
                               "adapted": {"rate": [0.05, 0.1], "metric": [52, 61]}}, tmp_path / "p.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(Exception, match="no curves"):
        plot_rate_accuracy({}, tmp_path / "q.png")
    with pytest.raises(Exception, match="one of each"):
        plot_rate_accuracy({"x": {"rate": [1, 2], "metric": [1]}}, tmp_path / "q.png")
    image = torch.rand(1, 3, 64, 64)
    path = plot_bit_allocation(image, torch.rand(4, 4), torch.rand(4, 4), tmp_path / "b.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(Exception, match="differ in shape"):
        plot_bit_allocation(image, torch.rand(4, 4), torch.rand(4, 5), tmp_path / "c.png")
