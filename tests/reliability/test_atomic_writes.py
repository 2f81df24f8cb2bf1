"""Atomic writes under failure (issue 8): a write that runs out of disk leaves the previous file byte for byte
and says so in one line, from the command line and for every kind of file; killed writers leave no junk.

The command-line cases fill a real "disk": the process runs under ``RLIMIT_FSIZE`` with ``SIGXFSZ`` ignored,
so the kernel refuses any write past the limit with ``EFBIG``, in Python and in C++ alike, as a full disk
would. The in-process cases reach every writer (checkpoint, JSON, report, picture, TorchScript, ONNX) with a
disk that fills up partway through the file (``ENOSPC`` after a few bytes).
"""
from __future__ import annotations

import builtins
import errno
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from search.export import export, export_onnx
from search.plot import plot_search
from search.report import write_report
from supernet.checkpoint import load_supernet, save_checkpoint
from supernet.errors import UserError
from supernet.io import atomic_write, write_json
from supernet.space import get_space
from tests.conftest import ROOT

PREVIOUS = b"the previous file, which must survive\n"

# ---- a real full disk, through the command line ------------------------------------------------------
FULL_DISK = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def run_on_full_disk(limit: int, module: str, *args: Any) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` where no file can grow past ``limit`` bytes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", FULL_DISK, str(limit), module, *map(str, args)], cwd=ROOT, env=env,
                          text=True, capture_output=True, timeout=300)


def assert_refused_cleanly(result: subprocess.CompletedProcess[str], target: Path, previous: bytes) -> None:
    """Exit 2 with one ``error:`` line naming ``target``, no traceback, ``target`` unchanged, no temporary file."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()  # progress bars may come before it
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]
    assert lines[-1] == f"error: could not write {target} (File too large); the previous file is intact"
    assert target.read_bytes() == previous
    assert not [p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_training_on_a_full_disk_keeps_the_previous_checkpoint(tmp_path: Path, tiny_run: Path,
                                                               fake_data: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    previous = (tiny_run / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(previous)
    result = run_on_full_disk(len(previous) // 2, "supernet.train", "--resume", "--out", out)
    assert_refused_cleanly(result, out / "last.pt", previous)
    assert json.loads((out / "config.json").read_text())["train_config"]["epochs"] == 1  # a small file still fits


@pytest.mark.slow
def test_a_table_write_on_a_full_disk_keeps_the_previous_table(tmp_path: Path, fast_table: Path) -> None:
    space = get_space("mbv3")
    measurements = tmp_path / "measured.json"
    measurements.write_text(json.dumps([{"arch": space.to_string(space.smallest()), "latency_ms": 1.0}]))
    out = tmp_path / "table.json"
    previous = fast_table.read_bytes()
    out.write_bytes(previous)
    result = run_on_full_disk(len(previous) // 2, "search.latency", "calibrate", fast_table, measurements,
                              "--out", out, "--overwrite")
    assert_refused_cleanly(result, out, previous)


@pytest.mark.slow
def test_an_export_on_a_full_disk_keeps_the_previous_export(tmp_path: Path, tiny_run: Path, fake_data: Path,
                                                            fast_table: Path) -> None:
    space = get_space("mbv3")
    out = tmp_path / "subnet.pt"
    out.write_bytes(PREVIOUS)
    result = run_on_full_disk(64 * 1024, "search.export", "--arch", space.to_string(space.smallest()),
                              "--checkpoint", tiny_run / "final.pt", "--data", fake_data, "--calibration-size", "0",
                              "--table", fast_table, "--out", out, "--overwrite")
    assert_refused_cleanly(result, out, PREVIOUS)


# ---- every writer, on a disk that fills up partway through the file --------------------------------
class FillingDisk:
    """A file opened for writing whose writes stop with ENOSPC once ``room`` bytes (characters in text mode)
    are written; what fitted stays in the file, as on a disk that fills up."""

    def __init__(self, handle: Any, room: int):
        self.handle, self.room = handle, room

    def write(self, data: Any) -> int:
        part = data if isinstance(data, str) else memoryview(data).cast("B")
        if len(part) > self.room:
            self.handle.write(part[:self.room])
            self.handle.flush()
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(part)
        return self.handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    def __enter__(self) -> FillingDisk:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.close()


def fill_disk_for(target: Path, monkeypatch: pytest.MonkeyPatch, room: int = 64) -> list[Path]:
    """Make writes to ``target`` and to its temporary files run out of space; returns the files that did."""
    real_open, filled = builtins.open, []

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(file, mode, *args, **kwargs)
        name = Path(file).name if isinstance(file, (str, os.PathLike)) else ""
        if any(flag in mode for flag in "wax+") and (name == target.name or name.startswith(f".{target.name}.")):
            filled.append(Path(file))
            return FillingDisk(handle, room)
        return handle

    monkeypatch.setattr(builtins, "open", open_)  # what PIL, onnx and json writers call
    monkeypatch.setattr(io, "open", open_)  # what pathlib calls
    return filled


RESULTS = {  # the least of a search's results.json that its reader accepts
    "latency_metric": "latency_ms@cpu", "scenarios": [{"name": "cpu:2", "device": "cpu", "latency_ms": 2.0}],
    "history": [{"arch": {}, "arch_string": a, "generation": 0, "metrics": {"val_top1": v, "latency_ms@cpu": ms}}
                for a, v, ms in (("small", 0.5, 1.0), ("big", 0.7, 3.0))],
    "pareto_front": ["small", "big"],
    "winners": {"cpu:2": {"arch": {}, "arch_string": "small", "generation": 0,
                          "metrics": {"val_top1": 0.5, "latency_ms@cpu": 1.0}, "predicted_latency_ms": 1.0,
                          "measured_latency_ms": 1.1, "budget_ms": 2.0, "meets_budget": True, "device": "cpu"}},
}


def smallest_subnet(tiny_run: Path) -> torch.nn.Module:
    supernet = load_supernet(tiny_run / "final.pt")[0]
    return supernet.extract(supernet.space.smallest()).eval()


def write_report_beside(path: Path, tiny_run: Path) -> None:
    write_json(path.parent / "results.json", RESULTS)
    write_report(path.parent / "results.json", path)


def write_onnx(path: Path, tiny_run: Path) -> None:
    pytest.importorskip("onnxscript")
    tiny = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 26 * 26, 10))
    export_onnx(tiny, path, {"arch": "tiny"}, torch.rand(2, 1, 28, 28))  # a subnet takes 10 s longer to export


WRITERS: dict[str, Callable[[Path, Path], Any]] = {  # the file each writer writes -> how to write it
    "last.pt": lambda path, run: save_checkpoint(path, load_supernet(run / "final.pt")[0]),
    "results.json": lambda path, run: write_json(path, {"evaluations": list(range(1000))}),
    "report.md": write_report_beside,
    "search.png": lambda path, run: plot_search(RESULTS, path),
    "subnet.pt": lambda path, run: export(smallest_subnet(run), path, {"arch": "smallest"}, torch.rand(2, 1, 28, 28)),
    "subnet.onnx": write_onnx,
}


@pytest.mark.parametrize("name", WRITERS)
@pytest.mark.slow
def test_a_write_that_runs_out_of_space_keeps_the_previous_file(name: str, tmp_path: Path, tiny_run: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / name
    target.write_bytes(PREVIOUS)
    filled = fill_disk_for(target, monkeypatch)
    with pytest.raises(UserError) as refused:
        WRITERS[name](target, tiny_run)
    assert str(refused.value) == f"could not write {target} (No space left on device); the previous file is intact"
    assert filled and all(p.name.endswith(".tmp") for p in filled)  # it wrote a temporary file, never the target
    assert target.read_bytes() == PREVIOUS
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_only_failures_caused_by_the_disk_are_reported_as_such(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "results.json"
    target.write_bytes(PREVIOUS)

    def broken_writer(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("a bug in the writer")

    def wrapping_writer(tmp: Path) -> None:  # as torch.save through a Python file object reports a full disk
        tmp.write_text("half")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    with pytest.raises(RuntimeError, match="a bug in the writer"):  # a bug keeps its traceback
        atomic_write(target, broken_writer)
    with pytest.raises(UserError, match=r"\(No space left on device\); the previous file is intact$"):
        atomic_write(target, wrapping_writer)
    with pytest.raises(UserError, match=r"could not write .*new.json \(No space left on device\); no file was written"):
        atomic_write(tmp_path / "new.json", wrapping_writer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    assert target.read_bytes() == PREVIOUS

    def no_inode_left(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", no_inode_left)  # not even the temporary file can be made
    with pytest.raises(UserError, match=r"\(No space left on device\); the previous file is intact$"):
        write_json(target, {})
    assert target.read_bytes() == PREVIOUS


# ---- temporary files of killed writers ----------------------------------------------------------------
KILLED_WRITER = """
import sys, time
from supernet.io import atomic_write
atomic_write(sys.argv[1], lambda tmp: (tmp.write_text("half a file"), print("writing", flush=True), time.sleep(60)))
"""


def test_a_write_removes_the_temporary_files_killed_writers_of_the_same_file_left(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], env=env, text=True,
                              stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
    finally:
        writer.kill()  # SIGKILL: no handler runs, the temporary file stays
        writer.wait()
    (left,) = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert left.name.startswith(f".results.json.{writer.pid}.")
    kept = [f".results.json.{os.getppid()}.abcd1234.tmp",  # a writer still running elsewhere
            f".results.json.{os.getpid()}.abcd1234.tmp",  # a writer in another thread of this process
            f".results.json.old.{writer.pid}.abcd1234.tmp",  # a dead writer of another file
            ".results.json.tmp", "results.json.tmp", ".other.json.1.x.tmp", "notes.txt"]
    for name in kept:
        (tmp_path / name).write_text("not ours to remove")

    write_json(target, {"complete": True})

    assert not left.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["results.json"])
    assert json.loads(target.read_text()) == {"complete": True}
