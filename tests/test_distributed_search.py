"""Searches whose evaluations are shared by processes: batches in :class:`Problem`, and real ``torchrun``.

Every rank runs the same seeded algorithm and evaluates its round-robin share of each batch, so 2 processes
must find exactly what 1 process finds with the same seed: the same history, in the same order, with the
same metrics, and the same winners, with each rank doing part of the work and rank 0 alone writing.
"""
import json
from pathlib import Path

import pytest

from search.latency import load_table
from search.problem import Bound, Journal, Problem
from search.space import CategoricalSpace
from supernet.checkpoint import load_supernet
from supernet.distributed import Group
from tests.conftest import run_module

SPACE = CategoricalSpace({"a": [0, 1, 2, 3], "b": [0, 1, 2]}, name="small")


def test_run_many_replays_the_journal_and_evaluates_a_repeat_once(tmp_path: Path) -> None:
    calls: list[str] = []

    def evaluate(arch: dict) -> dict:
        calls.append(SPACE.to_string(arch))
        return {"score": arch["a"] - arch["b"]}

    def problem() -> Problem:
        return Problem(SPACE, evaluate, bounds=[Bound("score", lower=0)], progress=False,
                       journal=Journal(tmp_path / "journal.json", {"test": 1}))

    x, y, z = {"a": 1, "b": 0}, {"a": 0, "b": 2}, {"a": 3, "b": 1}
    first = problem()
    records = first.run_many([x, y, x], generation=3)
    assert calls == [SPACE.to_string(x), SPACE.to_string(y)]  # the repeat within the batch is not evaluated again
    assert [r.key for r in records] == [SPACE.to_string(a) for a in (x, y, x)] and first.history == records
    assert [r.feasible for r in records] == [True, False, True] and {r.generation for r in records} == {3}
    assert first.run(x).metrics == {"score": 1} and len(calls) == 2  # nor one evaluated in an earlier batch
    assert first.evaluated == 2 and first.replayed == 0

    resumed = problem()  # a rerun on the journal: x and y replayed, only z evaluated
    again = resumed.run_many([y, z, x])
    assert calls[2:] == [SPACE.to_string(z)] and resumed.replayed == 2 and resumed.evaluated == 1
    assert [r.metrics for r in again] == [{"score": -2}, {"score": 2}, {"score": 1}]
    assert sorted(json.loads((tmp_path / "journal.json").read_text())["entries"]) == sorted(
        SPACE.to_string(a) for a in (x, y, z))
    assert resumed.run_many([]) == [] and len(resumed.history) == 3


def evolve(nproc: int, out: Path, args: list[str]):
    """``python -m search.evolve`` in one process, or under ``torchrun --nproc-per-node nproc``."""
    launcher = ["torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), "-m"] if nproc > 1 else []
    result = run_module(*launcher, "search.evolve", *args, "--out", str(out))
    return result, json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_two_processes_share_the_evaluations_and_find_what_one_finds(tmp_path: Path, tiny_run: Path,
                                                                    fake_data: Path, fast_table: Path) -> None:
    table = load_table(fast_table)
    space = load_supernet(tiny_run / "final.pt")[0].space
    budget = (table.predict(space.smallest()) + table.predict(space.largest())) / 2
    # --verify 1: the winner is the best predicted candidate whatever its (noisy) measured latency
    args = ["--latency-ms", f"{budget:.3f}", "--checkpoint", str(tiny_run / "final.pt"), "--data", str(fake_data),
            "--table", str(fast_table), "--population", "4", "--evaluations", "8", "--children", "2",
            "--tournament", "2", "--calibration-size", "32", "--verify", "1", "--seed", "5"]
    _, one = evolve(1, tmp_path / "one", args)
    two_run, two = evolve(2, tmp_path / "two", args)

    assert two["history"] == one["history"] and len(one["history"]) == 8  # archs, metrics, generations, in order
    assert len({r["generation"] for r in one["history"]}) == 3  # the population, then two generations
    assert list(two["winners"]) == list(one["winners"])
    for name, winner in one["winners"].items():
        assert {k: two["winners"][name][k] for k in ("arch_string", "metrics", "predicted_latency_ms")} == {
            k: winner[k] for k in ("arch_string", "metrics", "predicted_latency_ms")}
    assert two["pareto_front"] == one["pareto_front"]
    # each rank counted its own evaluator calls: round-robin halves of each batch; one alone did all the work
    assert (one["world_size"], one["evaluated_by_rank"]) == (1, [8])
    assert (two["world_size"], two["evaluated_by_rank"]) == (2, [4, 4])
    # rank 0 alone wrote, printed and showed progress; its journal holds every rank's evaluations
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["journal.json", "results.json", "search.png"]
    entries = json.loads((tmp_path / "two" / "journal.json").read_text())["entries"]
    assert entries == json.loads((tmp_path / "one" / "journal.json").read_text())["entries"]
    assert two_run.stdout.count("wrote ") == 1 and two_run.stdout.count("verify ") == 1
    assert two_run.stderr.count("0/8 [") == 1, "one progress bar"
    assert "shared by 2 processes" in two_run.stderr


class SecondRank(Group):
    """Rank 1 of 2 where the other rank's share comes back as if rank 0 had evaluated it (no process group)."""

    def map(self, function, items):
        return [function(item) for item in items]


def test_a_rank_other_than_0_keeps_the_journal_in_step_without_writing_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    journal = Journal(path, {"test": 2})
    rank1 = SecondRank(rank=1, world_size=2)
    first = Problem(SPACE, lambda a: {"score": a["a"]}, journal=journal, progress=False, group=rank1)
    first.run_many([{"a": 1, "b": 0}, {"a": 2, "b": 0}])
    assert not path.exists() and len(journal) == 2
    # a later scenario sharing the journal replays them, as rank 0's does: both ranks agree what is left to do
    second = Problem(SPACE, lambda a: {"score": -1}, journal=journal, progress=False, group=rank1)
    assert [r.metrics["score"] for r in second.run_many([{"a": 2, "b": 0}, {"a": 3, "b": 0}])] == [2, -1]
    assert second.replayed == 1 and second.evaluated == 1 and not path.exists()
