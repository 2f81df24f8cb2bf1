"""Random candidates under a tight latency budget come from the windowed sampler, not from rejection.

Near the lowest latency a table predicts, almost no architecture of ``space.sample`` meets the budget, so
rejection gives up; :class:`supernet.sampler.WindowDraws` draws only networks predicted within it (and
:meth:`Problem.draw` still rejects the few that quantisation lets a hair over).
"""
import json
import math
import random
from pathlib import Path

import pytest

from search.latency import LatencyTable, expected_keys, load_table
from search.problem import Bound, Problem
from search.run import Scenario, within_budget
from supernet.errors import UserError
from supernet.sampler import WindowDraws, window_count
from supernet.space import get_space
from tests.conftest import run_module

SPACE = get_space("mbv3")
METRIC = "latency_ms@cpu"


def synthetic_table(seed: int = 0) -> LatencyTable:
    """An mbv3 table of made-up unit medians (0.05 to 0.5 ms): its lowest latency is known, no timing needed."""
    rng = random.Random(seed)
    entries = {key: {"median_ms": rng.uniform(0.05, 0.5)} for key in expected_keys(SPACE.config)}
    return LatencyTable({"space": SPACE.config.to_dict(), "entries": entries, "fingerprint": {}})


def problem(table: LatencyTable, budget: float, sampler=None) -> Problem:
    return Problem(SPACE, lambda arch: {}, bounds=[Bound(METRIC, upper=budget)],
                   estimate=lambda arch: {METRIC: table.predict(arch)}, sampler=sampler, progress=False)


def near_minimum(table: LatencyTable, networks: int) -> float:
    """The least budget ``lowest + 0.05 * k`` ms whose window holds at least ``networks`` networks."""
    budget = table.lowest_ms()
    while window_count(SPACE, table.metric_table(), (0.0, budget)) < networks:
        budget += 0.05
    return budget


def test_a_budget_near_the_minimum_defeats_rejection_but_not_the_window() -> None:
    table = synthetic_table()
    budget = table.lowest_ms() + 0.1
    plain, rng = problem(table, budget), random.Random(0)
    with pytest.raises(UserError, match="no new feasible architecture in 2000 tries"):
        plain.draw(lambda: plain.sample(rng))

    windowed = problem(table, budget, within_budget(Scenario("cpu", budget), SPACE, table))
    rng = random.Random(0)
    archs = windowed.draw_many(lambda: windowed.sample(rng), 40)
    assert len({SPACE.to_string(a) for a in archs}) == 40
    assert all(table.predict(a) <= budget for a in archs)

    # The window covers every network it counts, and quantisation lets some a hair over the budget through:
    # those are what Problem.draw still rejects.
    raw = WindowDraws(SPACE, table.metric_table(), (0.0, budget))
    rng = random.Random(1)
    drawn = [raw(rng) for _ in range(1000)]
    assert len({SPACE.to_string(a) for a in drawn}) == window_count(SPACE, table.metric_table(), (0.0, budget))
    assert 0 < sum(table.predict(a) > budget for a in drawn) < 200


def test_the_same_seed_gives_the_same_draws() -> None:
    table = synthetic_table(1)
    budget = near_minimum(table, 300)

    def draws(seed: int) -> list[str]:
        p = problem(table, budget, within_budget(Scenario("cpu", budget), SPACE, table))
        rng = random.Random(seed)
        return [SPACE.to_string(a) for a in p.draw_many(lambda: p.sample(rng), 30)]

    first = draws(3)
    assert draws(3) == first and draws(4) != first


def test_an_empty_window_falls_back_to_rejection(capsys: pytest.CaptureFixture[str]) -> None:
    table = synthetic_table()
    scenario = Scenario("cpu", table.lowest_ms() / 2)
    assert within_budget(scenario, SPACE, table) is None
    assert "rejected when over budget (latency window" in capsys.readouterr().err
    assert within_budget(scenario, SPACE, table, say=False) is None and not capsys.readouterr().err
    assert problem(table, 1.0).sample(random.Random(0)) == SPACE.sample(random.Random(0))  # no sampler: the space's


@pytest.mark.slow
def test_bo_meets_a_budget_near_the_minimum_and_a_rerun_replays_it(tmp_path: Path, tiny_run: Path, fake_data: Path,
                                                                  fast_table: Path) -> None:
    table = load_table(fast_table)
    budget = math.ceil(near_minimum(table, 40) * 1000) / 1000  # as a flag writes it
    plain, rng = problem(table, budget), random.Random(0)
    with pytest.raises(UserError, match="no new feasible architecture"):  # what the search died of before
        plain.draw(lambda: plain.sample(rng))

    args = ["search.bo", "--latency-ms", f"{budget:.3f}", "--evaluations", "4", "--initial", "3", "--pool", "10",
            "--checkpoint", str(tiny_run / "final.pt"), "--data", str(fake_data), "--table", str(fast_table),
            "--calibration-size", "32", "--verify", "1", "--out", str(tmp_path / "bo")]
    run_module(*args)
    results = json.loads((tmp_path / "bo" / "results.json").read_text())
    assert results["evaluations"] == 4
    assert all(r["metrics"][METRIC] <= float(f"{budget:.3f}") for r in results["history"])
    journal = tmp_path / "bo" / "journal.json"
    stamp = journal.stat().st_mtime_ns
    run_module(*args)  # the same seed draws the same candidates: all replayed from the journal, none evaluated
    assert journal.stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "bo" / "results.json").read_text())["history"] == results["history"]
