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
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from icmh_hub import bd_metric, bd_rate, build_adapters, get_codec
from icmh_hub._io import sha256_of
from icmh_hub.assemble import build_base
from icmh_hub.codecs.demo import DEMO_CODEC, DEMO_M, DEMO_N
from icmh_hub.core.attach import AdaptedCodec, attach
from icmh_hub.demo.codec_training import MSE_LAMBDAS, train_codec
from icmh_hub.demo.models import METRICS, load_model, task_features, task_score, train_model
from icmh_hub.demo.proxy import ProxyBatch, make_proxy
from icmh_hub.demo.run import code_batch, mosaic
from icmh_hub.evaluation.bits import bits_per_position
from icmh_hub.evaluation.plots import plot_bit_allocation, plot_rate_accuracy
from icmh_hub.formats.adapter_files import load_adapters
from icmh_hub.hub.card import write_card
from icmh_hub.hub.index import INDEX_ENV
from icmh_hub.training.trainer import FullFinetuner, Trainer, TrainOptions

QUALITIES = (1, 2, 3, 4)
# demo q1..q4 = CompressAI's MSE lambdas of its q1, q3, q5, q7: four times apart, so that the
# rate points differ by more than what a short CPU training leaves unconverged
CODEC_LAMBDAS = {q: MSE_LAMBDAS[2 * q - 1] for q in QUALITIES}
# two chains, one per core: the first rate point of each from scratch, the second fine-tuned from
# it. The higher rate point of a pair comes second: it needs the longer training (from scratch for
# the same steps, q4 came out below a q3 fine-tuned from it, which made the base curve non-monotonic)
CODEC_CHAINS = ((3, 4), (1, 2))
TASKS = ("cls", "seg")
# accuracy saturates towards the clean-image score, and a cubic through such a curve overshoots
# (icmh_hub.bd refuses it); pchip is the monotone interpolation the JVET sheets use
BD_METHOD = "pchip"
ROOT = Path(__file__).resolve().parents[1]
SHIP = ROOT / "adapters" / "demo"
SCALABLE_INDEX = ROOT / "adapters" / "demo-scalable.json"  # benchmarks.proxy_scalable's entries, on these bases
Features = Callable[[], Any] | None  # builds a TaskFeatures for a training run


@dataclass(frozen=True)
class Config:
    """Every knob of the experiment; ``scale`` shortens all training (smoke runs only)."""

    size: int = 64
    train_images: int = 8192
    test_images: int = 512
    codec_steps: int = 10000  # q3 and q1, from scratch
    codec_finetune_steps: int = 4000  # q4 from q3, q2 from q1
    codec_batch: int = 8
    task_steps: int = 1500
    adapter_steps: int = 600
    adapter_batch: int = 8
    adapter_lr: float = 1e-3
    full_lr: float = 1e-4
    middle_dim: int = 16
    naive_dim: int = 56  # about the same parameters as SFMA at d=16 (both counted in the results)
    codec_device: str = "cpu"  # where the base codecs train (each chain in its own process)
    task_lambdas: tuple[tuple[str, tuple[float, ...]], ...] = (("cls", (2.0, 8.0, 32.0, 128.0)), ("seg", (2.0, 8.0, 32.0, 128.0)))  # 4x apart, as the codec lambdas
    seed: int = 0
    codec: str = DEMO_CODEC  # the codec name the base weights and adapters are trained and shipped under
    task_model: str | None = None  # a registered task model to train against (None: the proxy model's features)

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
def codec_folder(config: Config, out: Path) -> Path:
    """Where the base codecs of this setting live, and the adapter runs trained on them."""
    lambdas = "-".join(str(CODEC_LAMBDAS[q]) for q in QUALITIES)
    chains = "-".join("".join(map(str, chain)) for chain in CODEC_CHAINS)
    return out / (f"codecs-N{DEMO_N}-M{DEMO_M}-fp16-s{config.codec_steps}-f{config.codec_finetune_steps}"
                  f"-b{config.codec_batch}-c{chains}-l{lambdas}")


def pool_context(device: str) -> multiprocessing.context.BaseContext:
    """Worker processes: forked on CPU (cheap, no re-import), started afresh when a GPU is used
    (a process forked after CUDA started cannot use it: "CUDA error: initialization error")."""
    return multiprocessing.get_context("spawn" if str(device).startswith("cuda") else "fork")


def train_base_codecs(config: Config, train: ProxyBatch, out: Path) -> dict[int, Path]:
    """The human-vision codecs, two chains in parallel (one per core): q3 and q1 from scratch,
    q4 and q2 fine-tuned from them (a warm start, so a short CPU budget still gives usable
    codecs). Cached per setting in ``codec_folder``."""
    folder = codec_folder(config, out)
    folder.mkdir(exist_ok=True)
    with ProcessPoolExecutor(len(CODEC_CHAINS), mp_context=pool_context(config.codec_device)) as pool:
        chains = pool.map(train_codec_chain, [config] * len(CODEC_CHAINS), [train] * len(CODEC_CHAINS),
                          [folder] * len(CODEC_CHAINS), CODEC_CHAINS)
        return {q: path for chain in chains for q, path in chain.items()}


def half_precision(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The codec as shipped: parameters stored in float16 (half the zoo's size; loading casts them
    back). The model takes the rounded values and rebuilds its entropy tables from them, so every
    later number is measured with exactly the shipped codec."""
    names = {name for name, _ in model.named_parameters()}
    state = {k: v.half() if k in names else v for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    model.update(force=True)
    return {k: (v.half() if k in names else v).contiguous() for k, v in model.state_dict().items()}


def train_codec_chain(config: Config, train: ProxyBatch, folder: Path, chain: tuple[int, ...]) -> dict[int, Path]:
    torch.set_num_threads(1)
    spec, paths, previous = get_codec(config.codec), {}, None
    for q in chain:
        paths[q] = folder / f"{config.codec}-q{q}.safetensors"
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
            return train.images[torch.randint(0, len(train.images), (config.codec_batch,), generator=generator)].to(config.codec_device)

        started = time.time()
        model = train_codec(model.to(config.codec_device), batches, CODEC_LAMBDAS[q], steps, lr=lr, milestones=(int(steps * 0.8),),
                            log=_every(2000, f"codec q{q}")).cpu()
        previous = half_precision(model)
        save_file(previous, str(paths[q]))
        log(f"base codec q{q} (lambda {CODEC_LAMBDAS[q]}, {steps} steps) trained in {time.time() - started:.0f} s")
    return paths


def train_task_models(config: Config, train: ProxyBatch, test: ProxyBatch, out: Path,
                      tasks: tuple[str, ...] = TASKS) -> dict[str, Any]:
    """The proxy recognition models, trained on (partly degraded) clean images; cached in ``out``."""
    record = {}
    for task in tasks:
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


def write_index(bases: dict[int, Path], index: Path, entries: list[dict[str, Any]] = (), codec: str = DEMO_CODEC) -> Path:
    """An index with the base codecs of ``codec`` (and adapter entries) as local files beside it."""
    items = [{"codec": codec, "q": q, "source": {"kind": "local", "path": os.path.relpath(p, index.parent)},
              "sha256": sha256_of(p), "size": p.stat().st_size} for q, p in sorted(bases.items())]
    index.write_text(json.dumps({"entries": list(entries), "base_codecs": items}, indent=1) + "\n")
    return index


# -- adapters and full fine-tuning ----------------------------------------------------------------
def training_options(config: Config, task: str, q: int, seed: int, steps: int, lr: float, out_dir: Path) -> TrainOptions:
    """What every adapter and full fine-tuning run shares: the loss, the data and the budget."""
    return TrainOptions(lmbda=config.lmbda(task, q), steps=steps, batch_size=config.adapter_batch, crop=config.size,
                        seed=seed, lr=lr, out_dir=out_dir, progress=False, checkpoint_every=0, task_model=config.task_model)


def proxy_features(task: str, work: Path):
    """The training distortion's features: the proxy task model's four stages."""
    return task_features(task, load_model(task, work / f"proxy-{task}.safetensors"))


def _model_tag(config: Config) -> str:
    """The run-folder suffix of a run against a registered task model (none for the proxy's)."""
    return f"-{config.task_model}" if config.task_model else ""


def run_features(config: Config, task: str, work: Path, features: Features):
    """The features a training run is given: none when ``config.task_model`` names a registered
    model (the trainer builds it and records its name), else ``features`` or the proxy model's."""
    return None if config.task_model else (features or (lambda: proxy_features(task, work)))()


def train_adapter(config: Config, task: str, q: int, variant: str, dim: int, folder: Path, work: Path,
                  seed: int | None = None, steps: int | None = None, features: Features = None) -> Path:
    """One adapter run (our ``Trainer``), cached beside the base codec it starts from: runs that
    differ in any setting land in different folders, so a cache hit is always the same run.
    ``features`` builds the training distortion's task features (default: the proxy model's)."""
    seed = config.seed if seed is None else seed
    steps = config.adapter_steps if steps is None else steps
    tag = f"l{config.lmbda(task, q)}-s{steps}-lr{config.adapter_lr}" + ("" if seed == config.seed else f"-seed{seed}") + _model_tag(config)
    run_dir = codec_folder(config, work) / f"{task}-q{q}-{variant}{dim}-{tag}"
    done = run_dir / f"{config.codec}-{task}-q{q}.safetensors"
    if done.is_file():
        return done
    started = time.time()
    options = training_options(config, task, q, seed, steps, config.adapter_lr, run_dir)
    trainer = Trainer(config.codec, q, task, folder, options=options, variant=variant, middle_dim=dim,
                      features=run_features(config, task, work, features))
    path = trainer.fit()
    log(f"{task} q{q} {variant}{dim} seed {seed}, {steps} steps: bpp {trainer.last.bpp:.3f} "
        f"D {trainer.last.distortion:.4f} ({time.time() - started:.0f} s)")
    return path


def train_rows(config: Config, task: str, q: int, folder: Path, work: Path, features: Features = None) -> dict[str, Path]:
    """SFMA, naive and full fine-tuning at one rate point (``features`` as in ``train_adapter``)."""
    rows = {"sfma": train_adapter(config, task, q, "sfma", config.middle_dim, folder, work, features=features),
            "naive": train_adapter(config, task, q, "naive", config.naive_dim, folder, work, features=features)}
    tag = f"l{config.lmbda(task, q)}-s{config.adapter_steps}"
    run_dir = codec_folder(config, work) / f"{task}-q{q}-full-{tag}-lr{config.full_lr}{_model_tag(config)}"
    done = run_dir / f"{config.codec}-{task}-q{q}-full.safetensors"
    if done.is_file():
        return rows | {"full": done}
    started = time.time()
    options = training_options(config, task, q, config.seed, config.adapter_steps, config.full_lr, run_dir)
    full = FullFinetuner(config.codec, q, task, folder, options=options, features=run_features(config, task, work, features))
    rows["full"] = full.fit()
    log(f"{task} q{q} full fine-tuning: bpp {full.last.bpp:.3f} D {full.last.distortion:.4f} ({time.time() - started:.0f} s)")
    return rows


def row_codec(row: str, task: str, q: int, path: Path | None, codec: str = DEMO_CODEC) -> AdaptedCodec:
    """The codec a result row is measured with, ready for compress()."""
    base = build_base(codec, q)
    if row == "full":
        base.load_state_dict(load_file(str(path)))
        base.update(force=True)
    adapters = {task: load_adapters(path)} if row not in ("base", "full") else {}
    return attach(base, codec, adapters, quality=q).eval()


def measure(codec: AdaptedCodec, task: str, model: torch.nn.Module, test: ProxyBatch) -> dict[str, float]:
    """Real bitstreams: bpp from the strings, the task score and PSNR of the decoded images; and
    where the bits go (``object_bits``)."""
    coded = code_batch(codec, test, task, model)
    return {"bpp": coded.bpp, METRICS[task]: coded.score, "psnr": coded.psnr, "object_bits": object_bit_share(codec, test)}


def object_bit_share(codec: AdaptedCodec, test: ProxyBatch) -> float:
    """Share of the latent's bits spent on the object: each latent position's bits (the entropy
    model's estimate, as in the bit maps) weighted by how much of its pixel block the object
    covers. Compare with ``object_area``: a codec blind to the task spends about that share."""
    spent = on_object = 0.0
    with torch.no_grad():
        for image, mask in zip(test.images, test.masks):
            bits = bits_per_position(codec, image[None])
            cover = F.adaptive_avg_pool2d((mask > 0).float()[None, None], bits.shape)[0, 0]
            spent, on_object = spent + float(bits.sum()), on_object + float((bits * cover).sum())
    return on_object / spent


def object_area(test: ProxyBatch) -> float:
    """Share of the held-out pixels that belong to the object."""
    return float((test.masks > 0).float().mean())


def bd_table(curves: dict[str, list[dict[str, float]]], metric: str) -> dict[str, dict[str, float | None]]:
    """BD-rate (%) and BD-metric (points, pchip) of every row against the base codec."""
    base = curves["base"]
    table = {}
    for name, points in curves.items():
        if name == "base":
            continue
        ref_rate, test_rate = [p["bpp"] for p in base], [p["bpp"] for p in points]
        ref_metric, test_metric = [p[metric] for p in base], [p[metric] for p in points]
        table[name] = {
            "bd_rate": _bd(bd_rate, (ref_rate, ref_metric, test_rate, test_metric, BD_METHOD)),
            f"bd_{metric}": _bd(bd_metric, (ref_rate, [100 * v for v in ref_metric], test_rate, [100 * v for v in test_metric], BD_METHOD)),  # in points
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


def measured(point: dict[str, Any], metrics: list[tuple[str, str, str]], images: int) -> list[dict[str, Any]]:
    """Card / index metrics, measured today: (metric name, key of ``point``, data set) each."""
    today = datetime.date.today().isoformat()
    return [{"dataset": dataset, "images": images, "metric": name, "value": round(point[key], 4), "date": today,
             "source": "measured"} for name, key, dataset in metrics]


def shipped_entry(config: Config, task: str, q: int, variant: str, target: Path, metrics: list[dict[str, Any]],
                  notes: str, task_model: str | None = None, index_folder: Path = SHIP.parent) -> dict[str, Any]:
    """The index entry of an adapter file shipped in a demo zoo (below ``index_folder``), with its card."""
    write_card(target, target.with_suffix(".md"), results=metrics)
    suffix = "" if variant == "sfma" else f"/{variant}"
    return {"id": f"{config.codec}/{task}/q{q}{suffix}", "codec": config.codec, "task": task, "q": q,
            "lmbda": config.lmbda(task, q), "variant": variant, "middle_dim": config.middle_dim, "status": "published",
            "source": {"kind": "local", "path": target.relative_to(index_folder).as_posix()},
            "sha256": sha256_of(target), "size": target.stat().st_size, "metrics": metrics, "notes": notes,
            "task_model": task_model or f"proxy-{task}"}


def ship(config: Config, work: Path, bases: dict[int, Path], rows: dict, results: dict) -> None:
    """Copy base codecs, task models and SFMA adapters into adapters/demo with an index and cards.
    The scalable entries (``benchmarks.proxy_scalable``) were trained on the old base codecs, so
    they go too: rerun that benchmark with --ship for new ones."""
    if SHIP.exists():
        shutil.rmtree(SHIP)
    SCALABLE_INDEX.unlink(missing_ok=True)
    SHIP.mkdir(parents=True)
    shipped_bases = {q: Path(shutil.copy(p, SHIP / p.name)) for q, p in bases.items()}
    for task in TASKS:
        shutil.copy(work / f"proxy-{task}.safetensors", SHIP / f"proxy-{task}.safetensors")
    dataset = f"proxy-heldout-seed{config.seed + 2}"
    entries = []
    for task in TASKS:
        for q in QUALITIES:
            target = Path(shutil.copy(rows[task][q]["sfma"], SHIP / f"{DEMO_CODEC}-{task}-q{q}.safetensors"))
            point = next(p for p in results["curves"][task]["sfma"] if p["q"] == q)
            metrics = measured(point, [("bpp_actual", "bpp", dataset), (METRICS[task], METRICS[task], dataset), ("psnr", "psnr", dataset)],
                               config.test_images)
            entries.append(shipped_entry(config, task, q, "sfma", target, metrics,
                                         "demo zoo: trained on the proxy data set by `python -m benchmarks.proxy`"))
    index = write_index(shipped_bases, SHIP.parent / "demo.json", entries)
    log(f"shipped {sum(p.stat().st_size for p in SHIP.iterdir()) / 1e6:.1f} MB into {SHIP}, index {index}")


def bd_rows(curves: dict[str, list[dict[str, Any]]], bd: dict[str, dict], metric: str) -> list[str]:
    """A Markdown table: one row per curve (bpp / metric at each q), with its BD figures against the base row."""
    lines = ["| row | " + " | ".join(f"q{p['q']} bpp / {metric}" for p in curves["base"]) + " | BD-rate | BD-" + metric + " |",
             "|---" * (len(curves["base"]) + 3) + "|"]
    for name, points in curves.items():
        figures = bd.get(name, {})
        cells = [f"{p['bpp']:.3f} / {p[metric]:.3f}" for p in points]
        rate = "-" if name == "base" else (f"{figures['bd_rate']:+.1f}%" if figures.get("bd_rate") is not None else "n/a")
        gain = "-" if name == "base" else (f"{figures[f'bd_{metric}']:+.1f} pt" if figures.get(f"bd_{metric}") is not None else "n/a")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {rate} | {gain} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The results as docs/proxy-experiment.md shows them: one table per task, BD figures against the base."""
    lines = []
    for task, curves in results["curves"].items():
        metric = METRICS[task]
        lines += [f"**{task}** ({metric} of the proxy {task} model on {results['config']['test_images']} held-out images; "
                  f"clean images: {results['task_models'][task]['clean']:.3f}; BD against the base row, "
                  f"{results.get('bd_method', 'cubic')} interpolation)", "",
                  *bd_rows(curves, results["bd"][task], metric)]
        lines.append("")
    if "object_area" in results:
        lines += [f"Share of the bits spent on the object (the objects cover {results['object_area']:.1%} of the held-out pixels):", "",
                  "| task | row | " + " | ".join(f"q{q}" for q in QUALITIES) + " |", "|---" * (len(QUALITIES) + 2) + "|"]
        for task, curves in results["curves"].items():
            lines += [f"| {task} | {name} | " + " | ".join(f"{p['object_bits']:.1%}" for p in points) + " |"
                      for name, points in curves.items() if not (task != TASKS[0] and name == "base")]
        lines.append("")
    return "\n".join(lines)


def plot_task(curves: dict[str, list[dict[str, float]]], task: str, config: Config, out: Path) -> Path:
    """Rate-accuracy curves of every row (accuracy in %), as docs/proxy-experiment.md shows them."""
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
    results: dict[str, Any] = {"config": config.__dict__, "task_models": task_record, "curves": {}, "bd": {},
                               "bd_method": BD_METHOD, "object_area": round(object_area(test), 4)}
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


def command_line(run_experiment: Callable[[Config, Path, bool], Any], description: str, name: str, ship_help: str) -> None:
    """The command line of a proxy experiment: --out (default benchmarks/results/NAME), --scale, --ship."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / name)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every training length (smoke runs)")
    parser.add_argument("--ship", action="store_true", help=ship_help)
    args = parser.parse_args()
    run_experiment(Config().scaled(args.scale), args.out, args.ship)


def main() -> None:
    command_line(run, __doc__.splitlines()[0], "proxy", "copy the trained zoo into adapters/demo (with index and cards)")


if __name__ == "__main__":
    main()
