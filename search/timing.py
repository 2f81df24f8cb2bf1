"""Timing on a device the same way everywhere: latency-table entries, whole subnets, search winners.

A machine's speed is not constant. On shared or virtual machines it moves in phases lasting seconds (on this
project's 2-core VM the same network's median over 2-second windows ranged 1.75x within one minute), so two
medians taken a minute apart can differ by that much. The ratio of two workloads timed back to back barely
moves (within 1.05x on that VM, same run; ``bench/timing_stability.py``). So by default every timed call is paired with a call of a fixed *reference probe* (the
space's smallest subnet, fixed weights) and the result is ``median(t / t_probe) * probe_ms``: the latency at
the machine speed at which the probe took ``probe_ms``. A latency table stores its ``probe_ms``; everything
compared with the table (validation, search winners) is timed against the same probe and the same
``probe_ms``, so table and measurement agree on what a millisecond is. The plain wall-clock median is kept
beside it (``raw_median_ms``).

GPUs are timed with CUDA events around each call after warm-up, with the device synchronised.
"""
from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn

from supernet.errors import UserError, int_range

RUNTIMES = ("eager", "torchscript")
# What a timing may be. Below 1e-4 ms (0.1 us) no forward pass of a network runs (a CUDA event resolves
# 0.5 us, a kernel launch alone takes a few): such a figure is a broken clock or probe, and it would let any
# subnet meet any budget. Over 1e6 ms (17 minutes) per call, a table of ~150 units timed 30 times each would
# take months: such a figure is a corrupt file, and near float's limits it turns sums into infinities.
MIN_MS, MAX_MS = 1e-4, 1e6
# Timing settings a table or a flag may ask for: more repeats or warm-up calls than this is a hang, not a
# measurement (the defaults are 30 and 10), and more threads than any machine has cores is a corrupt file.
MAX_CALLS, MAX_THREADS = 100_000, 1024
WARMUP, REPEATS, THREADS_RANGE = int_range(0, MAX_CALLS), int_range(1, MAX_CALLS), int_range(0, MAX_THREADS)

Call = Callable[[], object]


def cpu_time() -> float:
    """Seconds of CPU time the calling thread has run: beside :func:`time.perf_counter` it says how much of the
    wall time of a timed call the timing thread actually held a core (:attr:`Timer.cpu_share`)."""
    return time.thread_time()


@dataclass(frozen=True)
class TimingSettings:
    """How calls are timed; saved with every table so that comparisons time the same way."""

    warmup: int = 10
    repeats: int = 30
    threads: int = 1
    runtime: str = "eager"
    reference_probe: bool = True

    def __post_init__(self) -> None:
        """Refuse settings no timing can run with: what a flag or a corrupt table may hold."""
        counts = {"warmup": (self.warmup, WARMUP), "repeats": (self.repeats, REPEATS),
                  "threads": (self.threads, THREADS_RANGE)}
        for name, (value, allowed) in counts.items():
            if not allowed.contains(value):
                raise ValueError(f"{name} must be {allowed.describe()}, got {value!r}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if not isinstance(self.reference_probe, bool):
            raise ValueError(f"reference_probe must be true or false, got {self.reference_probe!r}")


def plausible_ms(value: Any) -> bool:
    """Whether ``value`` can be a timing in milliseconds: a number from :data:`MIN_MS` to :data:`MAX_MS`."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and MIN_MS <= value <= MAX_MS


def check_ms(value: float, what: str) -> float:
    """``value`` if it is a :func:`plausible_ms` timing, else a one-line error naming ``what`` was timed.

    A timing of 0 ms (a clock that did not move, a probe speed of 0) would make every subnet meet every
    budget; it is refused where it is taken rather than recorded.
    """
    if not plausible_ms(value):
        raise UserError(f"timing {what} gave {value!r} ms, not a time from {MIN_MS:g} to {MAX_MS:g} ms: the "
                        "clock or the reference probe's speed is broken; nothing was recorded")
    return float(value)


class threads:
    """Run with ``n`` torch threads (0: leave them be), restoring the previous count afterwards."""

    def __init__(self, n: int):
        self.n, self.previous = n, torch.get_num_threads()

    def __enter__(self) -> None:
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.previous)


def prepare(module: nn.Module, shape: Iterable[int], device: torch.device, runtime: str = "eager") -> Call:
    """A no-argument call running ``module`` (eval mode, channels-last) on a random input of ``shape``.

    ``runtime="torchscript"`` scripts the module first (not frozen, unlike the files :mod:`search.export` writes).
    """
    module = module.to(device, memory_format=torch.channels_last).eval()
    if runtime == "torchscript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            module = torch.jit.script(module)
    elif runtime != "eager":
        raise ValueError(f"unknown runtime {runtime!r}; use one of {RUNTIMES}")
    x = torch.rand(*shape, device=device)
    x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x  # a text unit's hidden states are 3-D
    return lambda: module(x)


def clock(device: torch.device) -> Callable[[Call], float]:
    """``timed(fn)``: milliseconds one call of ``fn`` takes on ``device`` (CUDA events on a GPU)."""
    if device.type == "cuda":
        def timed_cuda(fn: Call) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        return timed_cuda

    def timed_cpu(fn: Call) -> float:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1000
    return timed_cpu


def _median_iqr(values: list[float]) -> tuple[float, float]:
    if len(values) == 1:
        return values[0], 0.0
    q = statistics.quantiles(values, n=4)
    return statistics.median(values), q[2] - q[0]


class Timer:
    """Times calls on ``device`` with ``settings``; against ``probe`` when one is given (see module doc).

    ``probe_ms`` fixes the speed results are expressed at; :meth:`probe_speed` measures it when a new table
    starts, and a table rescales to the median of :attr:`probe_times` (every probe call of its build) at
    the end, so its milliseconds are those of the machine's typical speed over the build, not of one second. Results are dicts: ``median_ms``, ``spread_ms`` (inter-quartile range, same units), ``count``
    and ``raw_median_ms`` (plain wall-clock median).
    """

    def __init__(self, device: torch.device, settings: TimingSettings, probe: Call | None = None,
                 probe_ms: float | None = None):
        if settings.reference_probe and probe is None:
            raise ValueError("settings ask for a reference probe but none was given")
        if probe_ms is not None:
            check_ms(probe_ms, "the reference probe")
        self.device, self.settings = device, settings
        self.probe = probe if settings.reference_probe else None
        self.probe_ms = probe_ms
        self.probe_times: list[float] = []  # every probe call timed by __call__, in milliseconds
        self.cpu_s = self.wall_s = 0.0  # over every timed loop on a CPU: what cpu_share divides
        self._timed = clock(device)

    @property
    def cpu_share(self) -> float | None:
        """Of the wall time this timer's timed calls took, the share its thread ran on a core (None on a GPU,
        or before anything was timed). About 1.0 alone on a core; a CPU-heavy neighbour taking the core in
        the middle of calls lowers it (see :mod:`search.load`)."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 and self.device.type == "cpu" else None

    def _account(self, started: tuple[float, float]) -> None:
        self.wall_s += time.perf_counter() - started[0]
        self.cpu_s += cpu_time() - started[1]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def probe_speed(self, calls: int = 100) -> float:
        """Median milliseconds of the probe alone right now; becomes :attr:`probe_ms`."""
        if self.probe is None:
            raise ValueError("no reference probe to measure")
        with threads(self.settings.threads), torch.no_grad():
            for _ in range(self.settings.warmup):
                self.probe()
            self._sync()
            started = time.perf_counter(), cpu_time()
            self.probe_ms = check_ms(statistics.median(self._timed(self.probe) for _ in range(calls)),
                                     "the reference probe")
            self._account(started)
        return self.probe_ms

    def __call__(self, fn: Call) -> dict[str, float]:
        s = self.settings
        if self.probe is not None and self.probe_ms is None:
            raise ValueError("the probe's speed is unknown: call probe_speed() or pass probe_ms")
        with threads(s.threads), torch.no_grad():
            for i in range(s.warmup):
                fn()
                if self.probe is not None and i < 2:  # the probe runs all the time: it is warm already
                    self.probe()
            self._sync()
            times, ratios = [], []
            started = time.perf_counter(), cpu_time()
            for _ in range(s.repeats):
                t = self._timed(fn)
                times.append(t)
                if self.probe is not None:
                    self.probe_times.append(check_ms(self._timed(self.probe), "a reference probe call"))
                    ratios.append(t / self.probe_times[-1])
            self._account(started)
        raw, raw_spread = _median_iqr(times)
        if self.probe is None:
            return {"median_ms": check_ms(raw, "a call"), "spread_ms": raw_spread, "count": len(times),
                    "raw_median_ms": raw}
        ratio, ratio_spread = _median_iqr(ratios)
        return {"median_ms": check_ms(ratio * self.probe_ms, "a call"), "spread_ms": ratio_spread * self.probe_ms,
                "count": len(times), "raw_median_ms": raw}
