"""The whole job through ``python -m``: train, build a table, evolve, export, load in a clean process."""
import json
from pathlib import Path

import pytest
import torch

from search.export import read_metadata
from search.latency import load_table
from supernet.checkpoint import load_supernet
from tests.conftest import logits_without_the_project, run_module


@pytest.mark.slow
def test_train_cli_writes_checkpoints_and_resumes_bit_identically(tmp_path: Path, fake_data: Path) -> None:
    common = ["supernet.train", "--data", str(fake_data), "--epochs", "2", "--batch-size", "64",
              "--val-size", "64", "--calib-size", "32", "--warmup-steps", "1", "--checkpoint-every", "100"]
    run_module(*common, "--out", str(tmp_path / "a"))
    stopped = run_module(*common, "--out", str(tmp_path / "b"), "--stop-after", "3")
    assert "stopped at step 3 of 8" in stopped.stdout
    assert not (tmp_path / "b" / "final.pt").exists()
    run_module("supernet.train", "--resume", "--out", str(tmp_path / "b"))
    a, meta = load_supernet(tmp_path / "a" / "final.pt")
    b, _ = load_supernet(tmp_path / "b" / "final.pt")
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), key
    assert meta["command"][:3] == ["python", "-m", "supernet.train"] and "--epochs" in meta["command"]
    assert set(meta["metrics"]) >= {"largest", "smallest"}
    assert "optimizer" not in meta and "optimizer" in torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["train_config"]["epochs"] == 2


@pytest.mark.slow
def test_evolve_then_export_then_load_without_the_project(tmp_path: Path, tiny_run: Path, fake_data: Path,
                                                          fast_table: Path) -> None:
    table = load_table(fast_table)
    supernet, _ = load_supernet(tiny_run / "final.pt")
    space = supernet.space
    budget = round((table.predict(space.smallest()) + table.predict(space.largest())) / 2, 3)
    out = tmp_path / "search"
    result = run_module("search.evolve", "--latency-ms", f"{budget:.3f}", "--checkpoint", str(tiny_run / "final.pt"),
                        "--data", str(fake_data), "--table", str(fast_table), "--population", "4",
                        "--evaluations", "8", "--children", "2", "--tournament", "2", "--calibration-size", "32",
                        "--out", str(out))
    results = json.loads((out / "results.json").read_text())
    assert (out / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["evaluations"] == 8 == len(results["history"])
    assert all(r["metrics"]["latency_ms@cpu"] <= budget for r in results["history"])
    (name,) = results["winners"]
    winner = results["winners"][name]
    assert name == f"cpu:{budget:g}" and winner["budget_ms"] == budget  # the scenario is the budget asked for
    assert space.to_string(winner["arch"]) == winner["arch_string"]
    assert {"val_top1", "latency_ms@cpu", "flops", "params"} <= set(winner["metrics"])
    assert winner["meets_budget"] == (winner["measured_latency_ms"] <= budget)
    verified = winner["verified"]
    assert verified and all(v["meets_budget"] == (v["measured_latency_ms"] <= budget) for v in verified)
    assert not any(v["meets_budget"] for v in verified[:-1])  # timing stops at the first to meet the budget
    won = next((v for v in verified if v["meets_budget"]), verified[0])  # it wins; if none does, the best one
    assert winner["arch_string"] == won["arch_string"] and winner["meets_budget"] == won["meets_budget"]
    assert result.stdout.count("verify ") == len(verified) and "measured" in result.stdout
    front = [r for r in results["history"] if r["arch_string"] in results["pareto_front"]]
    assert front and all(not any(o["metrics"]["val_top1"] > f["metrics"]["val_top1"]
                                 and o["metrics"]["latency_ms@cpu"] < f["metrics"]["latency_ms@cpu"]
                                 for o in results["history"]) for f in front)
    assert results["config"]["scenarios"][0]["latency_ms"] == pytest.approx(budget, abs=1e-3)

    exported = tmp_path / "winner.pt"
    run_module("search.export", "--results", str(out / "results.json"), "--checkpoint", str(tiny_run / "final.pt"),
               "--data", str(fake_data), "--calibration-size", "32", "--out", str(exported))
    metadata = read_metadata(exported)
    assert metadata["arch"] == winner["arch_string"] and metadata["val_top1"] == winner["metrics"]["val_top1"]
    assert metadata["latency"]["latency_ms"] == winner["measured_latency_ms"]  # the search's own measurement
    assert metadata["latency"]["fingerprint"] == table.fingerprint and metadata["scenario"] == name

    # With --calibration-size 0 the export keeps the supernet's own batch-norm statistics, so a process that
    # cannot import this project must get exactly the supernet's logits for that architecture.
    plain = tmp_path / "plain.pt"
    run_module("search.export", "--arch", winner["arch_string"], "--checkpoint", str(tiny_run / "final.pt"),
               "--data", str(fake_data), "--calibration-size", "0", "--table", str(fast_table), "--out", str(plain))
    x = torch.rand(5, 1, 28, 28)
    supernet.set_active(winner["arch"])
    with torch.no_grad():
        expected = supernet.eval()(x)
    # 1e-4: freezing folds batch norm into the convolutions, which reorders the sums
    torch.testing.assert_close(logits_without_the_project(plain, x, tmp_path), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("args, message", [
    (["search.evolve", "--latency-ms", "-1"], "argument --latency-ms: must be a number above 0"),
    (["search.bo", "--scenarios", "cpu:fast", "--checkpoint", "CKPT"], "scenario 'cpu:fast' is not DEVICE:BUDGET_MS"),
    (["search.evolve", "--scenarios", "tpu:5", "--checkpoint", "CKPT"], "unknown device 'tpu'"),
    (["search.evolve", "--latency-ms", "10", "--max-flops", "0"], "argument --max-flops: must be a number above 0"),
    (["search.export", "--results", "RESULTS", "--scenario", "cpu:1"], "has no scenario 'cpu:1'"),
    (["search.evolve", "--latency-ms", "10", "--checkpoint", "/nonexistent.pt"], "checkpoint /nonexistent.pt does not exist"),
    (["search.export", "--arch", "k3e3|bad", "--checkpoint", "CKPT"], "architecture string"),
    (["supernet.train", "--epochs", "0"], "argument --epochs: must be an integer from 1"),
    (["search.evolve", "--latency-ms", "10", "--checkpoint", "CORRUPT"], "corrupt, truncated or not a supernet"),
    (["search.evolve", "--latency-ms", "0.01", "--checkpoint", "CKPT", "--table", "TABLE"],
     "the budget is below the lowest latency the table predicts for any subnet"),
])
@pytest.mark.slow
def test_bad_input_gets_one_line_and_exit_2(tmp_path: Path, tiny_run: Path, fast_table: Path, args: list,
                                            message: str) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((tiny_run / "final.pt").read_bytes()[:5000])
    results = tmp_path / "results.json"
    winner = {"arch": {}, "arch_string": "a", "generation": 0, "metrics": {"val_top1": 0.5, "latency_ms@cpu": 5.0},
              "predicted_latency_ms": 5.0, "measured_latency_ms": 5.0, "meets_budget": True, "budget_ms": 10.0,
              "device": "cpu"}
    results.write_text(json.dumps({"scenarios": [{"name": "cpu:10", "device": "cpu", "latency_ms": 10.0}],
                                   "winners": {"cpu:10": winner}, "history": [], "pareto_front": [],
                                   "latency_metric": "latency_ms@cpu"}))
    args = [str(tiny_run / "final.pt") if a == "CKPT" else str(corrupt) if a == "CORRUPT" else
            str(results) if a == "RESULTS" else str(fast_table) if a == "TABLE" else a for a in args]
    result = run_module(*args, check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.slow
def test_bo_serves_several_scenarios_and_a_rerun_resumes(tmp_path: Path, tiny_run: Path, fake_data: Path,
                                                         fast_table: Path) -> None:
    table = load_table(fast_table)
    space = load_supernet(tiny_run / "final.pt")[0].space
    low, high = table.predict(space.smallest()), table.predict(space.largest())
    budgets = [low + (high - low) * f for f in (0.3, 0.7)]
    max_params = 1.2e6
    args = ["search.bo", "--scenarios", ",".join(f"cpu:{b:.3f}" for b in budgets), "--evaluations", "4",
            "--initial", "2", "--pool", "20", "--max-params", str(max_params), "--checkpoint", str(tiny_run / "final.pt"),
            "--data", str(fake_data), "--table", str(fast_table), "--calibration-size", "32", "--verify", "2",
            "--out", str(tmp_path / "bo")]
    run_module(*args)
    results = json.loads((tmp_path / "bo" / "results.json").read_text())
    assert [s["name"] for s in results["scenarios"]] == list(results["winners"]) and len(results["winners"]) == 2
    for scenario in results["scenarios"]:
        winner = results["winners"][scenario["name"]]
        assert winner["metrics"]["latency_ms@cpu"] <= scenario["latency_ms"] and winner["metrics"]["params"] <= max_params
    assert all(r["metrics"]["params"] <= max_params for r in results["history"])
    assert 4 <= results["evaluations"] <= 8  # the second scenario may reuse the first's evaluations
    journal = tmp_path / "bo" / "journal.json"
    stamp = journal.stat().st_mtime_ns
    assert json.loads(journal.read_text())["measurements"]  # the winners' timings are journalled too
    run_module(*args)  # everything is in the journal: replayed, nothing evaluated or timed, the same result
    again = json.loads((tmp_path / "bo" / "results.json").read_text())
    assert journal.stat().st_mtime_ns == stamp
    assert again["history"] == results["history"]
    assert {k: w["arch_string"] for k, w in again["winners"].items()} == {k: w["arch_string"] for k, w in results["winners"].items()}
    clash = run_module(*args[:-1], str(tmp_path / "bo"), "--seed", "9", check=False)
    assert clash.returncode == 2 and "belongs to a different search (seed differs)" in clash.stderr
