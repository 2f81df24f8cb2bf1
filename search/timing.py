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
from typing import Callable, Iterable

import torch
from torch import nn

RUNTIMES = ("eager", "torchscript")

Call = Callable[[], object]


@dataclass(frozen=True)
class TimingSettings:
    """How calls are timed; saved with every table so that comparisons time the same way."""

    warmup: int = 10
    repeats: int = 30
    threads: int = 1
    runtime: str = "eager"
    reference_probe: bool = True

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeats <= 0 or self.threads < 0:
            raise ValueError("warmup must be >= 0, repeats > 0 and threads >= 0")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")


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
    x = torch.rand(*shape, device=device).contiguous(memory_format=torch.channels_last)
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
        self.device, self.settings = device, settings
        self.probe = probe if settings.reference_probe else None
        self.probe_ms = probe_ms
        self.probe_times: list[float] = []  # every probe call timed by __call__, in milliseconds
        self._timed = clock(device)

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
            self.probe_ms = statistics.median(self._timed(self.probe) for _ in range(calls))
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
            for _ in range(s.repeats):
                t = self._timed(fn)
                times.append(t)
                if self.probe is not None:
                    self.probe_times.append(self._timed(self.probe))
                    ratios.append(t / self.probe_times[-1])
        raw, raw_spread = _median_iqr(times)
        if self.probe is None:
            return {"median_ms": raw, "spread_ms": raw_spread, "count": len(times), "raw_median_ms": raw}
        ratio, ratio_spread = _median_iqr(ratios)
        return {"median_ms": ratio * self.probe_ms, "spread_ms": ratio_spread * self.probe_ms,
                "count": len(times), "raw_median_ms": raw}
