"""The whole job through ``python -m``: train, build a table, evolve, export, load in a clean process."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from search.export import read_metadata
from search.latency import load_table
from supernet.checkpoint import load_supernet
from tests.conftest import run_module

CLEAN_LOAD = """
import sys
sys.modules["supernet"] = None  # this project must not be importable here
sys.modules["search"] = None
import torch
model = torch.jit.load(sys.argv[1])
x = torch.load(sys.argv[2])
torch.save(model(x), sys.argv[3])
"""


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


def test_evolve_then_export_then_load_without_the_project(tmp_path: Path, tiny_run: Path, fake_data: Path,
                                                          fast_table: Path) -> None:
    table = load_table(fast_table)
    supernet, _ = load_supernet(tiny_run / "final.pt")
    space = supernet.space
    budget = (table.predict(space.smallest()) + table.predict(space.largest())) / 2
    out = tmp_path / "search"
    result = run_module("search.evolve", "--latency-ms", f"{budget:.3f}", "--checkpoint", str(tiny_run / "final.pt"),
                        "--data", str(fake_data), "--table", str(fast_table), "--population", "4",
                        "--generations", "2", "--children", "2", "--tournament", "2", "--calibration-size", "32",
                        "--out", str(out))
    assert "winner" in result.stdout and "measured" in result.stdout
    results = json.loads((out / "results.json").read_text())
    assert (out / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["evaluations"] == 8 == len(results["history"])
    assert all(r["metrics"]["predicted_latency_ms"] <= budget for r in results["history"])
    winner = results["winner"]
    assert space.to_string(winner["arch"]) == winner["arch_string"]
    assert {"val_top1", "predicted_latency_ms", "measured_latency_ms"} <= set(winner["metrics"])
    assert winner["meets_budget"] == (winner["metrics"]["measured_latency_ms"] <= budget)
    verified = results["verified"]
    assert verified and all(v["meets_budget"] == (v["measured_latency_ms"] <= budget) for v in verified)
    assert not any(v["meets_budget"] for v in verified[:-1])  # the first to meet it when measured wins
    assert result.stdout.count("verify   predicted") == len(verified)
    assert results["config"]["latency_ms"] == pytest.approx(budget, abs=1e-3)

    exported = tmp_path / "winner.pt"
    run_module("search.export", "--results", str(out / "results.json"), "--checkpoint", str(tiny_run / "final.pt"),
               "--data", str(fake_data), "--calibration-size", "32", "--out", str(exported))
    metadata = read_metadata(exported)
    assert metadata["arch"] == winner["arch_string"]

    # With --calibration-size 0 the export keeps the supernet's own batch-norm statistics, so a process that
    # cannot import this project must get exactly the supernet's logits for that architecture.
    plain = tmp_path / "plain.pt"
    run_module("search.export", "--arch", winner["arch_string"], "--checkpoint", str(tiny_run / "final.pt"),
               "--data", str(fake_data), "--calibration-size", "0", "--out", str(plain))
    x = torch.rand(5, 1, 28, 28)
    torch.save(x, tmp_path / "x.pt")
    subprocess.run([sys.executable, "-c", CLEAN_LOAD, str(plain), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                   check=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    supernet.set_active(winner["arch"])
    with torch.no_grad():
        expected = supernet.eval()(x)
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["search.evolve", "--latency-ms", "-1"], "--latency-ms must be a positive"),
    (["search.evolve", "--latency-ms", "10", "--checkpoint", "/nonexistent.pt"], "checkpoint /nonexistent.pt does not exist"),
    (["search.export", "--arch", "k3e3|bad", "--checkpoint", "CKPT"], "architecture string"),
    (["supernet.train", "--epochs", "0"], "--epochs must be positive"),
    (["search.evolve", "--latency-ms", "10", "--checkpoint", "CORRUPT"], "corrupt, truncated or not a supernet"),
])
def test_bad_input_gets_one_line_and_exit_2(tmp_path: Path, tiny_run: Path, args: list, message: str) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((tiny_run / "final.pt").read_bytes()[:5000])
    args = [str(tiny_run / "final.pt") if a == "CKPT" else str(corrupt) if a == "CORRUPT" else a for a in args]
    result = run_module(*args, check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
