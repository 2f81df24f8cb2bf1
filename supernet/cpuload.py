"""Torch threads for long CPU work, chosen for the machine's actual load rather than its core count.

Torch's default is one thread per core. Beside another CPU-heavy process (a second search, a training) that
is a trap on a small machine: each parallel region waits for its slowest thread, and one of them is always
queued behind the neighbour, so two threads run slower than one would (the cold main job took 4.6x as long
beside a neighbour on this project's 2-core VM). :class:`AdaptiveThreads` reads how many cores other
processes kept busy over a short window (``/proc/stat`` less this process's own CPU time) and sets torch's
thread count to the cores left, at least one; it looks again every so often, since neighbours come and go.

A thread count the user fixed (``OMP_NUM_THREADS``, or a caller's ``torch.set_num_threads`` that
:class:`AdaptiveThreads` is not given) is left alone. Off Linux (no ``/proc/stat``) nothing changes.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import torch

PROC_STAT = Path("/proc/stat")
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal (idle and iowait are not busy)
MARGIN = 0.25  # cores: a neighbour using 1.2 cores of 2 leaves one thread, one using 0.6 leaves two... minus noise


def _busy_ticks() -> int | None:
    """Clock ticks all CPUs spent busy since boot, or None where ``/proc/stat`` is not readable."""
    try:
        fields = PROC_STAT.read_text().split("\n", 1)[0].split()[1:]
        return sum(int(fields[i]) for i in BUSY_FIELDS if i < len(fields))
    except (OSError, ValueError, IndexError):
        return None


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


def other_load(window: float = 0.2) -> float | None:
    """Cores' worth of CPU that other processes used over the next ``window`` seconds (None off Linux)."""
    ticks, own, start = _busy_ticks(), _own_seconds(), time.monotonic()
    if ticks is None:
        return None
    time.sleep(window)
    after = _busy_ticks()
    if after is None:
        return None
    elapsed = time.monotonic() - start
    busy = (after - ticks) / os.sysconf("SC_CLK_TCK") - (_own_seconds() - own)
    return max(0.0, busy / elapsed)


def free_threads(cores: int, load: float | None) -> int:
    """Threads to use on ``cores`` cores when others keep ``load`` cores busy: the cores left, at least one."""
    if load is None:
        return cores
    return max(1, min(cores, math.floor(cores - load + MARGIN)))


class AdaptiveThreads:
    """Call :meth:`update` between units of work (evaluations): at most every ``every`` seconds it measures the
    load of other processes and sets torch's thread count to :func:`free_threads`. Does nothing when the user
    fixed the count with ``OMP_NUM_THREADS`` (or ``enabled`` is false). Each change is one line on stderr
    (``say``) and an entry of :attr:`history`: ``(seconds since start, other processes' load, threads)``."""

    def __init__(self, every: float = 20.0, *, cores: int | None = None, enabled: bool | None = None,
                 window: float = 0.2, say: bool = True):
        self.every, self.window, self.say = every, window, say
        self.cores = cores or torch.get_num_threads()
        self.enabled = ("OMP_NUM_THREADS" not in os.environ) if enabled is None else enabled
        self.start, self.last = time.monotonic(), -math.inf
        self.history: list[tuple[float, float, int]] = []

    def update(self) -> int:
        """The thread count in force after (perhaps) looking at the load again."""
        now = time.monotonic()
        if not self.enabled or now - self.last < self.every:
            return torch.get_num_threads()
        self.last = now
        load = other_load(self.window)
        threads = free_threads(self.cores, load)
        if threads != torch.get_num_threads():
            if self.say:
                print(f"other processes keep {load:.1f} of {self.cores} cores busy: evaluating with {threads} torch "
                      f"thread{'s' if threads > 1 else ''}", file=sys.stderr)
            torch.set_num_threads(threads)
            self.history.append((round(now - self.start, 1), round(load or 0.0, 2), threads))
        return threads
