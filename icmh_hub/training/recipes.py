"""Training recipes: the paper's (Table 5) and the one its released scripts actually ran.

A recipe is the set of hyper-parameters for one task at one rate point; ``get_recipe(name,
task, q)`` gives it and ``recipe.override(...)`` changes any field (the CLI flags do that). The
whole recipe, overrides included, is written into the adapter file and its model card.

Rate point q (1..4) uses the base codec of quality q; the lambdas below are indexed by it. For
other qualities there is no published lambda: give one explicitly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..core.tasks import get_task
from ..errors import InvalidArgumentError, unknown_name

RECIPES = ("reference", "paper")
DEFAULT_RECIPE = "reference"
_CLS_LAMBDAS = (1.8, 3.5, 6.7, 13.0)
LAMBDAS = {
    "paper": {"cls": _CLS_LAMBDAS, "det": (5.0, 10.0, 20.0, 50.0), "seg": (5.0, 10.0, 20.0, 50.0)},
    "reference": {"cls": _CLS_LAMBDAS, "det": (0.5, 1.0, 2.0, 5.0), "seg": (0.5, 1.0, 2.0, 5.0)},
}


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one training run. ``epoch_images``: images per "epoch" (None = the
    whole data folder, and never more than it; the reference cls scripts use chunks of 80,000
    ImageNet images).
    ``milestones`` are in epochs; the learning rate is multiplied by ``gamma`` at each."""

    name: str
    task: str
    q: int | None
    lmbda: float
    epochs: int
    batch_size: int
    lr: float = 1e-4
    optimizer: str = "adam"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    crop: int = 256
    epoch_images: int | None = None
    seed: int = 42
    task_weights: str = field(default="DEFAULT")

    def override(self, **changes: Any) -> "Recipe":
        """A copy with the given fields changed (None values are ignored)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise InvalidArgumentError(f"recipes have no field(s) {sorted(unknown)}; known: {[f.name for f in dataclasses.fields(self)]}")
        recipe = dataclasses.replace(self, **changes)
        recipe.check()
        return recipe

    def check(self) -> None:
        if self.lmbda <= 0 or self.lr <= 0:
            raise InvalidArgumentError(f"lambda and lr must be positive (got lambda={self.lmbda}, lr={self.lr})")
        if self.epochs < 1 or self.batch_size < 1 or self.crop < 1:
            raise InvalidArgumentError("epochs, batch size and crop must be positive")
        if self.optimizer != "adam":
            raise unknown_name("optimizer", self.optimizer, ["adam"])

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"milestones": list(self.milestones)}


def get_recipe(name: str, task: str, q: int, lmbda: float | None = None) -> Recipe:
    """The recipe ``name`` for ``task`` at rate point ``q`` (``lmbda`` replaces the table's)."""
    if name not in RECIPES:
        raise unknown_name("recipe", name, RECIPES)
    weights = get_task(task).weights
    table = LAMBDAS[name][task]
    if lmbda is None:
        if not 1 <= q <= len(table):
            raise InvalidArgumentError(
                f"the {name} recipe has lambdas for q1-{len(table)} only ({task}: {list(table)}); "
                f"give --lmbda for q{q}"
            )
        lmbda = table[q - 1]
    common = {"name": name, "task": task, "q": q, "lmbda": float(lmbda), "task_weights": weights}
    if task != "cls":
        recipe = Recipe(**common, epochs=40, batch_size=8)
    elif name == "paper":
        recipe = Recipe(**common, epochs=5, batch_size=16, milestones=(2, 4))
    else:
        recipe = Recipe(**common, epochs=120, batch_size=16, milestones=(80, 100), epoch_images=80_000)
    recipe.check()
    return recipe
