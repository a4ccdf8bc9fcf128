"""``icmh-hub eval`` / ``sweep`` / ``bd``: measure an entry in the paper's protocol, compare it with
the base codec, and write what was measured into JSON, plots, the model card and the registry."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from ..core.tasks import TASK_NAMES, get_task
from ..errors import InvalidArgumentError
from ..evaluation.protocol import PROTOCOLS
from .options import TASK_MODEL_HELP, adapter_option, method_option, threads_option

_TABLE_ORDER = ("top1", "bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75",
                "bpp_est", "bpp_actual", "psnr", "ms_ssim", "bpp_full", "psnr_full", "detections")
LAYERED_NOTE = ("two layers: accuracy, bpp_est, bpp_actual, psnr and ms_ssim are the base layer's (the machine picture); "
                "bpp_full and psnr_full the whole file's (the human picture)")


def _data_options(function):
    """Options shared by eval and sweep."""
    options = [
        click.option("--codec", required=True, help="Base codec family, e.g. mbt2018-mean (see `icmh-hub codecs`)."),
        click.option("--task", type=click.Choice(TASK_NAMES), required=True, help="Machine task."),
        click.option("--data", required=True, type=click.Path(exists=True),
                     help="cls: a folder of class folders; det/seg: a COCO-format json (e.g. instances_val2017.json)."),
        click.option("--images", type=click.Path(file_okay=False), help="det/seg: the image folder (default: the json's folder)."),
        click.option("--limit", type=int, help="Evaluate N images only (cls: a fixed random subset; det/seg: the first N ids)."),
        click.option("--protocol", type=click.Choice(PROTOCOLS), default="256", show_default=True,
                     help="cls: 256 = classify the whole 256x256 reconstruction (reference); 256/224 = its center 224 crop."),
        click.option("--size", type=int, help="cls: resize/crop size (default 256); det/seg: short side (default 800, long side <= 1333/800 of it)."),
        click.option("--no-pretrained", is_flag=True, help="Random codec, adapters and task model (trials of the plumbing; no downloads)."),
        click.option("--task-weights", help="Recognition model weights: a torchvision weights name or a local file."),
        click.option("--task-model", help=TASK_MODEL_HELP),
        click.option("--no-bitstream", is_flag=True, help="Skip real entropy coding (bpp_actual not measured; faster)."),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ... (under torchrun, cuda = GPU LOCAL_RANK)."),
        click.option("--dataset-name", help="Name of the data set in results and cards (default: the folder / json name)."),
        threads_option,
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _world(device: str):
    """Join torchrun's process group, if any (every rank then evaluates its share of the images);
    the world says this rank's device and whether it is rank 0, the one that writes and prints."""
    from ..core.distributed import setup

    return setup(device)


def _task_model(task: str, o: Mapping[str, Any], device):
    from ..evaluation.run import build_task_model

    weights = o["task_weights"] if o["task_weights"] else (None if o["no_pretrained"] else "DEFAULT")
    return build_task_model(task, weights, o["task_model"]).to(device)


def _task_model_name(task: str, o: Mapping[str, Any]) -> str:
    from ..core.task_models import default_task_model

    return o["task_model"] or default_task_model(task) or f"torchvision {task} R50-FPN"


def _run_options(o: Mapping[str, Any]) -> dict[str, Any]:
    return {"images": o["images"], "protocol": o["protocol"], "size": o["size"], "limit": o["limit"],
            "bitstream": not o["no_bitstream"], "dataset": o["dataset_name"]}


def _table(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Metrics as an aligned text table, one column per run."""
    names = [k for k in _TABLE_ORDER if any(m.get(k) is not None for _, m in rows)]
    lines = [f"{'metric':<12}" + "".join(f"{label:>12}" for label, _ in rows)]
    for name in names:
        cells = [m.get(name) for _, m in rows]
        lines.append(f"{name:<12}" + "".join(f"{'-' if c is None else f'{c:.4f}':>12}" for c in cells))
    return "\n".join(lines)


def _write_json(data: Any, out: str | None) -> None:
    if out:
        from .._io import atomic_write_json

        atomic_write_json(out, data)
        click.echo(f"wrote {out}", err=True)


def _adapter_file(codec: str, task: str, q: int, adapter: str | None, no_pretrained: bool, method: str | None = None) -> Path:
    """The adapter file the card describes: the one given, or the registry entry's."""
    if adapter:
        return Path(adapter)
    if no_pretrained:
        raise InvalidArgumentError("--card needs --adapter FILE: random adapters (--no-pretrained) have no file to describe")
    from ..hub.fetch import fetch
    from ..hub.index import resolve

    return Path(fetch(resolve(codec, task, q, method=method)))


@click.command("eval")
@click.option("--q", "q", type=int, required=True, help="Rate point: the base codec's quality level.")
@_data_options
@adapter_option("Adapter file (default: the registry's entry).")
@method_option(help="The registry entry's adapter method (default sfma; transtic; scalable-sfma / scalable-mask: two layers).")
@click.option("--human", is_flag=True, help="Evaluate the base codec (adapters off) instead of the adapted one.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the results as JSON here.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False),
              help="Also evaluate the base codec and plot base vs adapted (PNG).")
@click.option("--bit-map", "bit_map_out", type=click.Path(dir_okay=False),
              help="Bits per latent position of the first image, base vs adapted (PNG).")
@click.option("--card", "card_out", type=click.Path(dir_okay=False), help="Write the adapter's model card with these results.")
@click.option("--index", "index_file", type=click.Path(dir_okay=False), help="Registry index file to record the results in.")
@click.option("--entry", "entry_id", help="Registry entry id to record the results under (with --index).")
def eval_command(codec, q, task, data, human, adapter, method, json_out, plot_out, bit_map_out, card_out, index_file, entry_id,
                 **o) -> None:
    """Measure rate, task accuracy and image quality of CODEC at Q with TASK's adapters on DATA.

    Under torchrun each rank codes its share of the images; rank 0 prints and writes the results."""
    from ..assemble import build_codec
    from ..evaluation.run import card_results, evaluate

    if bool(index_file) != bool(entry_id):
        raise InvalidArgumentError("--index and --entry go together: the index file and the id of the entry in it")
    if human and (card_out or index_file):
        raise InvalidArgumentError("--card / --index record the adapters' results; drop --human (base-codec numbers are not theirs)")
    world = _world(o["device"])
    o = dict(o, device=world.device)
    model = build_codec(codec, q, task, adapter, pretrained=not o["no_pretrained"], method=method).to(o["device"])
    task_model = _task_model(task, o, o["device"])
    result = evaluate(model, task, data, task_model, human=human, **_run_options(o))
    result["task_model"] = _task_model_name(task, o)
    result["adapter"] = str(adapter) if adapter else ("random" if o["no_pretrained"] else "registry")
    if adapter:
        from .._io import sha256_of

        result["adapter_sha256"] = sha256_of(adapter)
    rows = [("human" if human else "adapted", result["metrics"])]
    if plot_out:
        other = evaluate(model, task, data, task_model, human=not human, **_run_options(o))
        result["compared_with"] = other
        rows.append(("adapted" if human else "human", other["metrics"]))
    if not world.main:  # rank 0 prints and writes what all ranks measured
        return
    if plot_out:
        _plot_point_pair(result, other, plot_out)
    if bit_map_out:
        _bit_map(model, task, data, o, bit_map_out)
    click.echo(f"{result['codec']} q{q} {task} on {result['dataset']} ({result['images']} images, {result['protocol']})")
    click.echo(_table(rows))
    click.echo(f"task model {result['task_model']}" + (f"; top1 = {result['top1_of']}" if "top1_of" in result else ""))
    if "bpp_full" in result["metrics"]:
        click.echo(LAYERED_NOTE)
    _write_json(result, json_out)
    if card_out or index_file:
        results = card_results(result)
        if card_out:
            from ..hub.card import write_card

            write_card(_adapter_file(codec, task, q, adapter, o["no_pretrained"], method), card_out, results=results)
            click.echo(f"wrote {card_out}", err=True)
        if index_file:
            from ..hub.index import record_metrics

            record_metrics(index_file, entry_id, results)
            click.echo(f"recorded {len(results)} metrics for {entry_id} in {index_file}", err=True)


def _plot_point_pair(result: Mapping[str, Any], other: Mapping[str, Any], out: str) -> None:
    from ..evaluation.plots import plot_rate_accuracy

    metric = get_task(result["task"]).metric
    curves = {}
    for run in sorted((result, other), key=lambda r: r["mode"] != "human"):
        name = "base" if run["mode"] == "human" else "adapted"
        curves[name] = {"rate": [run["metrics"]["bpp_est"]], "metric": [run["metrics"][metric]], "q": [run["q"]]}
    plot_rate_accuracy(curves, out, metric=metric, title=f"{result['codec']} {result['task']} on {result['dataset']}")
    click.echo(f"wrote {out}", err=True)


def _bit_map(model, task: str, data: str, o: Mapping[str, Any], out: str) -> None:
    """Bit maps of the first evaluation image, prepared as the evaluation prepares it."""
    from ..evaluation.bits import base_and_adapted_bits
    from ..evaluation.plots import plot_bit_allocation
    from ..evaluation.run import task_data

    image = task_data(task, data, o["images"], o["size"], o["limit"]).item(0)[0].to(o["device"])
    base, adapted = base_and_adapted_bits(model, image, task)
    plot_bit_allocation(image, base, adapted, out, title=f"{model.codec} q{model.quality}, {task} adapters")
    click.echo(f"wrote {out}", err=True)


def _qualities(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InvalidArgumentError(f"--qualities takes comma-separated integers such as 1,2,3,4, got {text!r}") from None


@click.command("sweep")
@click.option("--qualities", default="1,2,3,4", show_default=True, help="Rate points (base codec qualities), comma separated.")
@_data_options
@click.option("--adapter", "adapter_pattern", help="Adapter files with {q} in the name, e.g. runs/cls_q{q}.safetensors (default: registry).")
@click.option("--metric", help="Metric of the curves (default: top1 for cls, bbox_AP50 / segm_AP50 for det / seg).")
@click.option("--rate", type=click.Choice(["bpp_est", "bpp_actual"]), default="bpp_est", show_default=True, help="Rate of the curves.")
@click.option("--method", type=click.Choice(["cubic", "pchip"]), default="cubic", show_default=True, help="Bjontegaard interpolation.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write curves and BD values as JSON here.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), help="Rate-accuracy plot, base vs adapted (PNG).")
def sweep_command(qualities, codec, task, data, adapter_pattern, metric, rate, method, json_out, plot_out, **o) -> None:
    """Base-codec and adapted curves over several q, and their BD-rate / BD-metric."""
    from ..evaluation.sweep import sweep

    if adapter_pattern and "{q}" not in adapter_pattern:
        raise InvalidArgumentError("--adapter for a sweep needs {q} in the file name, e.g. runs/cls_q{q}.safetensors")
    world = _world(o["device"])
    task_model = _task_model(task, o, world.device)
    adapters = (lambda q: adapter_pattern.format(q=q)) if adapter_pattern else None
    out = sweep(codec, task, _qualities(qualities), data, task_model, adapters=adapters, pretrained=not o["no_pretrained"],
                metric=metric, rate=rate, method=method, device=world.device, **_run_options(o))
    out["task_model"] = _task_model_name(task, o)
    if not world.main:
        return
    click.echo(f"task model {out['task_model']}" + (f"; top1 = {out['top1_of']}" if "top1_of" in out else ""))
    for name in ("base", "adapted"):
        click.echo(f"{name}: " + ", ".join(f"q{p['q']} {p[rate]:.4f} bpp / {p[out['metric']]:.2f}" for p in out[name]))
    if "bd_error" in out:
        click.echo(f"BD values not computed: {out['bd_error']}")
    else:
        click.echo(f"BD-rate {out['bd_rate']:.2f} %   BD-{out['metric']} {out['bd_metric']:+.3f}   ({method})")
    _write_json(out, json_out)
    if plot_out:
        from ..evaluation.plots import plot_rate_accuracy
        from ..evaluation.sweep import sweep_curves

        plot_rate_accuracy(sweep_curves(out), plot_out, metric=out["metric"], rate=rate, title=f"{codec} {task}")
        click.echo(f"wrote {plot_out}", err=True)


def _numbers(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InvalidArgumentError(f"--{name} takes comma-separated numbers, got {text!r}") from None


@click.command("bd")
@click.option("--ref-rate", required=True, help="Reference (base codec) rates, comma separated.")
@click.option("--ref-metric", required=True, help="Reference metric values, comma separated.")
@click.option("--test-rate", required=True, help="Test (adapted) rates, comma separated.")
@click.option("--test-metric", required=True, help="Test metric values, comma separated.")
@click.option("--method", type=click.Choice(["cubic", "pchip"]), default="cubic", show_default=True, help="Interpolation.")
def bd_command(ref_rate, ref_metric, test_rate, test_metric, method) -> None:
    """BD-rate (%) and BD-metric of a test curve against a reference curve (at least 4 points each)."""
    from ..evaluation.bd import bd_metric, bd_rate

    curves = [_numbers(v, n) for v, n in ((ref_rate, "ref-rate"), (ref_metric, "ref-metric"), (test_rate, "test-rate"), (test_metric, "test-metric"))]
    click.echo(f"BD-rate   {bd_rate(*curves, method=method):.4f} %")
    click.echo(f"BD-metric {bd_metric(*curves, method=method):+.4f}")


COMMANDS = [eval_command, sweep_command, bd_command]
