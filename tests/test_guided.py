"""Predictor-guided search (search.guided): screened by the C++ sampler, ranked by the predictor, checked by
the supernet, and results that say which figure is predicted and which measured."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from search.features import width
from search.guided import PREDICTED, Seeded, screen
from search.latency import load_table
from search.predictor import FitConfig, Predictor, fit
from search.problem import Bound
from search.regressors import Ridge
from search.run import default_verify, parse_scenarios
from supernet.errors import UserError
from supernet.sampler import DEFAULT_RESOLUTION_MS, decode, flops_params_table, quantised_latency, sample, score
from supernet.space import get_space
from tests.conftest import run_module

SPACE = get_space("mbv3")


def linear_predictor(seed: int = 0) -> Predictor:
    """A predictor whose accuracy is a fixed random linear function of the encoding: no fitting needed."""
    weight = torch.randn(width(SPACE.layout()), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return Predictor(SPACE, Ridge(weight / 100, 0.8, 1.0), {"path": "-", "sha256": "-"}, {})


def test_screen_keeps_the_best_predicted_within_the_budget_and_bounds(fast_table: Path) -> None:
    table, predictor, counts = load_table(fast_table), linear_predictor(), flops_params_table(SPACE.config)
    budget = (table.lowest_ms() + table.highest_ms()) / 2
    codes = sample(SPACE, 5000, seed=7, latency=table.metric_table(), window=(0.0, budget))
    flops = score(SPACE, codes, counts)[:, 0]
    bound = Bound("flops", upper=float(flops.median()))
    best = screen(SPACE, predictor, table.metric_table(), counts, budget, [bound], count=5000, keep=20, seed=7)

    keys = [SPACE.to_string(a) for a in best]
    assert len(best) == 20 and len(set(keys)) == 20
    ok = flops <= bound.upper  # by brute force over the same draws: the 20 best distinct of those in bounds
    ranked = sorted({SPACE.to_string(a): float(p) for a, p in zip(decode(SPACE, codes[ok]),
                                                                   predictor.predict(codes[ok]))}.items(),
                    key=lambda kv: -kv[1])
    assert keys == [k for k, _ in ranked[:20]]
    ticks = quantised_latency(SPACE, torch.stack([torch.tensor(SPACE.to_codes(a), dtype=torch.int8) for a in best]),
                              table.metric_table())
    assert int(ticks.max()) * DEFAULT_RESOLUTION_MS <= budget + 1e-9  # the window is on quantised latency
    assert screen(SPACE, predictor, table.metric_table(), counts, budget, [], count=0, keep=5, seed=0) == []


def test_seeded_gives_the_screened_first_then_draws() -> None:
    first = [SPACE.smallest(), SPACE.largest()]
    seeded = Seeded(first, SPACE.sample)
    rng = random.Random(0)
    drawn = [seeded(rng) for _ in range(4)]
    assert drawn[:2] == first and drawn[2] == SPACE.sample(random.Random(0))


def test_many_scenarios_verify_fewer_each_but_never_under_two() -> None:
    assert [default_verify(n) for n in (1, 5, 6, 9, 12, 13, 40, 1000)] == [5, 5, 5, 3, 3, 2, 2, 2]


def test_a_range_of_budgets_names_every_step_with_both_ends() -> None:
    sweep = parse_scenarios("cpu:5-25/0.5")
    assert len(sweep) == 41 and sweep[0].name == "cpu:5" and sweep[1].name == "cpu:5.5" and sweep[-1].name == "cpu:25"
    assert [s.latency_ms for s in parse_scenarios("cpu:1-2/0.3,cpu:9")] == [1.0, 1.3, 1.6, 1.9, 9.0]
    for bad in ("cpu:5-25/0", "cpu:25-5/1", "cpu:0-2/1", "cpu:1-2000/1", "cpu:5-/1"):
        with pytest.raises(UserError, match="is not DEVICE:BUDGET_MS or DEVICE:FROM-TO/STEP"):
            parse_scenarios(bad)
    with pytest.raises(UserError, match="names a scenario twice"):
        parse_scenarios("cpu:5-6/1,cpu:6")


@pytest.fixture(scope="module")
def guided_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path, fake_data: Path) -> Path:
    """A copy of the tiny supernet with a predictor fitted beside it (12 evaluations)."""
    checkpoint = tmp_path_factory.mktemp("guided") / "final.pt"
    shutil.copy(tiny_run / "final.pt", checkpoint)
    fit(FitConfig(checkpoint=str(checkpoint), evaluations=12, data=str(fake_data), held_out=0.34,
                  calibration_size=32, threads=1), command=["pytest"])
    assert checkpoint.with_name("final.predictor.pt").is_file()
    return checkpoint


@pytest.mark.slow
def test_a_search_uses_the_predictor_beside_the_checkpoint_and_the_supernet_checks_it(
        tmp_path: Path, guided_checkpoint: Path, fake_data: Path, fast_table: Path) -> None:
    table = load_table(fast_table)
    budget = round((table.lowest_ms() + table.highest_ms()) / 2, 3)
    args = ["search.evolve", "--latency-ms", f"{budget}", "--checkpoint", str(guided_checkpoint), "--data",
            str(fake_data), "--table", str(fast_table), "--calibration-size", "32", "--evaluations", "60",
            "--screen", "3000", "--verify", "3", "--out", str(tmp_path / "guided")]
    first = run_module(*args)
    assert "accuracy predicted by" in first.stderr and "60 evaluations by the predictor" in first.stderr
    results = json.loads((tmp_path / "guided" / "results.json").read_text())
    assert results["config"]["predictor"] == str(guided_checkpoint.with_name("final.predictor.pt"))
    assert results["evaluations"] == 60 and len(results["predicted"]) == 60
    assert all(PREDICTED in r["metrics"] and "val_top1" not in r["metrics"] for r in results["predicted"])
    assert "predicted by" in results["figures"][PREDICTED] and "measured" in results["figures"]["val_top1"]

    winner = results["winners"][f"cpu:{budget:g}"]
    verified, scored = winner["verified"], winner["scored"]
    evaluated = verified + scored  # the 3 best by the predictor, then ordered by the supernet's accuracy
    assert len(evaluated) == 3 and results["supernet_evaluations"] == 3 and verified
    assert max(r["metrics"][PREDICTED] for r in results["predicted"]) == \
        max(v["metrics"][PREDICTED] for v in evaluated)
    top3 = sorted((r["metrics"][PREDICTED] for r in results["predicted"]), reverse=True)[:3]
    assert sorted(v["metrics"][PREDICTED] for v in evaluated) == sorted(top3)
    assert [v["metrics"]["val_top1"] for v in evaluated] == sorted((v["metrics"]["val_top1"] for v in evaluated),
                                                                  reverse=True)
    assert not any(v["meets_budget"] for v in verified[:-1])  # timed from the most accurate down to the first
    assert all("measured_latency_ms" not in r for r in scored) and (not scored or verified[-1]["meets_budget"])
    within = [v for v in verified if v["meets_budget"]]
    assert winner["metrics"]["val_top1"] == max(v["metrics"]["val_top1"] for v in within or evaluated)
    assert winner["meets_budget"] or not scored
    assert {r["arch_string"] for r in results["history"]} == {v["arch_string"] for v in evaluated}
    journal = json.loads((tmp_path / "guided" / "journal.json").read_text())
    assert {k: e["val_top1"] for k, e in journal["entries"].items()} == \
        {v["arch_string"]: v["metrics"]["val_top1"] for v in evaluated}  # only the supernet's are journalled
    assert set(journal["measurements"]) == {f"cpu|{v['arch_string']}" for v in verified}  # only those timed

    stamp = (tmp_path / "guided" / "journal.json").stat().st_mtime_ns
    run_module(*args)  # a rerun repeats the predictor's part and replays the supernet's
    assert (tmp_path / "guided" / "journal.json").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "guided" / "results.json").read_text())["winners"] == results["winners"]

    report = run_module("search.report", str(tmp_path / "guided" / "results.json"), "--out",
                        str(tmp_path / "report.md"))
    assert "the 3 best were evaluated by the supernet" in (tmp_path / "report.md").read_text()

    # two budgets that bind: each picks from both scenarios' verified candidates, the most accurate timed first
    sweep = [f"cpu:{round(table.lowest_ms() + f * (table.highest_ms() - table.lowest_ms()), 3):g}"
             for f in (0.5, 0.8)]
    run_module(args[0], *args[3:-1], str(tmp_path / "pooled"), "--scenarios", ",".join(sweep))
    pooled = json.loads((tmp_path / "pooled" / "results.json").read_text())
    assert pooled["config"]["verify"] == 3 and pooled["supernet_evaluations"] == len(pooled["history"]) <= 6
    for name in sweep:
        won = pooled["winners"][name]
        within = [r for r in pooled["history"] if r["metrics"]["latency_ms@cpu"] <= won["budget_ms"]]
        assert won["verified"][0]["metrics"]["val_top1"] == max(r["metrics"]["val_top1"] for r in within)
        assert {r["arch_string"] for r in won["scored"]} <= {r["arch_string"] for r in within}

    # budgets every subnet meets, far enough above the table that no measurement on a busy machine reaches them
    loose = [f"cpu:{round(table.highest_ms() + extra, 2):g}" for extra in (100, 200)]
    swept = run_module(args[0], *args[3:-1], str(tmp_path / "loose"), "--scenarios", ",".join(loose)).stderr
    assert args[1] == "--latency-ms" and f"scenarios {loose[0]} to {loose[1]} (2): every subnet meets" in swept
    assert f"scenario {loose[1]}: its budget does not bind, as {loose[0]}'s did not: that search serves it" in swept
    both = json.loads((tmp_path / "loose" / "results.json").read_text())
    assert both["evaluations"] == 60 and both["winners"][loose[0]]["arch_string"] == both["winners"][loose[1]]["arch_string"]

    direct = run_module(*args[:-1], str(tmp_path / "direct"), "--predictor", "none", "--evaluations", "3")
    assert "predicted by" not in direct.stderr
    assert "predicted" not in json.loads((tmp_path / "direct" / "results.json").read_text())


def test_a_predictor_of_another_checkpoint_is_refused(tmp_path: Path, guided_checkpoint: Path, tiny_run: Path,
                                                      fake_data: Path, fast_table: Path) -> None:
    refused = run_module("search.evolve", "--latency-ms", "50", "--checkpoint", str(tiny_run / "last.pt"),
                         "--data", str(fake_data), "--table", str(fast_table), "--predictor",
                         str(guided_checkpoint.with_name("final.predictor.pt")), "--out", str(tmp_path / "x"),
                         check=False)
    assert refused.returncode == 2 and "was fitted for checkpoint" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x" / "results.json").exists()


def test_a_batched_evaluator_gives_the_history_of_the_one_by_one_evaluator() -> None:
    from search.problem import Problem
    from search.space import CategoricalSpace
    from search.strategies import regularized_evolution

    space = CategoricalSpace({"a": list(range(6)), "b": list(range(5)), "c": ["x", "y"]})
    score = lambda arch: {"score": arch["a"] * 1.5 - (arch["b"] - 2) ** 2 + (arch["c"] == "y")}  # noqa: E731
    calls: list[int] = []

    def many(archs: list[dict]) -> list[dict]:
        calls.append(len(archs))
        return [score(a) for a in archs]

    runs = [regularized_evolution(Problem(space, score, evaluate_many=batched, progress=False), objective="score",
                                  evaluations=30, population=6, children=3, tournament=2, seed=4)
            for batched in (None, many)]
    assert [(r.key, r.metrics) for r in runs[0]] == [(r.key, r.metrics) for r in runs[1]]
    assert calls[0] == 6 and set(calls[1:]) <= {3} and sum(calls) == 30  # a population, then generations
    broken = Problem(space, score, evaluate_many=lambda archs: [], progress=False)
    with pytest.raises(UserError, match="evaluate_many returned 0 results for 6 architectures"):
        regularized_evolution(broken, objective="score", evaluations=10, population=6, children=3, tournament=2)
