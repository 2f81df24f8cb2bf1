"""Ensembles: select() against brute force, the Ensemble module, and ``python -m search.ensemble`` end to end."""
import json
import math
import random
from pathlib import Path

import pytest
import torch

import search.ensemble as ensemble_module
from search.ensemble import Ensemble, select
from search.export import read_metadata
from search.latency import load_table
from supernet.checkpoint import load_supernet
from supernet.data import load_splits
from supernet.errors import UserError, run_cli
from supernet.evaluate import recalibrate_bn
from tests.conftest import run_module


def two_class_logits(margins: list[float], labels: torch.Tensor) -> torch.Tensor:
    """Logits whose true class leads the other by ``margin`` (a negative margin: a mistake)."""
    logits = torch.zeros(len(labels), 2)
    logits[torch.arange(len(labels)), labels] = torch.tensor(margins)
    return logits


LABELS = torch.tensor([0, 1] * 5)
# strong alone: 7/10. weak1 and weak2: 6/10 each, confidently right where the other is hesitantly wrong,
# so their mean is right on all 10.
COMPLEMENTARY = {
    "strong": two_class_logits([1.5] * 7 + [-1.5] * 3, LABELS),
    "weak1": two_class_logits([2.0] * 6 + [-1.0] * 4, LABELS),
    "weak2": two_class_logits([-1.0] * 4 + [2.0] * 6, LABELS),
}
COSTS = {"strong": 5.0, "weak1": 3.0, "weak2": 3.0}


@pytest.mark.parametrize("budget, max_members, expected", [
    (6.0, 3, ["weak1", "weak2"]),   # two weak members beat the best single one at the same budget
    (5.9, 3, ["strong"]),           # the budget excludes the pair
    (8.0, 3, ["weak1", "weak2"]),   # strong+weak2 is as accurate but slower: lower latency wins the tie
    (100.0, 1, ["strong"]),         # max_members honoured
    (4.0, 3, ["weak1"]),            # only the weak ones fit; equal accuracy and latency: key order
])
def test_select_on_complementary_members(budget: float, max_members: int, expected: list[str]) -> None:
    assert select(COMPLEMENTARY, LABELS, COSTS, budget_ms=budget, max_members=max_members) == expected


def test_select_ties_go_to_fewer_members_then_key_order() -> None:
    perfect = two_class_logits([1.0] * 10, LABELS)
    logits = {**COMPLEMENTARY, "perfect": perfect}
    assert select(logits, LABELS, {**COSTS, "perfect": 7.0}, budget_ms=8, max_members=3) == ["perfect"]
    twins = {"a": perfect, "b": perfect.clone()}
    assert select(twins, LABELS, {"a": 1.0, "b": 1.0}, budget_ms=5, max_members=2) == ["a"]
    assert select(dict(reversed(twins.items())), LABELS, {"a": 1.0, "b": 1.0}, budget_ms=5, max_members=2) == ["b"]


def brute_force(logits: dict, labels: torch.Tensor, costs: dict, budget: float, max_members: int) -> list[str]:
    """Every subset by bit mask; the best by (accuracy, fewer members, lower latency, earlier keys)."""
    keys = list(logits)
    best = None
    for mask in range(1, 2 ** len(keys)):
        index = [i for i in range(len(keys)) if mask >> i & 1]
        latency = sum(costs[keys[i]] for i in index)
        if len(index) > max_members or latency > budget:
            continue
        correct = int((torch.stack([logits[keys[i]] for i in index]).mean(0).argmax(1) == labels).sum())
        rank = (-correct, len(index), latency, index)
        best = rank if best is None or rank < best else best
    return [keys[i] for i in best[3]]


def accuracy_of(keys: list[str], logits: dict, labels: torch.Tensor) -> float:
    return (torch.stack([logits[k] for k in keys]).mean(0).argmax(1) == labels).float().mean().item()


@pytest.mark.parametrize("seed", range(6))
def test_select_matches_brute_force_and_greedy_keeps_its_promises(seed: int, monkeypatch) -> None:
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (40,), generator=generator)
    keys = [f"arch{i}" for i in range(7)]
    logits = {k: torch.randn(40, 3, generator=generator) + 1.5 * torch.nn.functional.one_hot(labels, 3)
              * (torch.rand(40, 1, generator=generator) < 0.5) for k in keys}
    costs = {k: round(rng.uniform(1, 5), 1) for k in keys}
    for budget, max_members in ((min(costs.values()), 3), (6.0, 2), (9.0, 3), (30.0, 7)):
        chosen = select(logits, labels, costs, budget_ms=budget, max_members=max_members)
        assert chosen == brute_force(logits, labels, costs, budget, max_members)
        with monkeypatch.context() as patch:
            patch.setattr(ensemble_module, "MAX_COMBINATIONS", 0)  # forces greedy forward selection
            greedy = select(logits, labels, costs, budget_ms=budget, max_members=max_members)
        best_single = brute_force(logits, labels, costs, budget, 1)
        assert len(greedy) <= max_members and sum(costs[k] for k in greedy) <= budget
        assert accuracy_of(greedy, logits, labels) >= accuracy_of(best_single, logits, labels)
        assert accuracy_of(chosen, logits, labels) >= accuracy_of(greedy, logits, labels)


@pytest.mark.parametrize("kwargs, message", [
    ({"budget_ms": 0, "max_members": 2}, "budget_ms must be a positive"),
    ({"budget_ms": math.nan, "max_members": 2}, "budget_ms must be a positive"),
    ({"budget_ms": 10, "max_members": 0}, "max_members must be a whole number of at least 1"),
    ({"budget_ms": 2.5, "max_members": 2}, "no candidate fits the budget of 2.5 ms: the fastest, weak1, takes 3.00"),
])
def test_select_refuses_nonsense(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        select(COMPLEMENTARY, LABELS, COSTS, **kwargs)


def test_ensemble_is_the_mean_of_its_members_and_scripts() -> None:
    # Small stand-in members keep scripting fast; the export test below scripts an ensemble of real subnets.
    torch.manual_seed(0)
    members = [torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5)) for _ in range(3)]
    model = Ensemble(members).eval()
    x = torch.randn(4, 12)
    with torch.no_grad():
        expected = (members[0](x) + members[1](x) + members[2](x)) / 3
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble([])


# ---- the command line ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def search_results(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path, fake_data: Path,
                   fast_table: Path) -> Path:
    """A small evolution search on the tiny supernet, as tests/test_pipeline.py runs it.

    The fast table's correction is fitted to three one-repeat timings, which on a busy machine can make
    predictions negative; its plain unit sums (correction set to the identity) are always positive.
    """
    out = tmp_path_factory.mktemp("search")
    data = json.loads(fast_table.read_text())
    data["correction"] = {"scale": 1.0, "offset_ms": 0.0, "points": 0, "source": "test"}
    (out / "table.json").write_text(json.dumps(data))
    table = load_table(out / "table.json")
    space = load_supernet(tiny_run / "final.pt")[0].space
    budget = (table.predict(space.smallest()) + table.predict(space.largest())) / 2
    run_module("search.evolve", "--latency-ms", f"{budget:.3f}", "--checkpoint", str(tiny_run / "final.pt"),
               "--data", str(fake_data), "--table", str(out / "table.json"), "--population", "4", "--evaluations", "8",
               "--children", "2", "--tournament", "2", "--calibration-size", "32", "--verify", "1",
               "--out", str(out))
    return out / "results.json"


@pytest.mark.slow
def test_cli_picks_an_ensemble_from_the_front_and_exports_it(tmp_path: Path, search_results: Path, tiny_run: Path,
                                                             fake_data: Path) -> None:
    results = json.loads(search_results.read_text())
    history = {r["arch_string"]: r["metrics"] for r in results["history"]}
    front = results["pareto_front"]
    fastest = sorted(history[k]["latency_ms@cpu"] for k in front)
    budget = sum(fastest[:2]) + 0.01 if len(fastest) > 1 else fastest[0] + 0.01
    out = tmp_path / "ensemble"
    # checkpoint, data, table and calibration size all default to the search's own
    run_module("search.ensemble", str(search_results), "--latency-ms", f"{budget:.3f}", "--max-members", "3",
               "--out", str(out), "--export")
    report = json.loads((out / "ensemble.json").read_text())

    members = [m["arch"] for m in report["members"]]
    assert members and set(members) <= set(front) and len(members) <= 3
    for member in report["members"]:  # scored exactly as the search scored it, latency as it predicted it
        assert member["val_top1"] == pytest.approx(history[member["arch"]]["val_top1"], abs=1e-6)
        assert member["predicted_latency_ms"] == pytest.approx(history[member["arch"]]["latency_ms@cpu"])
    e, b = report["ensemble"], report["best_member"]
    assert e["predicted_latency_ms"] == pytest.approx(sum(history[k]["latency_ms@cpu"] for k in members))
    assert e["predicted_latency_ms"] <= float(f"{budget:.3f}")
    within = [k for k in front if history[k]["latency_ms@cpu"] <= float(f"{budget:.3f}")]
    assert b["arch"] in within and b["val_top1"] == pytest.approx(max(history[k]["val_top1"] for k in within))
    assert e["val_top1"] >= b["val_top1"]  # a single member is a candidate ensemble
    assert report["gain_test_top1"] == pytest.approx(e["test_top1"] - b["test_top1"])
    assert e["measured_latency_ms"] > 0 and b["measured_latency_ms"] > 0
    config = report["config"]
    assert config["checkpoint"] == str(tiny_run / "final.pt") and config["calibration_size"] == 32
    assert report["command"][:3] == ["python", "-m", "search.ensemble"] and report["results"] == str(search_results)

    metadata = read_metadata(out / "ensemble.pt")
    assert metadata["kind"] == "ensemble" and metadata["members"] == members
    assert metadata["test_top1"] == e["test_top1"]
    supernet, _ = load_supernet(tiny_run / "final.pt")
    splits = load_splits(fake_data, val_size=64)
    calibration = splits.train.subset(torch.arange(32))
    subnets = [recalibrate_bn(supernet.extract(supernet.space.parse(k)), calibration).eval() for k in members]
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        expected = torch.stack([s(x) for s in subnets]).mean(0)
        torch.testing.assert_close(torch.jit.load(str(out / "ensemble.pt"))(x), expected, atol=1e-4, rtol=1e-4)


def test_cli_refuses_a_budget_below_the_front_and_a_device_the_search_did_not_predict(
        tmp_path: Path, search_results: Path, capsys: pytest.CaptureFixture) -> None:
    def refused(*argv: str) -> str:
        """The one line of stderr with which ``run_cli`` (what ``python -m search.ensemble`` runs) exits 2."""
        with pytest.raises(SystemExit) as exit_:
            run_cli(ensemble_module.main, [*argv, "--out", str(tmp_path)])
        stderr = capsys.readouterr().err
        assert exit_.value.code == 2 and len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
        return stderr

    low = refused(str(search_results), "--latency-ms", "0.001")
    assert "below every Pareto-front member's predicted latency" in low
    elsewhere = tmp_path / "results.json"  # a search that predicted latency on cuda:0 only
    elsewhere.write_text(search_results.read_text().replace("latency_ms@cpu", "latency_ms@cuda:0"))
    other = refused(str(elsewhere), "--latency-ms", "50")
    assert "has no latency_ms@cpu predictions (it has latency_ms@cuda:0)" in other
    members = refused(str(search_results), "--latency-ms", "50", "--max-members", "0")
    assert "argument --max-members: must be an integer from 1" in members
    assert not (tmp_path / "ensemble.json").exists()
