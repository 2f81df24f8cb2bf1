"""Search algorithms on spaces and objectives that are not the supernet's: the API a user brings their own to."""
import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest

from search.gp import GaussianProcess
from search.problem import Bound, Journal, Problem
from search.space import CategoricalSpace
from search.strategies import (bayesian_optimisation, grid_search, nondominated_fronts, nsga2, pareto_front,
                               random_search, regularized_evolution)
from supernet.errors import UserError
from supernet.space import Space, get_space

SPACE = CategoricalSpace({f"x{i}": [0, 1, 2, 3, 4] for i in range(6)}, name="toy")
MBV3 = get_space("mbv3")


def toy(arch: dict) -> dict:
    """Peak at every x = 2.6; the cost bound makes the constrained optimum -1.76 (four 2s and two 3s)."""
    return {"score": -sum((v - 2.6) ** 2 for v in arch.values()), "cost": sum(arch.values())}


def problem(space=SPACE, evaluate=toy, cheap: bool = True, **kwargs) -> Problem:
    estimate = (lambda a: {"cost": sum(a.values())}) if cheap else None
    return Problem(space, evaluate, bounds=[Bound("cost", upper=14)], estimate=estimate, progress=False, **kwargs)


ALGORITHMS = {
    "random": lambda p, seed: random_search(p, evaluations=30, seed=seed),
    "evolution": lambda p, seed: regularized_evolution(p, objective="score", evaluations=30, population=8,
                                                       children=4, tournament=3, seed=seed),
    "nsga2": lambda p, seed: nsga2(p, objectives=[("score", True), ("cost", False)], evaluations=30, population=8,
                                   seed=seed),
    "bo": lambda p, seed: bayesian_optimisation(p, objective="score", evaluations=30, initial=6, pool=60, seed=seed),
}


@pytest.mark.parametrize("name", ALGORITHMS)
def test_algorithms_respect_bounds_never_repeat_and_are_seeded(name: str) -> None:
    run = ALGORITHMS[name]
    history = run(problem(), 0)
    assert len(history) == 30 and len({r.key for r in history}) == 30
    assert all(r.metrics["cost"] <= 14 and r.feasible for r in history)
    assert [r.key for r in run(problem(), 0)] == [r.key for r in history]
    assert [r.key for r in run(problem(), 1)] != [r.key for r in history]


@pytest.mark.parametrize("name", ALGORITHMS)
def test_a_budget_of_few_networks_is_evaluated_whole_when_the_count_is_known(
        name: str, capsys: pytest.CaptureFixture) -> None:
    cheap = [{f"x{i}": int(i == one) for i in range(6)} for one in range(7)]  # all zeros, or one 1: seven

    def tight(**kwargs) -> Problem:  # a window sampler's draws: only networks within the bound
        return Problem(SPACE, toy, bounds=[Bound("cost", upper=1)], estimate=lambda a: {"cost": sum(a.values())},
                       sampler=lambda rng: dict(rng.choice(cheap)), progress=False, max_tries=300, **kwargs)

    history = ALGORITHMS[name](tight(available=7), 0)
    assert sorted(sum(r.arch.values()) for r in history) == [0] + [1] * 6
    assert "note: only 7 networks are predicted within the budget: evaluating all of them, not 30" in \
        capsys.readouterr().err
    with pytest.raises(UserError, match="no new feasible"):  # unknown count: the draws run dry
        ALGORITHMS[name](tight(), 0)


@pytest.mark.parametrize("name", ["evolution", "bo"])
@pytest.mark.slow
def test_guided_search_beats_random_on_average(name: str) -> None:
    def mean_best(algorithm) -> float:  # over 10 seeds: on 5, random's luck beat batched evolution's
        return float(np.mean([max(r.metrics["score"] for r in algorithm(problem(), seed)) for seed in range(10)]))
    assert mean_best(ALGORITHMS[name]) > mean_best(ALGORITHMS["random"])


def test_bounds_on_evaluated_metrics_mark_records_infeasible() -> None:
    history = random_search(problem(cheap=False), evaluations=40, seed=0)
    assert any(not r.feasible for r in history) and all(r.feasible == (r.metrics["cost"] <= 14) for r in history)
    best = bayesian_optimisation(problem(cheap=False), objective="score", evaluations=25, initial=6, pool=60, seed=0)
    assert any(r.feasible for r in best)


def test_grid_enumerates_small_spaces_and_refuses_large_ones() -> None:
    small = CategoricalSpace({"a": [1, 2, 3], "b": ["x", "y"]})
    history = grid_search(Problem(small, lambda a: {"v": a["a"]}, progress=False))
    assert sorted(r.key for r in history) == sorted(small.to_string(a) for a in small.enumerate()) and len(history) == 6
    with pytest.raises(UserError, match="grid search would enumerate 2,951,927,213,752,881 architectures"):
        grid_search(Problem(MBV3, lambda a: {}, progress=False))
    tiny_mbv3 = Space(dataclasses.replace(MBV3.config, depths=(1, 2), kernels=(3,), expands=(3, 6),
                                          stages=MBV3.config.stages[:2]))
    archs = list(tiny_mbv3.enumerate())
    assert len({tiny_mbv3.to_string(a) for a in archs}) == len(archs) == tiny_mbv3.size() == (2 + 4) ** 2


def test_nsga2_returns_a_true_pareto_front() -> None:
    objectives = [("score", True), ("cost", False)]
    history = nsga2(Problem(SPACE, toy, progress=False), objectives=objectives, evaluations=60, population=10, seed=0)
    front = pareto_front(history, objectives)
    assert front
    for f in front:
        assert not any(o.metrics["score"] >= f.metrics["score"] and o.metrics["cost"] <= f.metrics["cost"]
                       and (o.metrics["score"], o.metrics["cost"]) != (f.metrics["score"], f.metrics["cost"])
                       for o in history)
    fronts = nondominated_fronts(history, objectives)
    assert sorted(i for f in fronts for i in f) == list(range(len(history)))
    with pytest.raises(UserError, match="at least two objectives"):
        nsga2(problem(), objectives=objectives[:1], evaluations=5)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("name", ALGORITHMS)
def test_interrupted_search_resumes_to_the_same_result(tmp_path: Path, name: str) -> None:
    run = ALGORITHMS[name]
    reference = [(r.key, r.metrics) for r in run(problem(), 3)]
    calls = {"n": 0}

    def flaky(arch: dict) -> dict:
        calls["n"] += 1
        if calls["n"] == 13:
            raise Interrupt()  # the process dies mid-search; the journal holds 12 evaluations
        return toy(arch)

    journal_path = tmp_path / "journal.json"
    with pytest.raises(Interrupt):
        run(problem(evaluate=flaky, journal=Journal(journal_path, {"algorithm": name})), 3)
    assert len(json.loads(journal_path.read_text())["entries"]) == 12
    resumed = problem(evaluate=flaky, journal=Journal(journal_path, {"algorithm": name}))
    calls["n"] = 100
    assert [(r.key, r.metrics) for r in run(resumed, 3)] == reference
    assert resumed.replayed == 12 and calls["n"] == 100 + 30 - 12
    with pytest.raises(UserError, match="belongs to a different search \\(algorithm differs\\)"):
        Journal(journal_path, {"algorithm": "other"})


def test_categorical_space_api() -> None:
    space = CategoricalSpace({"lr": [0.01, 0.1], "act": ["relu", "gelu", "silu"]})
    rng = random.Random(0)
    a = space.sample(rng)
    assert space.validate(a) == a and space.mutate(a, rng, prob=0.0) != a
    assert set(space.crossover(a, space.sample(rng), rng)) == {"lr", "act"}
    assert len(space.encode(a)) == 1 + 3 and space.size() == 6
    with pytest.raises(UserError, match="'act'=.*|act=.*not one of"):
        space.validate({"lr": 0.01, "act": "tanh"})
    with pytest.raises(UserError, match="distinct options"):
        CategoricalSpace({"a": [1, 1]})
    x = MBV3.sample(random.Random(1))
    inactive = {**x, "stage1.depth": 2, "stage1.block3.kernel": 7}
    assert MBV3.encode(inactive) == MBV3.encode({**inactive, "stage1.block3.kernel": 3})  # inactive blocks ignored


def test_gaussian_process_interpolates_and_is_uncertain_away_from_data() -> None:
    x = np.linspace(0, 1, 12)[:, None]
    y = np.sin(6 * x[:, 0])
    gp = GaussianProcess().fit(x, y)
    mean, std = gp.predict(np.array([[0.31], [3.0]]))
    assert abs(mean[0] - np.sin(6 * 0.31)) < 0.05 and std[0] < 0.1 < std[1]


def test_bound_on_a_metric_nobody_returns_is_a_clear_error() -> None:
    bad = Problem(SPACE, toy, bounds=[Bound("latency", upper=1.0)], progress=False)
    with pytest.raises(UserError, match="bound on 'latency' names a metric"):
        random_search(bad, evaluations=2, seed=0)


def test_readme_example_runs() -> None:
    """The README's own-space example, exactly as printed there."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("**Your own space and objective.**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(block.replace("evaluate, bounds", "evaluate, progress=False, bounds"), "README.md", "exec"), namespace)
    best = max((r for r in namespace["history"] if r.feasible), key=lambda r: r.metrics["score"])
    assert best.arch == {"width": 128, "depth": 2, "act": "gelu"}  # the grid optimum under cost <= 300
    assert namespace["winner"] is best
