"""SIGKILL at a random moment, then resume: training, a search and a latency-table build, as real processes.

Each test kills a real ``python -m`` process at a random point of its progress (a random step, then a random
fraction of a second: mid-step or mid-write), resumes it, and compares with an uninterrupted run. Each run draws new delays; a failing run prints its seed,
and ``RELIABILITY_SEED=N pytest tests/reliability`` replays it.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from search.latency import expected_keys, load_table, partial_path
from supernet.checkpoint import load_checkpoint, load_supernet
from supernet.space import get_space
from tests.conftest import ROOT, run_module


def start(args: list[str], log: Path) -> subprocess.Popen:
    """``python -m ARGS`` in the background, stdout and stderr to ``log``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=handle,
                                stderr=subprocess.STDOUT)


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], delay: float, timeout: float = 300) -> None:
    """SIGKILL ``process`` ``delay`` seconds after ``ready()`` holds; fail if it finished first."""
    deadline = time.time() + timeout
    while not ready():
        assert process.poll() is None, f"the process ended (exit {process.returncode}) before it was ready"
        assert time.time() < deadline, f"not ready within {timeout} s"
        time.sleep(0.02)
    time.sleep(delay)
    assert process.poll() is None, "the process finished before the kill: lengthen the run"
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL


def progress(log: Path, total: int) -> int:
    """The last count a progress bar over ``total`` items showed in ``log`` (0 before it shows one)."""
    found = re.findall(rf"(\d+)/{total} \[", log.read_text()) if log.exists() else []
    return int(found[-1]) if found else 0


def kill_at(process: subprocess.Popen, log: Path, total: int, target: int, rng: random.Random,
            also: Callable[[], bool] = lambda: True) -> None:
    """SIGKILL ``process`` a random fraction of a second after its bar reached ``target`` of ``total``."""
    kill_when(process, lambda: progress(log, total) >= target and also(), rng.uniform(0.0, 0.2))


@pytest.fixture
def rng() -> random.Random:
    """Where to kill: a fresh seed per run unless ``RELIABILITY_SEED`` is set; printed, so a failure can be replayed."""
    seed = int(os.environ.get("RELIABILITY_SEED") or random.SystemRandom().randrange(10**6))
    print(f"kill delays drawn with RELIABILITY_SEED={seed}")
    return random.Random(seed)


def leftovers(folder: Path) -> list[str]:
    """Temporary files of interrupted atomic writes still lying in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.slow
def test_training_killed_twice_resumes_bit_identically(tmp_path: Path, fake_data: Path, rng: random.Random) -> None:
    args = ["supernet.train", "--data", str(fake_data), "--epochs", "3", "--batch-size", "64", "--val-size", "64",
            "--calib-size", "32", "--warmup-steps", "1", "--checkpoint-every", "1"]
    reference = tmp_path / "reference"
    run_module(*args, "--out", str(reference))
    out, last = tmp_path / "killed", tmp_path / "killed" / "last.pt"
    step = 0
    for attempt, resume in enumerate(([], ["--resume"])):
        log = tmp_path / f"run{attempt}.log"
        # at least two steps in: this process has written a checkpoint of its own
        kill_at(start([*args, "--out", str(out), *resume], log), log, 12, rng.randint(step + 2, step + 5), rng)
        state = load_checkpoint(last)  # never half-written, whenever the kill came
        step = state["progress"]["step"]
        # the bar moves just before a step's checkpoint is written: at most that one step is lost
        assert step >= progress(log, 12) - 1
    run_module("supernet.train", "--resume", "--out", str(out))
    a, meta = load_supernet(reference / "final.pt")
    b, resumed = load_supernet(out / "final.pt")
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), key
    assert resumed["metrics"]["largest"] == meta["metrics"]["largest"]
    assert leftovers(out) == []


@pytest.mark.slow
def test_search_killed_then_rerun_finds_what_an_uninterrupted_search_finds(tmp_path: Path, tiny_run: Path,
                                                                          fake_data: Path, fast_table: Path,
                                                                          rng: random.Random) -> None:
    args = ["search.evolve", "--latency-ms", "1000", "--checkpoint", str(tiny_run / "final.pt"), "--data",
            str(fake_data), "--table", str(fast_table), "--population", "4", "--children", "2", "--tournament", "2",
            "--evaluations", "24", "--calibration-size", "32", "--verify", "2"]
    run_module(*args, "--out", str(tmp_path / "reference"))
    out = tmp_path / "killed"
    journal = out / "journal.json"
    log = tmp_path / "killed.log"
    kill_at(start([*args, "--out", str(out)], log), log, 24, rng.randint(2, 16), rng, also=journal.exists)
    kept = json.loads(journal.read_text())  # never half-written
    assert not (out / "results.json").exists() and kept["entries"]
    rerun = run_module(*args, "--out", str(out))
    assert f"resuming {journal}: {len(kept['entries'])} evaluations" in rerun.stderr
    expected = json.loads((tmp_path / "reference" / "results.json").read_text())
    found = json.loads((out / "results.json").read_text())
    assert found["history"] == expected["history"] and found["pareto_front"] == expected["pareto_front"]
    assert {k: w["arch_string"] for k, w in found["winners"].items()} == \
        {k: w["arch_string"] for k, w in expected["winners"].items()}
    # evaluations the killed run journalled are replayed, not redone: the rerun keeps their exact metrics
    final = json.loads(journal.read_text())
    assert all(final["entries"][key] == value for key, value in kept["entries"].items())
    assert all(final["measurements"][key] == value for key, value in kept["measurements"].items())
    assert leftovers(out) == []


@pytest.mark.slow
def test_table_build_killed_then_rerun_keeps_what_it_measured(tmp_path: Path, rng: random.Random) -> None:
    path = tmp_path / "cpu.json"
    args = ["search.latency", "build", "--warmup", "0", "--repeats", "3", "--calibration-subnets", "3",
            "--keep-busy", "--out", str(path)]
    log = tmp_path / "killed.log"
    units = len(expected_keys(get_space("mbv3").config))
    kill_at(start(args, log), log, units, rng.randint(10, units - 30), rng, also=partial_path(path).exists)
    assert not path.exists()  # the table itself is written once, complete
    partial = json.loads(partial_path(path).read_text())  # never half-written
    assert not partial["complete"] and partial["entries"]
    rerun = run_module(*args)
    table = load_table(path)
    assert f"resuming {partial_path(path)}: {len(partial['entries'])} units" in rerun.stderr
    assert table.data["complete"] and f"{units}/{units} units measured" in rerun.stdout
    for key, entry in partial["entries"].items():  # measured once, kept (only rescaled to the build's speed)
        assert table.data["entries"][key]["raw_median_ms"] == entry["raw_median_ms"], key
    assert [p["raw_median_ms"] for p in table.data["calibration"][:len(partial["calibration"])]] == \
        [p["raw_median_ms"] for p in partial["calibration"]]
    assert leftovers(tmp_path) == []
