"""The proxy experiment: does SFMA save bits at equal task accuracy? Reproduces the demo zoo.

From nothing but a seed, on a CPU: proxy images (shapes on scikit-image photos and textures),
a small mbt2018-mean codec trained for MSE at four rate points, a classifier and a segmenter
trained on clean images, then for each task and rate point SFMA adapters, the naive adapter with
about the same parameters, and full fine-tuning, all with our ``Trainer`` / ``FullFinetuner``
and the same loss. Everything is evaluated with real bitstreams on a held-out set; BD-rate and
BD-accuracy are against the base codec.

    python -m benchmarks.proxy                 # everything, into benchmarks/results/proxy
    python -m benchmarks.proxy --ship          # ... and copy the trained zoo into adapters/demo
    python -m benchmarks.proxy --scale 0.05    # a quick smoke run (too short to mean anything)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from icmh_hub import bd_metric, bd_rate, build_adapters, get_codec
from icmh_hub.adapter_files import load_adapters, sha256_of
from icmh_hub.attach import attach
from icmh_hub.codec_training import MSE_LAMBDAS, train_codec
from icmh_hub.codecs import DEMO_CODEC
from icmh_hub.demo import code, mosaic
from icmh_hub.evaluate import bits_per_position
from icmh_hub.model_card import write_card
from icmh_hub.plots import plot_bit_allocation, plot_rate_accuracy
from icmh_hub.proxy import ProxyBatch, make_proxy
from icmh_hub.proxy_models import METRICS, load_model, task_features, task_score, train_model
from icmh_hub.registry import INDEX_ENV
from icmh_hub.train import FullFinetuner, Trainer

QUALITIES = (1, 2, 3, 4)
# demo q1..q4 = CompressAI's MSE lambdas of its q3..q6: the tiny codec's PSNR range then matches
# the range where the proxy recognition models still work on the reconstructions
CODEC_LAMBDAS = {q: MSE_LAMBDAS[q + 2] for q in QUALITIES}
TASKS = ("cls", "seg")
ROOT = Path(__file__).resolve().parents[1]
SHIP = ROOT / "adapters" / "demo"


@dataclass(frozen=True)
class Config:
    """Every knob of the experiment; ``scale`` shortens all training (smoke runs only)."""

    size: int = 64
    train_images: int = 8192
    test_images: int = 512
    codec_steps: int = 6000  # the highest rate point, from scratch
    codec_finetune_steps: int = 2000  # each lower one, from the one above
    codec_batch: int = 8
    task_steps: int = 1500
    adapter_steps: int = 600
    adapter_batch: int = 8
    adapter_lr: float = 1e-3
    full_lr: float = 1e-4
    middle_dim: int = 16
    naive_dim: int = 56  # about the same parameters as SFMA at d=16 (both counted in the results)
    task_lambdas: tuple[tuple[str, tuple[float, ...]], ...] = (("cls", (4.0, 8.0, 16.0, 32.0)), ("seg", (4.0, 8.0, 16.0, 32.0)))
    seed: int = 0

    def scaled(self, scale: float) -> "Config":
        steps = {k: max(2, round(getattr(self, k) * scale)) for k in ("codec_steps", "codec_finetune_steps", "task_steps", "adapter_steps")}
        return dataclasses.replace(self, **steps)

    def lmbda(self, task: str, q: int) -> float:
        return dict(self.task_lambdas)[task][q - 1]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- data ----------------------------------------------------------------------------------------
def write_folder(batch: ProxyBatch, folder: Path) -> Path:
    """The training images as PNG files, the form our Trainer reads."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(batch.images):
        pixels = (image.permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")
    return folder


def _every(steps: int, label: str):
    def report(step: int, record: Any) -> None:
        if (step + 1) % steps == 0:
            log(f"{label} step {step + 1}: {record}")
    return report


# -- base codecs and task models -----------------------------------------------------------------
def train_base_codecs(config: Config, train: ProxyBatch, out: Path) -> dict[int, Path]:
    """The human-vision codecs: the highest rate point from scratch, each lower one fine-tuned
    from the one above (a warm start, so a short CPU budget still gives converged-looking
    codecs). Cached per setting in ``out/codecs-...``."""
    spec, paths = get_codec(DEMO_CODEC), {}
    folder = out / f"codecs-s{config.codec_steps}-f{config.codec_finetune_steps}-b{config.codec_batch}"
    folder.mkdir(exist_ok=True)
    previous = None
    for q in sorted(QUALITIES, reverse=True):
        paths[q] = folder / f"{DEMO_CODEC}-q{q}.safetensors"
        model = spec.build(q)
        if paths[q].is_file():  # trained by an earlier run of this same configuration
            previous = load_file(str(paths[q]))
            continue
        steps, lr = (config.codec_steps, 1e-3) if previous is None else (config.codec_finetune_steps, 5e-4)
        if previous is not None:
            model.load_state_dict(previous)
        torch.manual_seed(config.seed + q)
        generator = torch.Generator().manual_seed(config.seed + q)

        def batches(step: int) -> torch.Tensor:
            return train.images[torch.randint(0, len(train.images), (config.codec_batch,), generator=generator)]

        started = time.time()
        model = train_codec(model, batches, CODEC_LAMBDAS[q], steps, lr=lr, milestones=(int(steps * 0.8),),
                            log=_every(1000, f"codec q{q}"))
        previous = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(previous, str(paths[q]))
        log(f"base codec q{q} (lambda {CODEC_LAMBDAS[q]}, {steps} steps) trained in {time.time() - started:.0f} s")
    return paths


def train_task_models(config: Config, train: ProxyBatch, test: ProxyBatch, out: Path) -> dict[str, Any]:
    record = {}
    for task in TASKS:
        started = time.time()
        path = out / f"proxy-{task}.safetensors"
        if path.is_file():  # trained by an earlier run of this same configuration
            model = load_model(task, path)
        else:
            model = train_model(task, train, config.task_steps, seed=config.seed, log=_every(500, f"proxy {task}"))
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        record[task] = {"clean": task_score(task, model, test.images, test), "seconds": round(time.time() - started)}
        log(f"proxy {task} model: {METRICS[task]} {record[task]['clean']:.3f} on clean held-out images")
    return record


def write_index(bases: dict[int, Path], index: Path, entries: list[dict[str, Any]] = ()) -> Path:
    """An index with the base codecs (and adapter entries) as local files beside it."""
    items = [{"codec": DEMO_CODEC, "q": q, "source": {"kind": "local", "path": os.path.relpath(p, index.parent)},
              "sha256": sha256_of(p), "size": p.stat().st_size} for q, p in sorted(bases.items())]
    index.write_text(json.dumps({"entries": list(entries), "base_codecs": items}, indent=1) + "\n")
    return index


# -- adapters and full fine-tuning ----------------------------------------------------------------
def train_rows(config: Config, task: str, q: int, folder: Path, out: Path) -> dict[str, Path]:
    features = task_features(task, load_model(task, out / f"proxy-{task}.safetensors"))
    common = {"lmbda": config.lmbda(task, q), "steps": config.adapter_steps, "batch_size": config.adapter_batch,
              "crop": config.size, "seed": config.seed, "features": features, "progress": False, "checkpoint_every": 0}
    rows, tag = {}, f"l{config.lmbda(task, q)}-s{config.adapter_steps}"  # adapter runs are cached per setting
    for name, variant, dim in (("sfma", "sfma", config.middle_dim), ("naive", "naive", config.naive_dim)):
        run_dir = out / f"{task}-q{q}-{name}{dim}-{tag}-lr{config.adapter_lr}"
        done = run_dir / f"{DEMO_CODEC}-{task}-q{q}.safetensors"
        if done.is_file():
            rows[name] = done
            continue
        started = time.time()
        trainer = Trainer(DEMO_CODEC, q, task, folder, variant=variant, middle_dim=dim, lr=config.adapter_lr,
                          out_dir=run_dir, **common)
        rows[name] = trainer.fit()
        log(f"{task} q{q} {name}: bpp {trainer.last.bpp:.3f} D {trainer.last.distortion:.4f} ({time.time() - started:.0f} s)")
    run_dir = out / f"{task}-q{q}-full-{tag}-lr{config.full_lr}"
    done = run_dir / f"{DEMO_CODEC}-{task}-q{q}-full.safetensors"
    if done.is_file():
        return rows | {"full": done}
    started = time.time()
    full = FullFinetuner(DEMO_CODEC, q, task, folder, lr=config.full_lr, out_dir=run_dir, **common)
    rows["full"] = full.fit()
    log(f"{task} q{q} full fine-tuning: bpp {full.last.bpp:.3f} D {full.last.distortion:.4f} ({time.time() - started:.0f} s)")
    return rows


def row_codec(row: str, task: str, q: int, path: Path | None) -> torch.nn.Module:
    """The codec a result row is measured with, ready for compress()."""
    spec = get_codec(DEMO_CODEC)
    base = spec.build(q, pretrained=True)
    if row == "base":
        codec = base
    elif row == "full":
        base.load_state_dict(load_file(str(path)))
        codec = base
    else:
        codec = attach(base, DEMO_CODEC, {task: load_adapters(path)}, quality=q)
    codec.update(force=True)
    return codec.eval()


def measure(codec: torch.nn.Module, task: str, model: torch.nn.Module, test: ProxyBatch) -> dict[str, float]:
    """Real bitstreams: bpp from the strings, the task score and PSNR of the decoded images."""
    coded = code(codec, test, task, model)
    return {"bpp": coded.bpp, METRICS[task]: coded.score, "psnr": coded.psnr}


def bd_table(curves: dict[str, list[dict[str, float]]], metric: str) -> dict[str, dict[str, float | None]]:
    """BD-rate (%) and BD-metric (points) of every row against the base codec."""
    base = curves["base"]
    table = {}
    for name, points in curves.items():
        if name == "base":
            continue
        ref_rate, test_rate = [p["bpp"] for p in base], [p["bpp"] for p in points]
        ref_metric, test_metric = [p[metric] for p in base], [p[metric] for p in points]
        table[name] = {
            "bd_rate": _bd(bd_rate, (ref_rate, ref_metric, test_rate, test_metric)),
            f"bd_{metric}": _bd(bd_metric, (ref_rate, [100 * v for v in ref_metric], test_rate, [100 * v for v in test_metric])),  # in points
        }
    return table


def _bd(function, args) -> float | None:
    try:
        return round(function(*args), 2)
    except Exception as exc:  # curves that do not overlap: say so in the results
        log(f"BD not computable: {exc}")
        return None


# -- outputs -------------------------------------------------------------------------------------
def bit_map_figure(task: str, q: int, path: Path, test: ProxyBatch, out: Path) -> Path:
    """Bits per latent position on a 4x4 mosaic of held-out images coded as one picture."""
    picture = mosaic(test.images[:16])
    codec = row_codec("sfma", task, q, path)
    with codec.human():
        base_bits = bits_per_position(codec, picture)
    adapted_bits = bits_per_position(codec, picture)
    return plot_bit_allocation(picture, base_bits, adapted_bits, out, title=f"{DEMO_CODEC} q{q}, {task} SFMA (16 held-out images coded as one)")


def ship(config: Config, work: Path, bases: dict[int, Path], rows: dict, results: dict) -> None:
    """Copy base codecs, task models and SFMA adapters into adapters/demo with an index and cards."""
    if SHIP.exists():
        shutil.rmtree(SHIP)
    SHIP.mkdir(parents=True)
    shipped_bases = {q: Path(shutil.copy(p, SHIP / p.name)) for q, p in bases.items()}
    for task in TASKS:
        shutil.copy(work / f"proxy-{task}.safetensors", SHIP / f"proxy-{task}.safetensors")
    today = datetime.date.today().isoformat()
    dataset = f"proxy-heldout-seed{config.seed + 2}"
    entries = []
    for task in TASKS:
        for q in QUALITIES:
            target = Path(shutil.copy(rows[task][q]["sfma"], SHIP / f"{DEMO_CODEC}-{task}-q{q}.safetensors"))
            point = next(p for p in results["curves"][task]["sfma"] if p["q"] == q)
            metrics = [{"dataset": dataset, "images": config.test_images, "metric": name, "value": round(point[key], 4),
                        "date": today, "source": "measured"}
                       for name, key in (("bpp_actual", "bpp"), (METRICS[task], METRICS[task]), ("psnr", "psnr"))]
            write_card(target, SHIP / f"{DEMO_CODEC}-{task}-q{q}.md", results=metrics)
            entries.append({"id": f"{DEMO_CODEC}/{task}/q{q}", "codec": DEMO_CODEC, "task": task, "q": q,
                            "lmbda": config.lmbda(task, q), "variant": "sfma", "middle_dim": config.middle_dim,
                            "status": "published", "source": {"kind": "local", "path": f"demo/{target.name}"},
                            "sha256": sha256_of(target), "size": target.stat().st_size, "metrics": metrics,
                            "notes": "demo zoo: trained on the proxy data set by `python -m benchmarks.proxy`"})
    index = write_index(shipped_bases, SHIP.parent / "demo.json", entries)
    log(f"shipped {sum(p.stat().st_size for p in SHIP.iterdir()) / 1e6:.1f} MB into {SHIP}, index {index}")


def markdown(results: dict[str, Any]) -> str:
    """The results as the README shows them: one table per task, BD figures against the base."""
    lines = []
    for task, curves in results["curves"].items():
        metric = METRICS[task]
        lines += [f"**{task}** ({metric} of the proxy {task} model on {results['config']['test_images']} held-out images; "
                  f"clean images: {results['task_models'][task]['clean']:.3f})", "",
                  "| row | " + " | ".join(f"q{p['q']} bpp / {metric}" for p in curves["base"]) + " | BD-rate | BD-" + metric + " |",
                  "|---" * (len(curves["base"]) + 3) + "|"]
        for name, points in curves.items():
            bd = results["bd"][task].get(name, {})
            cells = [f"{p['bpp']:.3f} / {p[metric]:.3f}" for p in points]
            rate = "-" if name == "base" else (f"{bd['bd_rate']:+.1f}%" if bd.get("bd_rate") is not None else "n/a")
            gain = "-" if name == "base" else (f"{bd[f'bd_{metric}']:+.1f} pt" if bd.get(f"bd_{metric}") is not None else "n/a")
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {rate} | {gain} |")
        lines.append("")
    return "\n".join(lines)


def plot_task(curves: dict[str, list[dict[str, float]]], task: str, config: Config, out: Path) -> Path:
    """Rate-accuracy curves of every row (accuracy in %), as the README shows them."""
    metric = METRICS[task]
    return plot_rate_accuracy(
        {n: {"rate": [p["bpp"] for p in c], "metric": [100 * p[metric] for p in c], "q": [p["q"] for p in c]} for n, c in curves.items()},
        out / f"rate-{task}.png", metric="top1" if task == "cls" else "mIoU (%)", rate="bpp_actual",
        title=f"proxy {task}: {DEMO_CODEC}, {config.test_images} held-out images")


def task_pipeline(config: Config, task: str, work: Path, out: Path, test: ProxyBatch) -> tuple[str, dict, dict, dict]:
    """One task: SFMA, naive and full fine-tuning at every rate point, then all rows measured
    on the held-out set with real bitstreams, BD figures, the rate-accuracy plot and a bit map."""
    torch.set_num_threads(1)
    rows = {q: train_rows(config, task, q, work / "train", work) for q in QUALITIES}
    model = load_model(task, work / f"proxy-{task}.safetensors")
    curves: dict[str, list[dict[str, float]]] = {"base": [], "sfma": [], "naive": [], "full": []}
    for q in QUALITIES:
        for row in curves:
            point = measure(row_codec(row, task, q, rows[q].get(row)), task, model, test)
            curves[row].append({"q": q, **{k: round(v, 4) for k, v in point.items()}})
    bd = bd_table(curves, METRICS[task])
    log(f"{task}: {json.dumps(bd)}")
    plot_task(curves, task, config, out)
    bit_map_figure(task, 2, rows[2]["sfma"], test, out / f"bits-{task}.png")
    return task, rows, curves, bd


def run(config: Config, out: Path, ship_zoo: bool) -> dict[str, Any]:
    torch.set_num_threads(1)  # small models: one thread is fastest, and a second one fights other work on 2 cores
    torch.manual_seed(config.seed)
    started = time.time()
    work = out / "work"
    stamp = work / "config.json"
    upstream = {k: getattr(config, k) for k in ("size", "train_images", "test_images", "task_steps", "seed")}
    if stamp.is_file() and json.loads(stamp.read_text()) != upstream:
        shutil.rmtree(work)  # data, codecs and task models from other settings: start from scratch
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(upstream))
    train, test = make_proxy(config.train_images, config.size, seed=config.seed + 1), make_proxy(config.test_images, config.size, seed=config.seed + 2)
    folder = write_folder(train, work / "train")
    train, test = train.as_8bit(), test.as_8bit()
    log(f"data: {config.train_images} training and {config.test_images} held-out images of {config.size}x{config.size}")
    bases = train_base_codecs(config, train, work)
    os.environ[INDEX_ENV] = str(write_index(bases, work / "index.json"))  # our trainers load these bases
    task_record = train_task_models(config, train, test, work)
    results: dict[str, Any] = {"config": config.__dict__, "task_models": task_record, "curves": {}, "bd": {}}
    with ProcessPoolExecutor(len(TASKS), mp_context=multiprocessing.get_context("fork")) as pool:  # one core per task
        done = list(pool.map(task_pipeline, [config] * len(TASKS), TASKS, [work] * len(TASKS), [out] * len(TASKS), [test] * len(TASKS)))
    rows = {}
    for task, task_rows, curves, bd in done:
        rows[task], results["curves"][task], results["bd"][task] = task_rows, curves, bd
    results["parameters"] = {name: sum(p.numel() for p in build_adapters(DEMO_CODEC, 1, variant=v, middle_dim=d).parameters())
                             for name, v, d in (("sfma", "sfma", config.middle_dim), ("naive", "naive", config.naive_dim))}
    results["seconds"] = round(time.time() - started)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    log(f"done in {results['seconds']} s; results in {out / 'results.json'}")
    print(markdown(results))
    if ship_zoo:
        ship(config, work, bases, rows, results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "proxy")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every training length (smoke runs)")
    parser.add_argument("--ship", action="store_true", help="copy the trained zoo into adapters/demo (with index and cards)")
    args = parser.parse_args()
    run(Config().scaled(args.scale), args.out, args.ship)


if __name__ == "__main__":
    main()
