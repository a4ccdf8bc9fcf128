"""Model cards for adapter files, rendered with huggingface_hub's ModelCard from our template.

The card's YAML says what the Hub indexes (library, tags, base model, metrics in model-index
form); its body says how to load the adapters, what was measured and how they were trained.
Only numbers passed in ``results`` (measured ones) appear; nothing is filled in otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .._io import atomic_path, sha256_of
from ..core.tasks import TASKS
from ..formats.adapter_files import load_adapters, read_metadata


def trained_against_random(info: Mapping[str, Any]) -> bool:
    """Whether an adapter file's training record says its task model (and codec) were random
    (``--no-pretrained``): such adapters test the pipeline and fit no real task."""
    return (info.get("training") or {}).get("pretrained") is False


def template_path() -> Path:
    return Path(str(files("icmh_hub.model_cards") / "adapter_card.md"))


def _eval_results(task: str, results: Iterable[Mapping[str, Any]]) -> list[EvalResult]:
    return [
        EvalResult(
            task_type=TASKS[task].hub_type if task in TASKS else task,
            dataset_type=r["dataset"],
            dataset_name=r["dataset"],
            metric_type=r["metric"],
            metric_value=r["value"],
        )
        for r in results
    ]


def render_card(
    adapter_path: str | os.PathLike,
    results: Iterable[Mapping[str, Any]] = (),
    repo_id: str | None = None,
    path_in_repo: str | None = None,
) -> ModelCard:
    """The card of an adapter file. ``results``: dicts with dataset, images, metric, value, date.
    With ``repo_id`` and ``path_in_repo`` the card shows how to download it from the Hub."""
    meta = read_metadata(adapter_path)
    info = meta["info"]
    task = info.get("task", "unknown")
    results = list(results)
    card_data = ModelCardData(
        library_name="icmh-hub",
        license="apache-2.0",
        tags=["icmh-hub", "image-compression", "sfma", meta["codec"], f"task-{task}", meta["method"]],
        base_model=info.get("base_model"),
        model_name=repo_id or Path(adapter_path).stem,
        eval_results=_eval_results(task, results) or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        title=f"{meta['codec']} q{meta['quality']} {task} adapters",
        codec=meta["codec"],
        quality=meta["quality"],
        task=task,
        lmbda=info.get("lmbda", "not recorded"),
        variant=meta["method"],
        middle_dim=meta.get("middle_dim", "-"),
        parameters=f"{load_adapters(adapter_path).num_parameters():,}",
        filename=Path(adapter_path).name,
        repo_id=repo_id,
        path_in_repo=path_in_repo,
        results=results,
        training=json.dumps(info["training"], indent=2, sort_keys=True) if "training" in info else "",
        points=", ".join(f"`{k}` -> `{v}`" for k, v in sorted(meta["points"].items())),
        sha256=sha256_of(adapter_path),
        random_models=trained_against_random(info),
    )


def write_card(adapter_path: str | os.PathLike, out_path: str | os.PathLike, **kwargs: Any) -> Path:
    """Render the card of ``adapter_path`` and save it (README.md form) to ``out_path``."""
    out_path = Path(out_path)
    with atomic_path(out_path) as temporary:
        render_card(adapter_path, **kwargs).save(temporary)
    return out_path
