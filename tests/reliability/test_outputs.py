"""Nothing lost to a rerun, a second process or a special file given as ``--out`` (issue 15, points 1 to 4).

Every command that writes claims its output first (:mod:`supernet.outdir`): a folder holding a run or an
existing file is refused unless the command resumes it or ``--overwrite``; a second process on the same output
is refused, naming the PID that holds it, while a lock left by a killed process does not block; a FIFO or a
device is never replaced by a regular file. A latency-table build keeps its partial state beside the target.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from search.latency import build_table, expected_keys, load_table, partial_path
from search.timing import TimingSettings
from supernet.checkpoint import load_checkpoint
from supernet.errors import UserError
from supernet.io import atomic_write, with_checksum
from supernet.outdir import claim_file, claim_folder, lock_path
from supernet.space import get_space
from tests.conftest import ROOT, run_module
from tests.reliability.test_crash_resume import kill_at, leftovers, rng, start  # noqa: F401 (rng: a fixture)

TRAIN = ["--epochs", "1", "--batch-size", "64", "--val-size", "64", "--calib-size", "32", "--warmup-steps", "1"]


def refused(result: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """Exit 2 with one ``error:`` line holding every phrase, no traceback; the line."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---- 1. a rerun over an existing run or file ---------------------------------------------------------
@pytest.mark.slow
def test_a_training_rerun_without_resume_is_refused_and_overwrite_starts_over(tmp_path: Path, tiny_run: Path,
                                                                              fake_data: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    before = snapshot(out)
    args = ["supernet.train", "--data", str(fake_data), "--out", str(out), *TRAIN, "--stop-after", "1"]
    refused(run_module(*args, check=False), f"--out {out} already holds a training run (last.pt, final.pt",
            "--resume", "--overwrite")
    assert snapshot(out) == before  # the finished run is untouched: its last.pt is not step 1 of a new one
    refused(run_module(*args, "--resume", "--overwrite", check=False), "exclude each other")
    run_module(*args, "--overwrite")
    assert load_checkpoint(out / "last.pt")["progress"]["step"] == 1
    assert not (out / "final.pt").exists() and not (out / "metrics.json").exists()  # no mix of two runs
    refused(run_module(*args, check=False), "already holds a training run (last.pt)")
    assert not lock_path(out, folder=True).exists()


def make_file(path: Path, text: str = "someone else's file\n") -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path.read_bytes()


@pytest.mark.parametrize("cli", ["retrain", "evolve", "ensemble", "validate"])
@pytest.mark.slow
def test_every_folder_cli_refuses_an_out_holding_another_run(cli: str, tmp_path: Path, tiny_run: Path,
                                                             fake_data: Path, fast_table: Path) -> None:
    out = tmp_path / "out"
    arch = get_space("mbv3").to_string(get_space("mbv3").smallest())
    runs = {  # the CLI, the file of an earlier run in its --out, and the phrase of its refusal
        "retrain": (["search.retrain", "--arch", arch, "--checkpoint", str(tiny_run / "final.pt"), "--data",
                     str(fake_data), "--epochs", "1", "--subset", "64", "--batch-size", "64"], "model.pt",
                    "already holds a retraining run (model.pt); pass --resume"),
        "evolve": (["search.evolve", "--latency-ms", "1000", "--checkpoint", str(tiny_run / "final.pt"), "--data",
                    str(fake_data), "--table", str(fast_table), "--evaluations", "2", "--algorithm", "random"],
                   "results.json", "already holds a search (results.json); pass --overwrite"),
        "ensemble": (["search.ensemble", str(tmp_path / "results.json"), "--latency-ms", "100"], "ensemble.json",
                     "already holds an ensemble (ensemble.json); pass --overwrite"),
        "validate": (["search.latency", "validate", "--table", str(fast_table), "--subnets", "2"], "validation.json",
                     "holds a validation of another table or --seed"),
    }
    args, name, phrase = runs[cli]
    other = {"key": "another validation", "subnets": []}  # a validation of another table, as validate writes one
    before = make_file(out / name, json.dumps(with_checksum(other) if cli == "validate" else other))
    refused(run_module(*args, "--out", str(out), check=False), str(out), phrase, "--overwrite")
    assert snapshot(out) == {name: before}


@pytest.mark.parametrize("cli", ["export", "report", "build", "calibrate"])
@pytest.mark.slow
def test_every_file_cli_refuses_an_existing_file_it_did_not_write(cli: str, tmp_path: Path, tiny_run: Path,
                                                                  fake_data: Path, fast_table: Path) -> None:
    arch = get_space("mbv3").to_string(get_space("mbv3").smallest())
    out = tmp_path / "out.file"
    commands = {
        "export": ["search.export", "--arch", arch, "--checkpoint", str(tiny_run / "final.pt"), "--data",
                   str(fake_data), "--calibration-size", "0", "--table", str(fast_table)],
        "report": ["search.report", str(tmp_path / "results.json")],
        "build": ["search.latency", "build", "--warmup", "0", "--repeats", "1", "--calibration-subnets", "2",
                  "--keep-busy"],
        "calibrate": ["search.latency", "calibrate", str(fast_table), str(tmp_path / "measured.json")],
    }
    before = make_file(out)
    refused(run_module(*commands[cli], "--out", str(out), check=False), f"{out} already exists", "--overwrite")
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["out.file"]


@pytest.mark.slow
def test_a_report_rewrites_its_own_report_of_the_same_results_only(tmp_path: Path, tiny_run: Path,
                                                                   fake_data: Path, fast_table: Path) -> None:
    out = tmp_path / "search"
    searched = run_module("search.evolve", "--latency-ms", "1000", "--checkpoint", str(tiny_run / "final.pt"),
                          "--data", str(fake_data), "--table", str(fast_table), "--evaluations", "2", "--algorithm",
                          "random", "--calibration-size", "32", "--verify", "1", "--out", str(out))
    assert "note: scenario cpu:1000: every subnet meets the budget on this machine" in searched.stderr
    report = out / "report.md"
    run_module("search.report", str(out / "results.json"))
    run_module("search.report", str(out / "results.json"))  # its own report of these results: rewritten
    other = tmp_path / "other" / "results.json"
    other.parent.mkdir()
    shutil.copy(out / "results.json", other)
    assert str((out / "results.json").resolve()) in report.read_text().splitlines()[0]
    refused(run_module("search.report", str(other), "--out", str(report), check=False), f"{report} already exists")


# ---- 2. two processes on one output ------------------------------------------------------------------
HOLD = """
import sys, time
from supernet.outdir import claim_folder
with claim_folder(sys.argv[1], what="test", run_files=()):
    print("claimed", flush=True)
    time.sleep(120)
"""


def test_a_second_process_is_refused_naming_the_pid_and_a_killed_holder_does_not_block(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "claimed\n"
        with pytest.raises(UserError, match=rf"{out} is in use by another process \(PID {holder.pid} holds "):
            with claim_folder(out, what="test", run_files=()):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert lock_path(out, folder=True).read_text() == f"{holder.pid}\n"  # left behind by the killed holder...
    with claim_folder(out, what="test", run_files=()):  # ... and no obstacle: the kernel dropped its lock
        assert lock_path(out, folder=True).read_text() == f"{os.getpid()}\n"
    assert not lock_path(out, folder=True).exists()


@pytest.mark.parametrize("cli", ["train", "evolve", "export"])
@pytest.mark.slow
def test_a_command_on_an_output_another_process_holds_is_refused(cli: str, tmp_path: Path, tiny_run: Path,
                                                                 fake_data: Path, fast_table: Path) -> None:
    out = tmp_path / ("subnet.pt" if cli == "export" else "out")
    commands = {
        "train": ["supernet.train", "--data", str(fake_data), *TRAIN],
        "evolve": ["search.evolve", "--latency-ms", "1000", "--checkpoint", str(tiny_run / "final.pt"), "--data",
                   str(fake_data), "--table", str(fast_table), "--evaluations", "2", "--algorithm", "random"],
        "export": ["search.export", "--arch", get_space("mbv3").to_string(get_space("mbv3").smallest()),
                   "--checkpoint", str(tiny_run / "final.pt"), "--calibration-size", "0", "--table", str(fast_table)],
    }
    claim = (lambda: claim_file(out, what="export")) if cli == "export" else \
        (lambda: claim_folder(out, what="test", run_files=()))
    written = {"train": out / "last.pt", "evolve": out / "journal.json", "export": out}[cli]
    with claim():  # this test process is the first run, still running, and has written its first file
        before = make_file(written)
        refused(run_module(*commands[cli], "--out", str(out), check=False),
                f"{out} is in use by another process (PID {os.getpid()} holds")
    assert written.read_bytes() == before
    assert not lock_path(out, folder=cli != "export").exists()


@pytest.mark.slow
def test_under_torchrun_only_rank_0_claims_and_every_rank_refuses(tmp_path: Path, fake_data: Path) -> None:
    out = tmp_path / "out"
    with claim_folder(out, what="test", run_files=()):
        result = run_module("torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "supernet.train",
                            "--data", str(fake_data), *TRAIN, "--out", str(out), check=False)
    assert result.returncode != 0 and "supernet/" not in result.stderr, "a traceback through this project"
    assert result.stderr.count(f"error: {out} is in use by another process (PID {os.getpid()} holds") == 2


# ---- 3. a latency-table build over an existing table -------------------------------------------------
@pytest.mark.slow
def test_a_killed_table_build_leaves_the_complete_table_and_resumes_beside_it(tmp_path: Path, fast_table: Path,
                                                                              rng: random.Random) -> None:
    target = tmp_path / "cpu.json"
    shutil.copy(fast_table, target)
    previous = target.read_bytes()  # complete, of other settings (repeats 1, 3 calibration subnets)
    args = ["search.latency", "build", "--warmup", "0", "--repeats", "2", "--calibration-subnets", "2",
            "--keep-busy", "--out", str(target)]
    refused(run_module(*args, check=False), f"{target} already exists", "--overwrite")
    log = tmp_path / "killed.log"
    units = len(expected_keys(get_space("mbv3").config))
    partial = partial_path(target)
    kill_at(start([*args, "--overwrite"], log), log, units, rng.randint(10, 40), rng, also=partial.exists)
    assert target.read_bytes() == previous  # not a 10-unit partial: the complete table is kept
    kept = json.loads(partial.read_text())
    assert not kept["complete"] and kept["entries"]
    rerun = run_module(*args, "--overwrite")
    assert f"resuming {partial}: {len(kept['entries'])} units" in rerun.stderr
    table = load_table(target)
    assert table.data["complete"] and table.data["settings"]["repeats"] == 2 and not partial.exists()
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["cpu.json", "killed.log"]


def test_a_partial_build_of_other_settings_is_refused(tmp_path: Path, fast_table: Path) -> None:
    target = tmp_path / "cpu.json"
    partial = partial_path(target)
    data = json.loads(fast_table.read_text())
    partial.write_text(json.dumps({**data, "complete": False, "correction": None}))  # repeats 1, not 2
    with pytest.raises(UserError, match="is a partial build of .* with other settings"):
        build_table(get_space("mbv3").config, torch.device("cpu"), settings=TimingSettings(warmup=0, repeats=2),
                    calibration_subnets=3, out=target, progress=False, keep_busy=True)
    assert json.loads(partial.read_text())["entries"] == data["entries"] and not target.exists()


# ---- 4. a special file as the output -------------------------------------------------------------------
def test_the_atomic_writer_never_replaces_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match=f"{fifo} is a FIFO, not a regular file or a folder"):
        atomic_write(fifo, lambda tmp: tmp.write_text("data"))
    assert fifo.is_fifo() and leftovers(tmp_path) == []


@pytest.mark.parametrize("cli", ["train", "export", "report", "build"])
@pytest.mark.slow
def test_a_fifo_as_out_is_refused_in_one_line(cli: str, tmp_path: Path, tiny_run: Path, fake_data: Path,
                                              fast_table: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    commands = {
        "train": ["supernet.train", "--data", str(fake_data), *TRAIN],
        "export": ["search.export", "--arch", get_space("mbv3").to_string(get_space("mbv3").smallest()),
                   "--checkpoint", str(tiny_run / "final.pt"), "--calibration-size", "0", "--table", str(fast_table),
                   "--overwrite"],
        "report": ["search.report", str(tmp_path / "results.json"), "--overwrite"],
        "build": ["search.latency", "build", "--warmup", "0", "--repeats", "1", "--overwrite", "--keep-busy"],
    }
    refused(run_module(*commands[cli], "--out", str(fifo), check=False), f"{fifo} is a FIFO")
    assert fifo.is_fifo()
