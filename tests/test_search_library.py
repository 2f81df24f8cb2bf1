"""The search core as a library: importable without torch, one search per Problem, names and values checked early."""
import math
import subprocess
import sys
from pathlib import Path

import pytest

from search.problem import Problem, best
from search.space import CategoricalSpace
from search.strategies import bayesian_optimisation, nsga2, random_search, regularized_evolution
from supernet.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SPACE = CategoricalSpace({f"x{i}": [0, 1, 2, 3] for i in range(4)}, name="toy")


class Counted:
    """An evaluator that counts its calls; ``score`` peaks at every x = 2."""

    def __init__(self, score=lambda arch: -sum((v - 2) ** 2 for v in arch.values())):
        self.score, self.calls = score, 0

    def __call__(self, arch: dict) -> dict:
        self.calls += 1
        return {"score": self.score(arch), "cost": sum(arch.values())}


def test_search_core_imports_without_torch() -> None:
    code = ("import sys, search.strategies, search.space, search.problem, search.gp; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' "
            "or m in ('supernet.model', 'supernet.distributed')))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={"PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_a_problem_serves_one_search_and_each_result_is_its_own_list() -> None:
    evaluator = Counted()
    problem = Problem(SPACE, evaluator, progress=False)
    first = random_search(problem, evaluations=5, seed=0)
    assert len(first) == 5 and first == problem.history and first is not problem.history
    with pytest.raises(UserError, match="already ran random search \\(5 records\\).*make a new one for evolution"):
        regularized_evolution(problem, objective="score", evaluations=5, population=4, seed=1)
    assert evaluator.calls == 5 and len(first) == 5  # refused before anything ran; the first result is as it was
    problem.run({"x0": 3, "x1": 3, "x2": 3, "x3": 3})
    assert len(first) == 5 and len(problem.history) == 6
    outside = Problem(SPACE, Counted(), progress=False)
    outside.run({"x0": 0, "x1": 0, "x2": 0, "x3": 0})
    with pytest.raises(UserError, match="holds records run outside a search \\(1 records\\)"):
        random_search(outside, evaluations=3)


@pytest.mark.parametrize("search", [
    # evaluations == population: evolution never ranks, so the misspelt name used to pass unnoticed
    lambda p: regularized_evolution(p, objective="scroe", evaluations=4, population=4),
    lambda p: nsga2(p, objectives=[("score", True), ("csot", False)], evaluations=8, population=4),
    lambda p: bayesian_optimisation(p, objective="scroe", evaluations=6, initial=4, pool=10),
])
def test_a_misspelt_objective_is_refused_at_the_first_evaluation(search) -> None:
    evaluator = Counted()
    with pytest.raises(UserError, match="objective '(scroe|csot)' names a metric .* \\(they give: cost, score\\)"):
        search(Problem(SPACE, evaluator, progress=False))
    assert evaluator.calls == 1


def test_an_objective_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(UserError, match="objective 'score' must be a number, but the evaluator gives 'high'"):
        regularized_evolution(Problem(SPACE, Counted(lambda a: "high"), progress=False), objective="score",
                              evaluations=4, population=4)
    with pytest.raises(UserError, match="an objective is the name of a metric"):
        regularized_evolution(Problem(SPACE, Counted(), progress=False), objective=None, evaluations=4, population=4)


def test_bo_refuses_an_objective_that_is_never_finite_and_models_only_finite_ones() -> None:
    evaluator = Counted(lambda a: math.nan)
    with pytest.raises(UserError, match="BO: the objective 'score' is NaN or infinite in all 4 initial evaluations"):
        bayesian_optimisation(Problem(SPACE, evaluator, progress=False), objective="score", evaluations=8,
                              initial=4, pool=20)
    assert evaluator.calls == 4
    # some NaN (a crashed training run, say): the GP sees the rest, and a NaN never ranks as the best
    history = bayesian_optimisation(Problem(SPACE, Counted(lambda a: math.nan if a["x0"] == 2 else -abs(a["x1"] - 2)),
                                            progress=False), objective="score", evaluations=12, initial=6, pool=40)
    assert len(history) == 12 and any(math.isnan(r.metrics["score"]) for r in history)
    assert best(history, "score").metrics["score"] == max(r.metrics["score"] for r in history
                                                          if not math.isnan(r.metrics["score"]))
