"""Torch threads fitted to the machine's load (supernet.cpuload; issue 18.5)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import supernet.cpuload as cpuload
from supernet.cpuload import AdaptiveThreads, free_threads, other_load


def test_free_threads_leave_the_neighbours_cores() -> None:
    assert free_threads(2, 0.0) == 2 and free_threads(2, 0.2) == 2  # noise is not a neighbour
    assert free_threads(2, 1.0) == 1 and free_threads(2, 1.9) == 1 and free_threads(2, 5.0) == 1  # at least one
    assert free_threads(16, 3.1) == 13 and free_threads(4, None) == 4  # unknown load: every core


def test_other_load_is_busy_ticks_less_this_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over a window, all CPUs' busy ticks minus this process's CPU seconds, per wall second."""
    ticks = iter([0, 2 * cpuload.os.sysconf("SC_CLK_TCK")])  # 2 CPU-seconds busy in all
    own = iter([10.0, 10.5])  # of which this process 0.5
    monkeypatch.setattr(cpuload, "_busy_ticks", lambda: next(ticks))
    monkeypatch.setattr(cpuload, "_own_seconds", lambda: next(own))
    clock = iter([100.0, 101.0])
    monkeypatch.setattr(cpuload.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(cpuload.time, "sleep", lambda s: None)
    assert other_load(1.0) == pytest.approx(1.5)
    monkeypatch.undo()  # the real clocks again; no /proc/stat (as off Linux): no figure
    monkeypatch.setattr(cpuload, "PROC_STAT", tmp_path / "missing")
    assert other_load(0.0) is None


def test_adaptive_threads_follow_the_load_and_respect_a_fixed_count(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    previous = torch.get_num_threads()
    loads = iter([1.3, 0.1])
    monkeypatch.setattr(cpuload, "other_load", lambda window: next(loads))
    try:
        torch.set_num_threads(2)  # as torch starts on two cores (fixtures may have set one)
        threads = AdaptiveThreads(every=0.0, cores=2, enabled=True)
        assert threads.update() == 1 == torch.get_num_threads()
        assert "other processes keep 1.3 of 2 cores busy: evaluating with 1 torch thread" in capsys.readouterr().err
        assert threads.update() == 2 == torch.get_num_threads() and [h[2] for h in threads.history] == [1, 2]
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        fixed = AdaptiveThreads(every=0.0, cores=2)
        assert not fixed.enabled and fixed.update() == torch.get_num_threads() and fixed.history == []
        rare = AdaptiveThreads(every=3600.0, cores=2, enabled=True)
        monkeypatch.setattr(cpuload, "other_load", lambda window: 1.5)
        rare.update()
        monkeypatch.setattr(cpuload, "other_load", lambda window: pytest.fail("looked again too soon"))
        rare.update()
    finally:
        torch.set_num_threads(previous)


@pytest.mark.slow
@pytest.mark.skipif(not cpuload.PROC_STAT.exists(), reason="needs /proc/stat (Linux)")
def test_a_real_busy_neighbour_is_seen() -> None:
    before = other_load(0.5)
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        during = other_load(1.0)
    finally:
        neighbour.kill()
    assert during - before > 0.5, (before, during)  # one busy process: about one core more
