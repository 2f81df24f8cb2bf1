"""Differentiable search (``search.dnas``): the relaxation's pieces against their exact counterparts, and the
command end to end through ``python -m`` on a real CIFAR-10 slice (train, derive, measure, resume, and the
results read by export and retrain unchanged)."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from search.dnas import ArchWeights, DnasConfig, expected_latency, fit_budget, search
from search.latency import LatencyTable, build_table, load_table
from search.run import read_results
from search.timing import TimingSettings
from supernet.errors import UserError
from supernet.family import build_supernet, get_space
from supernet.nb201 import KEYS, OPS
from tests.conftest import CIFAR, NO_CIFAR, make_cifar_slice, run_module

needs_cifar = pytest.mark.skipif(not (CIFAR / "train").is_dir(), reason=NO_CIFAR)


@pytest.fixture(scope="module")
def nb201_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nb201-table") / "cpu.json"
    build_table(get_space("nb201-cpu").config, torch.device("cpu"), settings=TimingSettings(warmup=0, repeats=1),
                calibration_subnets=2, out=path, progress=False, keep_busy=True)
    return path


def one_hot(space: Any, arch: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {key: torch.nn.functional.one_hot(torch.tensor(list(options).index(arch[key])), len(options)).double()
            for key, options in space.choices.items()}


def test_one_hot_relaxation_is_the_subnet() -> None:
    """With one-hot weights the relaxed supernet computes the active cell, soft (all ops) or hard (one op)."""
    space = get_space("nb201-cpu")
    torch.manual_seed(0)
    net = build_supernet(space.config).double().eval()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    for i in range(4):
        arch = space.sample(random.Random(i))
        net.set_active(arch)
        for hard in (False, True):
            torch.testing.assert_close(net.forward_mixed(x, one_hot(space, arch), hard=hard), net(x))


def test_soft_mix_is_the_weighted_sum_of_ops() -> None:
    """A soft mix on one edge is the weights' sum of the five single-op networks there, in eval mode (linear
    in the edge's output only for the network's last edge: checked on the op outputs directly)."""
    space = get_space("nb201-cpu")
    torch.manual_seed(1)
    edge = build_supernet(space.config).double().eval().cells[0].edges[0]
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    w = torch.rand(5, dtype=torch.float64).softmax(0)
    expected = sum(w[i] * edge(x, op) for i, op in enumerate(OPS))
    torch.testing.assert_close(edge.mixed(x, w), expected)


def test_gumbel_draws_are_one_hot_with_gradients() -> None:
    alphas = ArchWeights(get_space("nb201-cpu").choices, seed=0)
    draws = alphas.gumbel(1.0, torch.Generator().manual_seed(0))
    for w in draws.values():
        assert sorted(w.tolist()) == [0.0, 0.0, 0.0, 0.0, 1.0]
    sum(w[0] for w in draws.values()).backward()
    assert all(logits.grad is not None and logits.grad.abs().sum() > 0 for logits in alphas.parameters())


def test_beta_decay_pulls_hardest_on_the_largest_weight() -> None:
    alphas = ArchWeights(get_space("nb201-cpu").choices, seed=0)
    with torch.no_grad():
        alphas.logits[KEYS[0]].copy_(torch.tensor([0.0, 3.0, 0.0, 0.0, 0.0]))
    alphas.beta_decay().backward()
    grad = alphas.logits[KEYS[0]].grad
    torch.testing.assert_close(grad, alphas.logits[KEYS[0]].softmax(0).detach() / len(KEYS))
    assert int(grad.argmax()) == 1


def test_expected_latency_of_one_hot_is_the_table_prediction(nb201_table: Path) -> None:
    table = load_table(nb201_table)
    space = table.space
    net = build_supernet(space.config)
    for i in range(5):
        arch = space.sample(random.Random(i))
        assert float(expected_latency(net, one_hot(space, arch), table)) == pytest.approx(table.predict(arch), rel=1e-9)
    uniform = {key: torch.full((len(options),), 1 / len(options), requires_grad=True)
               for key, options in space.choices.items()}
    latency = expected_latency(net, uniform, table)
    assert table.predict(space.smallest()) < float(latency) < table.predict(space.largest())
    latency.backward()
    conv = OPS.index("nor_conv_3x3")
    assert all(w.grad[conv] > w.grad[OPS.index("none")] for w in uniform.values())  # a 3x3 conv costs more


def test_lowest_latency_is_the_minimum_over_the_space(nb201_table: Path, fast_table: Path) -> None:
    table = load_table(nb201_table)
    assert table.lowest_ms() == pytest.approx(min(table.predict(cell) for cell in table.space.cells()), rel=1e-12)
    mbv3 = load_table(fast_table)
    drawn = min(mbv3.predict(mbv3.space.sample(random.Random(i))) for i in range(300))
    assert mbv3.lowest_ms() <= min(drawn, mbv3.predict(mbv3.space.smallest())) + 1e-9


OP_MS = {"none": 0.01, "skip_connect": 0.01, "nor_conv_1x1": 0.2, "nor_conv_3x3": 0.5, "avg_pool_3x3": 0.1}


def synthetic_table(measured: Path) -> LatencyTable:
    """``measured``'s table with its entries replaced by round figures (an op costs the same at every stage),
    so that the greedy fit's choices can be worked out by hand."""
    data = json.loads(measured.read_text())
    for key, entry in data["entries"].items():
        entry["median_ms"] = OP_MS.get(key.split(".")[-1], 0.1)
    data["correction"] = {"scale": 1.0, "offset_ms": 0.0}
    return LatencyTable(data)


def test_fit_budget_trades_least_probability_per_millisecond(nb201_table: Path) -> None:
    table = synthetic_table(nb201_table)
    space = table.space
    largest = space.largest()  # six 3x3 convs: 6 edges x 3 stages x 0.5 ms, plus 0.5 ms of fixed units
    probs = {key: [0.1, 0.1, 0.3, 0.4, 0.1] for key in KEYS}
    assert fit_budget(space, table, probs, largest, table.predict(largest) + 1) == space.validate(largest)
    # 3x3 -> 1x1 saves 0.9 ms an edge for log(4/3) of probability, the cheapest trade: a 3 ms cut takes four
    fitted = fit_budget(space, table, probs, largest, table.predict(largest) - 3.0)
    assert sorted(fitted.values()).count("nor_conv_1x1") == 4 and sorted(fitted.values()).count("nor_conv_3x3") == 2
    with pytest.raises(UserError, match="no architecture of the space fits"):
        fit_budget(space, table, probs, largest, table.lowest_ms() - 0.01)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cifar_slice(tmp_path_factory.mktemp("dnas-cifar") / "cifar", 8)


@needs_cifar
@pytest.mark.slow
def test_latency_term_drives_expected_latency_to_the_budget(cifar: Path, nb201_table: Path, tmp_path: Path) -> None:
    """Under a tight budget and a heavy latency weight the architecture's expected latency falls to it."""
    torch.set_num_threads(1)
    table = load_table(nb201_table)
    space = table.space
    budget = table.predict(space.smallest()) + 0.2 * (table.predict(space.largest()) - table.predict(space.smallest()))
    config = DnasConfig(latency_ms=budget, data=str(cifar), table=str(nb201_table), epochs=2, batch_size=16,
                        val_size=32, calibration_size=16, arch_lr=0.05, latency_weight=20.0, method="darts",
                        out=str(tmp_path / "run"))
    result = search(config, command=["pytest"])
    first, last = result["alphas"][0], result["alphas"][-1]
    uniform = expected_latency(build_supernet(space.config), {k: torch.full((5,), 0.2) for k in KEYS}, table)
    final = expected_latency(build_supernet(space.config), {k: torch.tensor(last[k]) for k in KEYS}, table)
    assert float(final) < float(uniform) - 0.25 * (float(uniform) - budget), (first, last)
    assert result["winners"][f"cpu:{budget:g}"]["predicted_latency_ms"] <= budget


@needs_cifar
@pytest.mark.slow
def test_command_end_to_end_resumes_and_feeds_export_and_retrain(cifar: Path, nb201_table: Path,
                                                                 tmp_path: Path) -> None:
    table = load_table(nb201_table)
    budget = f"{(table.predict(table.space.smallest()) + table.predict(table.space.largest())) / 2:.3f}"
    common = ["--latency-ms", budget, "--data", str(cifar), "--table", str(nb201_table), "--epochs", "2",
              "--batch-size", "16", "--val-size", "32", "--calibration-size", "16", "--method", "gdas",
              "--crop-padding", "4", "--checkpoint-every", "2"]
    whole = run_module("search.dnas", *common, "--out", str(tmp_path / "whole"))
    assert "predicted" in whole.stdout and "measured" in whole.stdout and "dnas gdas" in whole.stderr
    stopped = run_module("search.dnas", *common, "--out", str(tmp_path / "split"), "--stop-after", "5")
    assert "stopped at step 5" in stopped.stdout
    run_module("search.dnas", *common, "--out", str(tmp_path / "split"), "--resume")
    a, b = (json.loads((tmp_path / run / "results.json").read_text()) for run in ("whole", "split"))
    def per_epoch(results: dict[str, Any]) -> list[dict[str, Any]]:  # refits depend on timings, which vary
        return [d for d in results["derived"] if d["fitted_to_ms"] == float(budget)]

    assert a["alphas"] == b["alphas"] and per_epoch(a) == per_epoch(b) and len(per_epoch(a)) == 2
    results = read_results(tmp_path / "whole" / "results.json")  # the shape every reader checks
    assert len(results["alphas"]) == 2 and set(results["alphas"][0]) == {"epoch", *KEYS}
    assert all("measured_latency_ms" in r["metrics"] for r in results["history"])
    for name in ("supernet.pt", "search.png", "alphas.png", "last.pt"):
        assert (tmp_path / "whole" / name).is_file()
    run_module("search.export", "--results", str(tmp_path / "whole" / "results.json"), "--out",
               str(tmp_path / "export" / "winner.pt"))
    assert (tmp_path / "export" / "winner.pt").is_file()
    retrained = run_module("search.retrain", "--results", str(tmp_path / "whole" / "results.json"), "--mode", "head",
                           "--epochs", "1", "--batch-size", "16", "--table", str(nb201_table), "--calibration-size",
                           "16", "--out", str(tmp_path / "retrain"))  # no --checkpoint: the search's own supernet
    assert "wrote" in retrained.stdout
    run_module("search.report", str(tmp_path / "whole" / "results.json"), "--retrain", str(tmp_path / "retrain"))
    assert "dnas-gdas" in (tmp_path / "whole" / "report.md").read_text()


@needs_cifar
@pytest.mark.parametrize("flags, message", [
    (["--warmup-epochs", "2", "--epochs", "2"], "--warmup-epochs 2 leaves no search epoch"),
    (["--latency-ms", "0.001"], "below the lowest latency the table predicts"),
    (["--tau-min", "5", "--tau-max", "1"], "--tau-min 5 is above --tau-max 1"),
    (["--batch-size", "64"], "--batch-size 64 is more than the"),
])
@pytest.mark.slow
def test_bad_input_is_one_line(flags: list[str], message: str, cifar: Path, nb201_table: Path, tmp_path: Path) -> None:
    base = {"--latency-ms": "100", "--data": str(cifar), "--table": str(nb201_table), "--val-size": "32",
            "--out": str(tmp_path / "run")}
    for flag, value in zip(flags[::2], flags[1::2]):
        base[flag] = value
    result = run_module("search.dnas", *[t for pair in base.items() for t in pair], check=False)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists(), "a refused search leaves no folder behind"
