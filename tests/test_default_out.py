"""Default output folders are named by what tells runs apart, so the obvious second command works (issue 20.5)."""
import json
from pathlib import Path

import pytest

from search.bo import parse_args as bo_args
from search.dnas import parse_args as dnas_args
from search.evolve import parse_args as evolve_args
from search.latency import load_table
from supernet.checkpoint import load_supernet
from supernet.outdir import budget_label, run_folder
from tests.conftest import run_module


def test_folder_names() -> None:
    assert run_folder("runs/x", "mbv3-cpu-10ms", 0, {"a": 1}, {"a": 1}) == "runs/x/mbv3-cpu-10ms-seed0"
    changed = run_folder("runs/x", "mbv3-cpu-10ms", 0, {"a": 2}, {"a": 1})
    assert changed.startswith("runs/x/mbv3-cpu-10ms-seed0-") and len(changed.rsplit("-", 1)[1]) == 6
    assert changed == run_folder("runs/x", "mbv3-cpu-10ms", 0, {"a": 2}, {"a": 1})  # the same run, the same folder
    assert changed != run_folder("runs/x", "mbv3-cpu-10ms", 0, {"a": 3}, {"a": 1})
    assert budget_label([("cpu", 10.0)]) == "cpu-10ms"
    assert budget_label([("cpu", 9.5), ("cuda:0", 2.0)]) == "cpu-9.5ms_cuda0-2ms"
    assert budget_label([("cpu", float(b)) for b in range(5, 26)]) == "cpu-5ms-to-cpu-25ms-21budgets"


@pytest.mark.parametrize("argv, folder", [
    (["--latency-ms", "10"], "runs/evolve/mbv3-cpu-10ms-seed0"),
    (["--latency-ms", "12", "--seed", "3"], "runs/evolve/mbv3-cpu-12ms-seed3"),
    (["--scenarios", "cpu:9,cpu:10,cpu:12"], "runs/evolve/mbv3-cpu-9ms_cpu-10ms_cpu-12ms-seed0"),
    (["--latency-ms", "10", "--algorithm", "nsga2"], "runs/evolve/mbv3-cpu-10ms-nsga2-seed0"),
    # the defaults (guided: the shipped checkpoint has a predictor)
    (["--latency-ms", "10", "--evaluations", "300", "--verify", "2"], "runs/evolve/mbv3-cpu-10ms-seed0"),
    (["--latency-ms", "10", "--out", "mine"], "mine"),
])
def test_evolve_default_folders(argv: list[str], folder: str) -> None:
    assert evolve_args(argv)[0].out == folder


def test_other_settings_add_a_hash_and_each_command_its_own_base() -> None:
    more = evolve_args(["--latency-ms", "10", "--evaluations", "20"])[0].out
    assert more.startswith("runs/evolve/mbv3-cpu-10ms-seed0-") and more != "runs/evolve/mbv3-cpu-10ms-seed0"
    assert bo_args(["--latency-ms", "9.5"])[0].out == "runs/bo/mbv3-cpu-9.5ms-seed0"
    assert dnas_args(["--latency-ms", "3"])[0].out == "runs/dnas/nb201-cpu-beta-darts-cpu-3ms-seed0"
    assert dnas_args(["--latency-ms", "3", "--method", "gdas", "--seed", "2"])[0].out == "runs/dnas/nb201-cpu-gdas-cpu-3ms-seed2"
    assert dnas_args(["--latency-ms", "3", "--stop-after", "5"])[0].out == "runs/dnas/nb201-cpu-beta-darts-cpu-3ms-seed0"
    assert dnas_args(["--latency-ms", "3", "--epochs", "2"])[0].out.startswith("runs/dnas/nb201-cpu-beta-darts-cpu-3ms-seed0-")


@pytest.mark.slow
def test_a_second_budget_or_seed_just_works(tmp_path: Path, tiny_run: Path, fake_data: Path, fast_table: Path) -> None:
    """The issue's trap: a new budget with the default --out used to meet "journal belongs to a different
    search". Now each run has its own default folder, the same command resumes its own, and an explicit
    --out of another search is still refused."""
    table, space = load_table(fast_table), load_supernet(tiny_run / "final.pt")[0].space
    budget = round((table.predict(space.smallest()) + table.predict(space.largest())) / 2, 2)
    common = ["--checkpoint", str(tiny_run / "final.pt"), "--data", str(fake_data), "--table", str(fast_table),
              "--population", "2", "--evaluations", "2", "--children", "1", "--tournament", "2",
              "--calibration-size", "16", "--verify", "1"]
    runs = tmp_path / "runs" / "evolve"
    first = run_module("search.evolve", "--latency-ms", f"{budget:g}", *common, cwd=tmp_path)
    second = run_module("search.evolve", "--latency-ms", f"{budget + 1:g}", *common, cwd=tmp_path)
    third = run_module("search.evolve", "--latency-ms", f"{budget:g}", "--seed", "1", *common, cwd=tmp_path)
    folders = sorted(p.name for p in runs.iterdir())
    assert len(folders) == 3 and all(name.startswith("mbv3-cpu-") for name in folders)
    for result in (first, second, third):
        written = result.stdout.strip().splitlines()[-1]
        assert written.startswith(f"wrote runs/evolve/mbv3-cpu-") and written.endswith("/search.png")
    again = run_module("search.evolve", "--latency-ms", f"{budget:g}", *common, cwd=tmp_path)
    assert "resuming" in again.stderr and sorted(p.name for p in runs.iterdir()) == folders
    mine = [p for p in runs.iterdir() if f"-{budget:g}ms-seed0" in p.name][0]
    assert json.loads((mine / "results.json").read_text())["scenarios"][0]["latency_ms"] == budget
    clash = run_module("search.evolve", "--latency-ms", f"{budget + 2:g}", *common, "--out", str(mine),
                       cwd=tmp_path, check=False)
    assert clash.returncode == 2 and "belongs to a different search" in clash.stderr
