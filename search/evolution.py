"""Regularized (aging) evolution over any space, under constraints, maximising one metric.

The algorithm knows nothing of supernets: it takes a *space* (``sample``, ``mutate``, ``crossover``,
``to_string``), an *evaluator* (architecture -> dict of metrics) and a *feasibility* predicate that is cheap
(a latency table, a FLOPs count): infeasible candidates are redrawn before anyone evaluates them.

Each generation, ``children`` new architectures are bred from tournament winners (crossover of two winners
with probability ``crossover_prob``, then mutation), evaluated, and added to the population, whose oldest
members die so that its size stays ``population`` (Real et al., 2019).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from tqdm import tqdm

from supernet.errors import UserError

Arch = dict[str, int]


class SearchSpace(Protocol):
    def sample(self, rng: random.Random) -> Arch: ...
    def mutate(self, arch: Mapping[str, int], rng: random.Random, prob: float = ...) -> Arch: ...
    def crossover(self, a: Mapping[str, int], b: Mapping[str, int], rng: random.Random) -> Arch: ...
    def to_string(self, arch: Mapping[str, int]) -> str: ...


@dataclass
class Record:
    """One evaluated architecture."""

    arch: Arch
    key: str
    metrics: dict[str, Any]
    generation: int

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "arch_string": self.key, "metrics": self.metrics, "generation": self.generation}


def regularized_evolution(space: SearchSpace, evaluate: Callable[[Arch], dict[str, Any]], *,
                          objective: str, feasible: Callable[[Arch], bool] = lambda arch: True,
                          population: int = 12, generations: int = 6, children: int = 6, tournament: int = 4,
                          mutation_prob: float = 0.15, crossover_prob: float = 0.5, seed: int = 0,
                          max_tries: int = 2000, progress: bool = True) -> list[Record]:
    """Run the search; return every evaluated architecture in evaluation order."""
    if population < 2 or generations < 0 or children < 1 or not 1 <= tournament <= population:
        raise UserError("evolution needs --population >= 2, --generations >= 0, --children >= 1 and "
                        "1 <= --tournament <= --population")
    if not 0 <= mutation_prob <= 1 or not 0 <= crossover_prob <= 1:
        raise UserError("--mutation-prob and --crossover-prob must lie in [0, 1]")
    rng = random.Random(seed)
    history: list[Record] = []
    seen: set[str] = set()

    def draw(make: Callable[[], Arch]) -> Arch:
        for _ in range(max_tries):
            arch = make()
            if space.to_string(arch) not in seen and feasible(arch):
                return arch
        raise UserError(f"no new feasible architecture in {max_tries} tries: the constraints are too tight "
                        "for this space (raise the budget)")

    def add(arch: Arch, generation: int) -> Record:
        record = Record(arch, space.to_string(arch), evaluate(arch), generation)
        seen.add(record.key)
        history.append(record)
        bar.update(1)
        bar.set_postfix(best=f"{max(r.metrics[objective] for r in history):.4f}")
        return record

    def winner(alive: list[Record]) -> Record:
        return max(rng.sample(alive, tournament), key=lambda r: r.metrics[objective])

    def child(alive: list[Record]) -> Arch:
        parent = winner(alive).arch
        if rng.random() < crossover_prob:
            parent = space.crossover(parent, winner(alive).arch, rng)
        return space.mutate(parent, rng, mutation_prob)

    with tqdm(total=population + generations * children, desc="evolution", unit="arch",
              disable=not progress, dynamic_ncols=True) as bar:
        alive = [add(draw(lambda: space.sample(rng)), 0) for _ in range(population)]
        for generation in range(1, generations + 1):
            for _ in range(children):
                alive.append(add(draw(lambda: child(alive)), generation))
                alive.pop(0)
    return history
