import random

import pytest

from search.evolution import regularized_evolution
from supernet.errors import UserError
from supernet.space import get_space

SPACE = get_space("mbv3")


def toy_objective(arch: dict) -> dict:
    """Rewards big kernels and expands: its optimum under a size cap is known in shape."""
    return {"score": sum(v for k, v in arch.items() if not k.endswith("depth") and k in active_keys(arch))}


def active_keys(arch: dict) -> set:
    keys = set()
    for s in range(len(SPACE.config.stages)):
        for b in range(arch[f"stage{s + 1}.depth"]):
            keys |= {f"stage{s + 1}.block{b}.kernel", f"stage{s + 1}.block{b}.expand"}
    return keys


def cost(arch: dict) -> int:
    return sum(arch[f"stage{s + 1}.depth"] for s in range(len(SPACE.config.stages)))


def test_evolution_respects_the_constraint_and_beats_its_start() -> None:
    history = regularized_evolution(SPACE, toy_objective, objective="score", feasible=lambda a: cost(a) <= 10,
                                    population=8, generations=15, children=4, tournament=3, seed=0,
                                    progress=False)
    assert len(history) == 8 + 15 * 4
    assert all(cost(r.arch) <= 10 for r in history)
    assert len({r.key for r in history}) == len(history), "no architecture is evaluated twice"
    start = max(r.metrics["score"] for r in history[:8])
    best = max(r.metrics["score"] for r in history)
    assert best > start


def test_evolution_is_seeded() -> None:
    def run(seed: int) -> list:
        return [r.key for r in regularized_evolution(SPACE, toy_objective, objective="score", population=4,
                                                     generations=3, children=2, tournament=2, seed=seed,
                                                     progress=False)]
    assert run(5) == run(5)
    assert run(5) != run(6)


def test_impossible_constraint_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="constraints are too tight"):
        regularized_evolution(SPACE, toy_objective, objective="score", feasible=lambda a: False,
                              population=4, generations=1, children=1, tournament=2, max_tries=50,
                              progress=False)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(UserError, match="--population >= 2"):
        regularized_evolution(SPACE, toy_objective, objective="score", population=1, progress=False)
