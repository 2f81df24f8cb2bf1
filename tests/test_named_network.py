"""A key names one network, and every command builds that one.

In NAS-Bench-201 a cell and the representative of its class share a key but may run other ops (two convs from
the input where the representative runs one and a skip), so with inherited weights they are other networks
with other latencies. The search scores the representative; what it estimates, what its winner exports as and
what an ensemble of its front runs must be the same network, or the figures a user reads are of another one.
"""
from __future__ import annotations

import random

from search.export import winner_of
from search.problem import Problem
from supernet.family import get_space

SPACE = get_space("nb201-cpu")


def a_cell_that_is_not_its_representative() -> dict[str, str]:
    rng = random.Random(0)
    while True:
        cell = SPACE.sample(rng)
        if SPACE.parse(SPACE.to_string(cell)) != cell:
            return cell


def test_a_search_estimates_and_scores_the_network_its_key_names() -> None:
    cell = a_cell_that_is_not_its_representative()
    representative = SPACE.parse(SPACE.to_string(cell))
    evaluated, estimated = [], []
    problem = Problem(SPACE, lambda a: evaluated.append(dict(a)) or {"val_top1": 0.5},
                      estimate=lambda a: estimated.append(dict(a)) or {"ops": float(sum(v != "none" for v in a.values()))},
                      progress=False)
    record = problem.run(cell)
    assert evaluated == [representative] and estimated == [representative]
    assert record.metrics["ops"] == sum(v != "none" for v in representative.values())
    assert record.key == SPACE.to_string(representative)


def test_the_winner_exported_is_the_network_the_search_scored() -> None:
    cell = a_cell_that_is_not_its_representative()
    key = SPACE.to_string(cell)
    results = {"winners": {"cpu:5": {"arch": cell, "arch_string": key, "metrics": {"val_top1": 0.5}}}}
    assert winner_of(results, "cpu:5", "results.json", SPACE) == SPACE.parse(key) != cell
