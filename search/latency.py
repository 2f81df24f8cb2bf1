"""Latency lookup tables: time every piece of every subnet once on a device, then predict any subnet.

``python -m search.latency build --device cpu`` times each unit of the space (the stem, the head and every
kernel/expand choice at every block position) after warm-up, as the median of repeats paired with a
reference probe (see :mod:`search.timing`: this is what keeps tables steady on machines whose speed moves),
then times a few random subnets end to end and fits ``scale * sum + offset`` from the sum of their units'
medians to their measured latency. A subnet's predicted latency is that corrected sum. The table is a
versioned JSON file keyed by a device fingerprint (CPU model and instruction sets or GPU, driver and CUDA,
torch version, threads, dtype, batch size, runtime).

The default setting is a batch of 4 images on one thread, eager PyTorch, float32, channels-last: one core
serving small batches. How far the ``mbv3`` space spans in it depends on the machine (on this project's, 8 to
19 ms in November and 3.8 to 9.1 ms on 2026-12-01): ``show`` prints the range, and budgets inside it bind.

- ``show TABLE`` prints a table's fingerprint, coverage and correction.
- ``validate`` times random subnets end to end and prints how far to trust the table (MAPE, share within
  5%/10%, Kendall tau, worst cases; FLOPs as a baseline predictor); writes JSON and a scatter plot.
- ``calibrate TABLE MEASUREMENTS`` refits the correction with latencies measured elsewhere (deployed subnets).

Tables live in the cache folder (``$ONESHOT_CACHE`` or ``~/.cache/oneshot-nas``) unless a path is given; an
interrupted build or validation keeps what it measured and resumes. A build keeps its partial state beside the
table (``cpu.partial.json`` for ``cpu.json``) and writes the table itself once, complete; an existing table or
another build's partial state is refused unless ``--overwrite``, as is an output another process is writing.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import hashlib
import itertools
import json
import os
import platform
import random
import re
import statistics
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn
from tqdm import tqdm

from search.accuracy import agreement, fit_affine, format_row
from search.load import MIN_CPU_SHARE, assess, busy_reason, check_on_use
from search.plot import scatter_png
from search.timing import (MAX_MS, MIN_MS, REPEATS, RUNTIMES, WARMUP, Timer, TimingSettings, plausible_ms,
                           prepare)
from supernet.errors import DRAWN_MAX, ArgumentParser, UserError, int_range, random_seed, run_cli
from supernet.io import cache_dir as io_cache_dir, read_json, refuse_folder, verify_checksum, with_checksum, write_json
from supernet.family import Space, build_subnet, config_from_dict, get_space, input_shape, space_of, unit_keys, units
from supernet.kernels import lut_sum
from supernet.outdir import check_regular, claim_file, claim_folder
from supernet.sampler import MetricTable, extremes, flops_params_table, score_python, unit_table

FORMAT = "oneshot-nas/latency-table"
VERSION = 2
DEFAULT_BATCH_SIZE = 4
DEFAULT_THREADS = 1
DEFAULT_CALIBRATION_SUBNETS = 20
# A table times serving batches: 1024 images of 224 pixels are 600 MB of input alone. A larger batch size in
# a table or a flag is a corrupt file or a typo, and would be allocated before anything else could refuse it.
MAX_BATCH_SIZE = 1024
BATCH_SIZE = int_range(1, MAX_BATCH_SIZE)
"""The ``--batch-size`` flag of every command that times: the batch a table may hold."""
THREADS = int_range(0, os.cpu_count() or 1)
"""Torch threads while timing: 0 (torch's own choice) to this machine's CPU count."""
# The correction maps the sum of unit medians to end-to-end latency. On the device of the table it is near 1
# (fused or overlapping layers, call overhead); fitted to subnets deployed elsewhere it is that device's speed
# relative to this one. Beyond three orders of magnitude either way, the table's units do not describe what
# was measured (wrong units, another kind of device): build a table on that device instead.
MIN_SCALE, MAX_SCALE = 1e-3, 1e3
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile",
             "asimd", "sve")


# ---- devices --------------------------------------------------------------------------------------
def parse_device(name: str) -> torch.device:
    """``cpu`` or ``cuda:N``; anything else, or a GPU that is not there, is a one-line error."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use 'cpu' or 'cuda:N'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} asked for, but torch sees no CUDA GPU here")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise UserError(f"device {name!r} does not exist: torch sees {torch.cuda.device_count()} GPU(s)")
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise UserError(f"unsupported device {name!r}; use 'cpu' or 'cuda:N'")
    return device


def _cpu_info() -> tuple[str, list[str]]:
    """CPU model name and the vector instruction sets (of :data:`ISA_FLAGS`) it has."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), [f for f in ISA_FLAGS if f in flags]


def _nvidia_driver() -> str:
    try:
        match = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d[\d.]*)", Path("/proc/driver/nvidia/version").read_text())
    except OSError:
        return "unknown"
    return match.group(1) if match else "unknown"


def fingerprint(device: torch.device, batch_size: int, settings: TimingSettings = TimingSettings()) -> dict[str, Any]:
    """What must match for a table's numbers to hold: hardware, software and measurement setting."""
    info: dict[str, Any] = {"device": device.type, "torch": torch.__version__,
                            "threads": settings.threads or torch.get_num_threads(), "batch_size": batch_size,
                            "dtype": "float32", "runtime": settings.runtime, "memory_format": "channels_last"}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", driver=_nvidia_driver(),
                    cuda=torch.version.cuda)
    else:
        info["cpu"], info["cpu_isa"] = _cpu_info()
    return info


def space_hash(config: Any) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def cache_dir() -> Path:
    """Where latency tables are cached (see :func:`supernet.io.cache_dir`)."""
    return io_cache_dir("latency")


def default_table_path(config: Any, fp: Mapping[str, Any], settings: TimingSettings = TimingSettings()) -> Path:
    """Cache file for a space on a fingerprinted device and setting: one file per combination."""
    key = hashlib.sha256(json.dumps([dict(fp), dataclasses.asdict(settings)], sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"{config.name}-{space_hash(config)}-{fp['device']}-{key}.json"


def make_probe(config: Any, batch_size: int, device: torch.device, runtime: str):
    """The reference probe of :mod:`search.timing`: the space's smallest subnet with seed-0 weights and input."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = build_subnet(config, space_of(config).smallest())
        return prepare(module, (batch_size, *input_shape(config)), device, runtime)


def sample_archs(space: Space, count: int, stream: str) -> list[dict[str, Any]]:
    """``count`` random architectures from a named, reproducible stream (calibration and validation differ),
    each in its canonical form: the network its string names is the one measured."""
    return [space.parse(space.to_string(space.sample(random.Random(f"{stream}-{i}")))) for i in range(count)]


# ---- tables ---------------------------------------------------------------------------------------
class LatencyTable:
    """A loaded, checked table; :meth:`predict` is the corrected sum of an architecture's unit medians."""

    def __init__(self, data: dict[str, Any], path: Path | None = None):
        self.data, self.path = data, path
        self.entries: dict[str, dict[str, float]] = data["entries"]
        self.space = space_of(config_from_dict(data["space"]))
        correction = data.get("correction") or {"scale": 1.0, "offset_ms": 0.0}
        self.scale, self.offset_ms = float(correction["scale"]), float(correction["offset_ms"])

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self.data["fingerprint"]

    @property
    def settings(self) -> TimingSettings:
        names = {f.name for f in dataclasses.fields(TimingSettings)}
        return TimingSettings(**{k: v for k, v in self.data.get("settings", {}).items() if k in names})

    @property
    def batch_size(self) -> int:
        return int(self.fingerprint["batch_size"])

    @property
    def probe_ms(self) -> float | None:
        probe = self.data.get("probe")
        return float(probe["ms"]) if probe else None

    def unit_sum(self, arch: Mapping[str, int]) -> float:
        """The plain sum of ``arch``'s unit medians, before the correction."""
        return sum(self.entries[key]["median_ms"] for key in unit_keys(self.space, arch))

    def predict(self, arch: Mapping[str, int]) -> float:
        """Predicted latency of ``arch`` in milliseconds."""
        return self.scale * self.unit_sum(arch) + self.offset_ms

    @functools.cached_property
    def _medians(self) -> tuple[torch.Tensor, float]:
        """Summed unit medians per slot choice ``[S, D, C]`` (:class:`supernet.family.SlotLayout`) and of the
        base: the layout both batch paths below read."""
        table = medians_table(self.space.config, self.entries)
        return table.blocks[..., 0], float(table.base[0])

    def predict_many(self, archs: Iterable[Mapping[str, int]]) -> torch.Tensor:
        """Predicted latencies of many architectures in one :func:`supernet.kernels.lut_sum` call."""
        blocks, fixed = self._medians
        first = torch.zeros(1, blocks.shape[-1], dtype=torch.float64)
        first[0, 0] = fixed
        lut = torch.cat([first, blocks.flatten(0, 1)]).unsqueeze(-1)
        slots = 1 + blocks.shape[0] * blocks.shape[1]
        codes = []
        for arch in archs:
            code = [0] + [-1] * (slots - 1)  # slot 0: the base, always present
            for s, b, c in self.space.slots(self.space.validate(arch)):
                code[1 + s * blocks.shape[1] + b] = c
            codes.append(code)
        indices = torch.tensor(codes, dtype=torch.int64).reshape(len(codes), slots)
        return self.scale * lut_sum(indices, lut).squeeze(-1) + self.offset_ms

    def metric_table(self) -> MetricTable:
        """The ``"latency_ms"`` :class:`supernet.sampler.MetricTable` of this table (correction included).

        Blocks ``[S, D, C, 1]`` scaled, base = the scaled base units plus the offset: the same affine
        prediction as :meth:`predict`.
        """
        blocks, fixed = self._medians
        base = torch.tensor([self.scale * fixed + self.offset_ms], dtype=torch.float64)
        return MetricTable(("latency_ms",), self.scale * blocks.unsqueeze(-1), base)

    def lowest_ms(self) -> float:
        """The lowest latency this table predicts for any architecture of its space: per group the cheapest
        depth of its cheapest choices (the table is additive, so groups are independent). Not always
        ``space.smallest()``'s: a table may price a shallow stage of large kernels below a deep one of small."""
        return self._extreme_ms(lowest=True)

    def highest_ms(self) -> float:
        """The highest latency this table predicts for any architecture of its space (as :meth:`lowest_ms`)."""
        return self._extreme_ms(lowest=False)

    def _extreme_ms(self, lowest: bool) -> float:
        metric = self.metric_table()
        low, high = extremes(self.space.layout(), metric.blocks[..., 0], float(metric.base[0]))
        return low if lowest else high

    def input_shape(self) -> tuple[int, ...]:
        return (self.batch_size, *input_shape(self.space.config))

    def timer(self, device: torch.device) -> Timer:
        """A timer that measures on ``device`` exactly as this table's entries were measured."""
        settings = self.settings
        probe = make_probe(self.space.config, self.batch_size, device, settings.runtime) if settings.reference_probe else None
        return Timer(device, settings, probe, self.probe_ms)

    def measure(self, module: nn.Module, device: torch.device, timer: Timer | None = None) -> dict[str, float]:
        """End-to-end latency of a whole model, timed as this table's entries (same runtime, batch, probe)."""
        timer = timer or self.timer(device)
        return timer(prepare(module, self.input_shape(), device, self.settings.runtime))


def expected_keys(config: Any) -> list[str]:
    return [key for key, _, _ in units(config)]


def medians_table(config: Any, entries: Mapping[str, Mapping[str, float]]) -> MetricTable:
    """The ``"latency_ms"`` :class:`MetricTable` of plain unit medians (no correction)."""
    return unit_table(config, ("latency_ms",), {key: (entry["median_ms"],) for key, entry in entries.items()})


def _is_finite(value: Any) -> bool:
    """A number that is finite as a float (JSON also holds NaN, Infinity and integers of any size)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= sys.float_info.max


def _is_number(value: Any) -> bool:
    return _is_finite(value) and value >= 0


def sum_range(config: Any, entries: Mapping[str, Mapping[str, float]]) -> tuple[float, float]:
    """The least and the greatest sum of unit medians over every subnet of ``config``.

    Each slot's choices are independent, so the extremes take every slot's fastest (slowest) choice and
    every group's best (worst) depth; no subnet is enumerated.
    """
    table = medians_table(config, entries)
    return extremes(space_of(config).layout(), table.blocks[..., 0], float(table.base[0]))


def _check(data: Any, path: Path) -> dict[str, Any]:
    """Schema check of a table read from ``path``: format, version, fields and every entry's numbers."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path} is not a latency table of this tool (no {FORMAT!r} format tag)")
    if data.get("version") != VERSION:
        raise UserError(f"latency table {path} has schema version {data.get('version')!r}; this tool reads "
                        f"version {VERSION}: rebuild it with `python -m search.latency build`")
    for key, kind in (("space", dict), ("fingerprint", dict), ("entries", dict), ("settings", dict),
                      ("calibration", list)):
        if not isinstance(data.get(key), kind):
            raise UserError(f"latency table {path} lacks a valid {key!r} field; rebuild it")
    _check_measurements(data, f"latency table {path}", "rebuild the table")
    try:
        config = config_from_dict(data["space"], f"latency table {path}")
        names = {f.name for f in dataclasses.fields(TimingSettings)}
        TimingSettings(**{k: v for k, v in data["settings"].items() if k in names})
    except (TypeError, ValueError, KeyError) as err:
        raise UserError(f"latency table {path} has a malformed space or settings ({err}); rebuild it") from None
    batch_size = data["fingerprint"].get("batch_size")
    if not BATCH_SIZE.contains(batch_size):
        raise UserError(f"latency table {path} has no valid batch size in its fingerprint (1 to {MAX_BATCH_SIZE}, "
                        f"got {batch_size!r}); rebuild it")
    if data["settings"].get("reference_probe") and data.get("probe") is None:
        raise UserError(f"latency table {path} lacks its reference probe's speed; rebuild it")
    # A few thousand at most: a corrupt space can name more units (a depth of 10**18) than could ever be listed.
    missing = list(itertools.islice((key for key, _, _ in units(config) if key not in data["entries"]), 10_000))
    if missing or not data.get("complete"):
        raise UserError(f"latency table {path} is incomplete ({len(missing)} unit entries missing"
                        f"{', e.g. ' + repr(missing[0]) if missing else ', calibration unfinished'}); finish it with "
                        "`python -m search.latency build` and the same flags")
    problem = correction_problem(data.get("correction"), config, data["entries"])
    if problem:
        raise UserError(f"latency table {path} {problem}; rebuild it or rerun calibrate")
    if "load" in data and not _is_load_record(data["load"]):
        raise UserError(f"latency table {path} has a malformed \"load\" record (how busy the machine was while "
                        "it was measured, see search.load); rebuild it")
    return data


def _is_load_record(load: Any) -> bool:
    """Whether ``load`` has the form :func:`search.load.assess` gives a table (what show and searches read)."""
    def count(value: Any) -> bool:
        return value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10 ** 9)

    def share(value: Any) -> bool:
        return value is None or (_is_finite(value) and 0 <= value <= 1e3)
    return (isinstance(load, dict) and isinstance(load.get("busy"), bool) and isinstance(load.get("kept", False), bool)
            and isinstance(load.get("reasons"), list) and all(isinstance(r, str) for r in load["reasons"])
            and share(load.get("cpu_share")) and share(load.get("unit_spread"))
            and count(load.get("out_of_order")) and count(load.get("pairs")))


def _check_measurements(data: Mapping[str, Any], what: str, remedy: str) -> None:
    """Refuse a (complete or partial) table whose unit entries, calibration points or probe are not timings.

    A median, a measured latency or a probe speed must be :func:`search.timing.plausible_ms`: a probe of 0 ms
    or a unit of 1e-300 ms makes every subnet "measured 0.00 ms". ``what`` names the file, ``remedy`` says
    what to do.
    """
    for key, entry in data["entries"].items():
        if not (isinstance(entry, dict) and plausible_ms(entry.get("median_ms")) and _is_number(entry.get("spread_ms"))
                and entry["spread_ms"] <= MAX_MS and REPEATS.contains(entry.get("count"))):
            raise UserError(f"{what}: entry {key!r} is malformed (a median from {MIN_MS:g} to {MAX_MS:g} ms, a "
                            f"spread and a count are needed); {remedy}")
    for i, point in enumerate(data["calibration"]):  # what calibrate refits from
        if not (isinstance(point, dict) and isinstance(point.get("arch"), str) and plausible_ms(point.get("measured_ms"))):
            raise UserError(f"{what}: calibration point {i} is malformed (an \"arch\" and a \"measured_ms\" from "
                            f"{MIN_MS:g} to {MAX_MS:g} ms are needed); {remedy}")
    probe = data.get("probe")
    if probe is not None and not (isinstance(probe, dict) and plausible_ms(probe.get("ms"))):
        raise UserError(f"{what} lacks its reference probe's speed (\"probe\": {{\"ms\": ...}} from {MIN_MS:g} to "
                        f"{MAX_MS:g} ms); {remedy}")


def correction_problem(correction: Any, config: Any, entries: Mapping[str, Mapping[str, float]]) -> str | None:
    """What is wrong with ``correction`` for a table of ``config`` with checked ``entries``, or None.

    The scale must lie within :data:`MIN_SCALE` and :data:`MAX_SCALE` and the offset be finite, and what it
    predicts must be a timing (:func:`search.timing.plausible_ms`) for every subnet of the space: checked at
    the space's two extremes (:func:`sum_range`), so no subnet is enumerated.
    """
    if not (isinstance(correction, dict) and _is_finite(correction.get("scale")) and _is_finite(correction.get("offset_ms"))):
        return "has a malformed correction (a finite \"scale\" and \"offset_ms\" are needed)"
    scale, offset = correction["scale"], correction["offset_ms"]
    if not MIN_SCALE <= scale <= MAX_SCALE:
        return f"has a correction scale of {scale:.3g}, outside {MIN_SCALE:g} to {MAX_SCALE:g}"
    low, high = (scale * total + offset for total in sum_range(config, entries))
    if not (plausible_ms(low) and plausible_ms(high)):
        return (f"predicts latencies from {low:.3g} to {high:.3g} ms across the space, not all from {MIN_MS:g} to "
                f"{MAX_MS:g} ms")
    return None


def load_table(path: str | os.PathLike, *, device: torch.device | None = None, space: Any | None = None,
               allow_foreign: bool = False) -> LatencyTable:
    """Load and check a table; refuse one made for another space or (unless allowed) another device."""
    path = Path(path)
    data = _check(read_json(path, "latency table"), path)
    table = LatencyTable(data, path)
    if space is not None and space_hash(space) != space_hash(table.space.config):
        raise UserError(f"latency table {path} is for another search space ({table.space.name!r}, "
                        f"{space_hash(table.space.config)}); build one for this supernet's space")
    if device is not None:
        here = fingerprint(device, table.batch_size, table.settings)
        diff = [k for k in here if k != "torch" and here[k] != table.fingerprint.get(k)]
        if diff and not allow_foreign:
            raise UserError(f"latency table {path} was measured on another device or setting ({diff[0]}: "
                            f"{table.fingerprint.get(diff[0])!r}, here {here[diff[0]]!r}); build one here or "
                            "pass --allow-foreign-table")
        if diff:
            print(f"warning: using latency table {path} from another device ({diff[0]} differs)", file=sys.stderr)
        if table.fingerprint.get("torch") != torch.__version__:
            print(f"warning: latency table {path} was made with torch {table.fingerprint.get('torch')}, "
                  f"this is {torch.__version__}", file=sys.stderr)
    return table


def refit(data: dict[str, Any]) -> None:
    """Fit ``data``'s correction to its calibration points (measured vs sum of unit medians).

    Measurements given to ``calibrate`` (deployed subnets) are the ground truth: from three of them on, the
    fit uses only those; with fewer they join the subnets timed by the build. A fit that would predict a
    non-positive latency for the space's smallest subnet (a few noisy points far from it) falls back to a
    scale alone: the median ratio of measured to summed latency.
    """
    table = LatencyTable({**data, "correction": None})
    points = data["calibration"]
    given = [p for p in points if p.get("source") == "calibrate"]
    used = given if len(given) >= 3 else points
    sums = [table.unit_sum(table.space.parse(p["arch"])) for p in used]
    measured = [p["measured_ms"] for p in used]
    scale, offset = fit_affine(sums, measured)
    if scale * sum_range(table.space.config, data["entries"])[0] + offset <= 0:  # noisy points can tilt the line
        scale, offset = statistics.median(m / x for m, x in zip(measured, sums)), 0.0
    data["correction"] = {"scale": scale, "offset_ms": offset, "points": len(used),
                          "source": "calibrate" if used is given else "build" if not given else "build+calibrate"}


class BusyTable(UserError):
    """A build finished while the machine was busy (:func:`search.load.assess`): the table is complete but was
    written to :func:`busy_path`, not to the table's path, and is :attr:`table` for a caller that uses it once."""

    def __init__(self, table: LatencyTable, path: Path):
        self.table, self.path = table, path
        super().__init__(f"the machine was busy while latency table {path} was measured "
                         f"({'; '.join(table.data['load']['reasons'])}), so its milliseconds would be slower than "
                         f"this machine's: it was not saved there (it is in {table.path}); rerun when the machine "
                         "is quieter, or pass --keep-busy to keep it anyway")


def busy_path(path: str | os.PathLike) -> Path:
    """Where a build of ``path`` that found the machine busy leaves its table (``cpu.json`` -> ``cpu.busy.json``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.busy{path.suffix}")


def partial_path(path: str | os.PathLike) -> Path:
    """Where a build of the table ``path`` keeps its partial state (``cpu.json`` -> ``cpu.partial.json``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def build_table(config: Any, device: torch.device, *, batch_size: int = DEFAULT_BATCH_SIZE,
                settings: TimingSettings = TimingSettings(), calibration_subnets: int = DEFAULT_CALIBRATION_SUBNETS,
                out: str | os.PathLike | None = None, progress: bool = True, overwrite: bool = False,
                keep_busy: bool = False) -> LatencyTable:
    """Measure every unit of ``config`` on ``device``, then the calibration subnets; write atomically.

    A build that finds the machine was busy (:func:`search.load.assess`) raises :class:`BusyTable` with the
    table written aside, unless ``keep_busy``: then it is saved, its ``load`` marked as kept. The partial table is rewritten as it grows beside the target (:func:`partial_path`), so an interrupted
    build resumes where it stopped, and the target is written once, complete. An existing target, or a
    partial build this one cannot resume (other settings), is refused unless ``overwrite``; either is kept
    until the new table is complete.
    """
    check_batch_size(batch_size)
    if calibration_subnets < 0:
        raise UserError("--calibration-subnets must not be negative")
    fp = fingerprint(device, batch_size, settings)
    path = Path(out) if out else default_table_path(config, fp, settings)
    with claim_file(path, what="latency table", overwrite=overwrite):
        return _build(config, device, path, batch_size=batch_size, fp=fp, settings=settings,
                      calibration_subnets=calibration_subnets, progress=progress, overwrite=overwrite,
                      keep_busy=keep_busy)


def _build(config: Any, device: torch.device, path: Path, *, batch_size: int, fp: dict[str, Any],
           settings: TimingSettings, calibration_subnets: int, progress: bool, overwrite: bool,
           keep_busy: bool) -> LatencyTable:
    """:func:`build_table` once ``path`` is claimed."""
    partial = partial_path(path)
    check_regular(partial, "a partial latency table")
    recipe = {**dataclasses.asdict(settings), "calibration_subnets": calibration_subnets}
    space = space_of(config)
    data: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "space": config.to_dict(), "fingerprint": fp, "settings": recipe,
        "probe": None, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "entries": {}, "calibration": [], "correction": None, "complete": False}
    old = _resumable(partial, data)
    if old:
        data.update(probe=old["probe"], created=old["created"], entries=old["entries"], calibration=old["calibration"])
        print(f"resuming {partial}: {len(data['entries'])} units and {len(data['calibration'])} calibration subnets "
              "already measured", file=sys.stderr)
    elif partial.exists() and not overwrite:
        raise UserError(f"{partial} is a partial build of {path} with other settings (or unreadable); rerun the "
                        "build that started it to resume it, or pass --overwrite to start over")
    probe = make_probe(config, batch_size, device, settings.runtime) if settings.reference_probe else None
    timer = Timer(device, settings, probe, data["probe"]["ms"] if data["probe"] else None)
    if probe is not None and data["probe"] is None:
        data["probe"] = {"arch": space.to_string(space.smallest()), "seed": 0, "ms": timer.probe_speed()}
    todo = [(key, build, shape) for key, build, shape in units(config) if key not in data["entries"]]
    torch.manual_seed(0)
    for number, (key, build, shape) in enumerate(
            tqdm(todo, desc=f"latency table ({device})", unit="unit", disable=not progress), 1):
        data["entries"][key] = timer(prepare(build(), (batch_size, *shape), device, settings.runtime))
        if number % 10 == 0:
            write_json(partial, data)
    write_json(partial, data)
    table = LatencyTable(data)
    done = {p["arch"] for p in data["calibration"]}
    archs = [a for a in sample_archs(space, calibration_subnets, "calibration") if space.to_string(a) not in done]
    for arch in tqdm(archs, desc="calibration subnets", unit="subnet", disable=not progress):
        timing = table.measure(build_subnet(config, arch), device, timer)
        data["calibration"].append({"arch": space.to_string(arch), "measured_ms": timing["median_ms"],
                                    "raw_median_ms": timing["raw_median_ms"], "source": "build"})
        write_json(partial, data)
    _rescale_to_typical_speed(data, timer)
    refit(data)
    data["load"] = {**assess(timer, config, data["entries"], settings), "kept": keep_busy}
    data["complete"] = True
    checked = _check(data, path)
    if data["load"]["busy"] and not keep_busy:  # its measurements are what is wrong: none is resumed
        write_json(busy_path(path), data)
        partial.unlink(missing_ok=True)
        raise BusyTable(LatencyTable(checked, busy_path(path)), path)
    write_json(path, data)
    partial.unlink(missing_ok=True)
    return LatencyTable(checked, path)


def _rescale_to_typical_speed(data: dict[str, Any], timer: Timer) -> None:
    """Express ``data`` at the median probe time of this build instead of the probe's speed when it started."""
    if not data["probe"] or not timer.probe_times:
        return
    typical = statistics.median(timer.probe_times)
    factor = typical / data["probe"]["ms"]
    for entry in data["entries"].values():
        entry["median_ms"] *= factor
        entry["spread_ms"] *= factor
    for point in data["calibration"]:
        point["measured_ms"] *= factor
    data["probe"].update(ms=typical, calls=len(timer.probe_times))


def _resumable(path: Path, fresh: Mapping[str, Any]) -> dict[str, Any] | None:
    """The partial table at ``path`` if it was started with exactly the same space, device and recipe."""
    if not path.exists():
        return None
    try:
        old = read_json(path, "latency table")
    except UserError:
        return None
    same = isinstance(old, dict) and all(old.get(k) == json.loads(json.dumps(fresh[k]))
                                         for k in ("format", "version", "fingerprint", "space", "settings"))
    if not same or not isinstance(old.get("entries"), dict) or not isinstance(old.get("calibration"), list):
        return None
    remedy = "delete it to start the build over"
    _check_measurements(old, f"partial latency table {path}", remedy)
    if (old.get("probe") is None and fresh["settings"]["reference_probe"]) or not isinstance(old.get("created"), str):
        raise UserError(f"partial latency table {path} lacks its reference probe's speed or its creation time; {remedy}")
    return old


def check_batch_size(batch_size: Any, flag: str = "--batch-size") -> int:
    """``batch_size`` if it is an integer from 1 to :data:`MAX_BATCH_SIZE`, else a one-line error naming ``flag``."""
    if not BATCH_SIZE.contains(batch_size):
        raise UserError(f"{flag} must be {BATCH_SIZE.describe()} (a latency batch), got {batch_size!r}")
    return batch_size


def table_for(config: Any, device: torch.device, *, batch_size: int | None = None,
              threads: int | None = None, runtime: str | None = None, path: str | os.PathLike | None = None,
              allow_foreign: bool = False, build: bool = True) -> LatencyTable:
    """The table to search against: ``path`` if given, else this device's cached table, built if missing.

    ``batch_size``, ``threads`` and ``runtime`` are the setting asked for (``--batch-size``, ``--threads``,
    ``--runtime``), None where nothing was asked: a table given by ``path`` supplies those (and one measured in
    another setting than asked is refused in one line), the cached table is that of the setting asked for or
    the default one. Either way the returned table's setting is what every measurement then uses.
    """
    if path:
        table = load_table(path, device=device, space=config, allow_foreign=allow_foreign)
        check_setting(table, batch_size=batch_size, threads=threads, runtime=runtime)
        load = table.data.get("load") or {}
        if load.get("busy") and not load.get("kept"):  # a table set aside as busy, given by path
            print(f"warning: latency table {path} may be too slow: {busy_reason(load)}; rebuild it with `python -m "
                  "search.latency build --overwrite` when the machine is quiet", file=sys.stderr)
        return table
    batch_size = check_batch_size(DEFAULT_BATCH_SIZE if batch_size is None else batch_size)
    try:
        settings = TimingSettings(threads=DEFAULT_THREADS if threads is None else threads, runtime=runtime or "eager")
    except ValueError as err:
        raise UserError(f"bad timing flags: {err}") from None
    cached = default_table_path(config, fingerprint(device, batch_size, settings), settings)
    if cached.exists():
        try:
            table = load_table(cached, device=device, space=config)
        except UserError as err:
            if not build:
                raise
            print(f"rebuilding cached latency table: {err}", file=sys.stderr)
        else:
            stale = check_on_use(table, device)
            if not stale:
                return table
            if not build:
                print(f"warning: cached latency table {cached} may be too slow: {stale}; rebuild it with "
                      "`python -m search.latency build --overwrite`", file=sys.stderr)
                return table
            print(f"rebuilding cached latency table {cached}: {stale}", file=sys.stderr)
    if not build:
        raise UserError(f"no latency table for this device and setting yet ({cached}); build one with "
                        f"`python -m search.latency build --device {device} --batch-size {batch_size}` "
                        "(and the same --threads/--runtime)")
    if not cached.exists():
        print(f"no latency table for this device yet: measuring one ({cached})", file=sys.stderr)
    try:
        return build_table(config, device, batch_size=batch_size, settings=settings, out=cached, overwrite=True)
    except BusyTable as busy:
        reasons = "; ".join(busy.table.data["load"]["reasons"])
        print(f"the machine was busy while the latency table was measured ({reasons}): using it for this run only "
              f"({busy.table.path}); it is not cached, so the next run measures again (`python -m search.latency "
              "build --keep-busy` keeps one anyway)", file=sys.stderr)
        return busy.table


def check_setting(table: LatencyTable, *, batch_size: int | None = None, threads: int | None = None,
                  runtime: str | None = None) -> None:
    """Refuse, in one line naming both, a setting asked for (not None) that differs from ``table``'s.

    A table's medians hold for the batch size, threads and runtime it was measured with, and everything timed
    against it is timed with them; a flag asking for another would be silently ignored.
    """
    settings = table.settings
    have = {"--batch-size": table.batch_size, "--threads": settings.threads, "--runtime": settings.runtime}
    asked = {"--batch-size": batch_size, "--threads": threads, "--runtime": runtime}
    clash = [flag for flag, value in asked.items() if value is not None and value != have[flag]]
    if clash:
        one = len(clash) == 1
        raise UserError(f"{', '.join(f'{flag} {asked[flag]}' for flag in clash)} {'conflicts' if one else 'conflict'} "
                        f"with latency table {table.path}, measured with "
                        f"{', '.join(f'{flag} {have[flag]}' for flag in clash)}: leave {'it' if one else 'them'} out to "
                        "use the table's, or build a table in that setting with `python -m search.latency build`")


# ---- validation and calibration -------------------------------------------------------------------
def _measurement_id(table: LatencyTable) -> str:
    """Identifies what a table measured (not its correction, which calibrate changes)."""
    what = [table.fingerprint, table.data["settings"], table.data.get("probe"), table.entries]
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def validate(table: LatencyTable, device: torch.device, *, subnets: int = 100, seed: int = 0,
             out: str | os.PathLike = "runs/latency-validation", progress: bool = True,
             overwrite: bool = False) -> dict[str, Any]:
    """Time ``subnets`` random subnets end to end as the table was timed; compare with its predictions.

    Writes ``OUT/validation.json`` (every subnet, the figures per predictor) and ``OUT/validation.png``.
    Measurements are kept as they are made, and reused by a later run with the same table and seed; a
    ``validation.json`` of another table or seed is refused unless ``overwrite``. The file carries a checksum
    (:func:`supernet.io.with_checksum`), so one edited by hand is refused, here and by
    :func:`read_measurements`, rather than reused or calibrated on (``overwrite`` replaces it).
    """
    if subnets < 2:
        raise UserError(f"--subnets must be at least 2 (rank correlation needs pairs), got {subnets}")
    out = Path(out)
    space, config = table.space, table.space.config
    key = {"table": _measurement_id(table), "seed": seed}
    previous: dict[str, dict[str, Any]] = {}
    same = False
    if (out / "validation.json").exists():
        try:
            old, rows = read_validation(out / "validation.json")
            same = old.get("key") == key
        except UserError:
            if not overwrite:
                raise
            rows = []
        if same:
            previous = {row["arch"]: row for row in rows}
        elif not overwrite:
            raise UserError(f"{out / 'validation.json'} holds a validation of another table or --seed; pass "
                            "--overwrite to replace it, or use another --out")
    archs = sample_archs(space, subnets, f"validate-{seed}")
    timer = table.timer(device)
    flops_table = flops_params_table(config)
    rows: list[dict[str, Any]] = []
    for arch in tqdm(archs, desc=f"validating on {device}", unit="subnet", disable=not progress):
        name = space.to_string(arch)
        row = previous.get(name)
        if row is None:
            torch.manual_seed(len(rows))
            timing = table.measure(build_subnet(config, arch), device, timer)
            row = {"arch": name, "measured_ms": timing["median_ms"], "spread_ms": timing["spread_ms"],
                   "raw_median_ms": timing["raw_median_ms"]}
            previous[name] = row
        row.update(predicted_ms=table.predict(arch), unit_sum_ms=table.unit_sum(arch),
                   flops=score_python(space, arch, flops_table)[0])
        rows.append(row)
        if len(rows) % 10 == 0:
            write_json(out / "validation.json", with_checksum({"key": key, "complete": False, "subnets": rows}))
    measured = [r["measured_ms"] for r in rows]
    flops_fit = fit_affine([r["flops"] for r in rows], measured)
    predictors = {
        f"table (corrected, {table.data['correction'].get('points', 0)} points)": [r["predicted_ms"] for r in rows],
        "table (sum of unit medians)": [r["unit_sum_ms"] for r in rows],
        "FLOPs (affine fit to these subnets)": [flops_fit[0] * r["flops"] + flops_fit[1] for r in rows]}
    figures = {name: agreement(values, measured) for name, values in predictors.items()}
    calibrated_on = {p["arch"] for p in table.data["calibration"]}
    result = {"key": key, "complete": True, "table": str(table.path), "fingerprint": table.fingerprint,
              "settings": table.data["settings"], "probe": table.data.get("probe"), "seed": seed,
              "correction": table.data["correction"], "flops_fit": {"scale": flops_fit[0], "offset_ms": flops_fit[1]},
              "in_calibration": sum(r["arch"] in calibrated_on for r in rows), "cpu_share": timer.cpu_share,
              "figures": figures, "subnets": rows}
    write_json(out / "validation.json", with_checksum(result))
    fp = table.fingerprint
    scatter_png(out / "validation.png", measured, predictors,
                f"{space.name} on {fp.get('gpu') or fp.get('cpu')}: batch {fp['batch_size']}, "
                f"{fp['threads']} thread(s), {fp['runtime']}; {len(rows)} random subnets")
    return result


def report(result: Mapping[str, Any]) -> None:
    """Print a validation's figures, worst cases and context."""
    fp, rows = result["fingerprint"], result["subnets"]
    how = "against the table's reference probe" if result["settings"].get("reference_probe") else "wall clock"
    print(f"{len(rows)} random subnets timed end to end on {fp['device']} (batch {fp['batch_size']}, "
          f"{fp['threads']} thread(s), {fp['runtime']}; {how})")
    for name, figures in result["figures"].items():
        print(format_row(name, figures))
    name, figures = next(iter(result["figures"].items()))
    print(f"worst cases, {name}:")
    for case in figures["worst"]:
        row = rows[case["index"]]
        print(f"  {case['error_pct']:+6.1f}%  predicted {row['predicted_ms']:7.3f} ms  measured "
              f"{row['measured_ms']:7.3f} ms  {row['arch']}")
    raw = [r["raw_median_ms"] / r["measured_ms"] for r in rows]
    if result["settings"].get("reference_probe"):
        print(f"machine speed while validating: wall-clock medians were {min(raw):.2f}x to {max(raw):.2f}x the "
              "probe-referenced ones")
    share = result.get("cpu_share")
    if share is not None and share < MIN_CPU_SHARE:
        print(f"warning: the machine was busy while validating (the timing thread held a core {100 * share:.0f}% "
              "of the time): these figures say more about the load than about the table; rerun when it is quiet")
    if result["in_calibration"]:
        print(f"note: {result['in_calibration']} of these subnets were among the table's calibration points")


VALIDATION_REMEDY = "delete it (or use another --out) and rerun `python -m search.latency validate`"


def read_validation(path: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A ``validation.json`` that :func:`validate` wrote, and its subnet rows; anything else is one line.

    Its checksum must match (an edited measurement would be calibrated on, or reused by a resumed
    validation), and every row must hold an architecture string and timings (:func:`search.timing.plausible_ms`).
    """
    path = Path(path)
    data = read_json(path, "validation")
    if not isinstance(data, dict) or not isinstance(data.get("subnets"), list):
        raise UserError(f"{path} is not a validation.json of `python -m search.latency validate`; {VALIDATION_REMEDY}")
    data = verify_checksum(data, path, "validation", VALIDATION_REMEDY)
    for i, row in enumerate(data["subnets"]):
        if not (isinstance(row, dict) and isinstance(row.get("arch"), str)
                and all(plausible_ms(row.get(k)) for k in ("measured_ms", "raw_median_ms"))
                and _is_number(row.get("spread_ms"))):
            raise UserError(f"validation {path}: subnet {i} is malformed (an \"arch\" and timings from {MIN_MS:g} to "
                            f"{MAX_MS:g} ms are needed); {VALIDATION_REMEDY}")
    return data, data["subnets"]


def read_measurements(path: str | os.PathLike, space: Space) -> list[dict[str, Any]]:
    """Measured latencies from a file: a list of ``{"arch", "latency_ms"}`` or a ``validation.json``.

    A latency must be a timing (:func:`search.timing.plausible_ms`): 0 ms, or 1e308, would tilt the fit.
    """
    data = read_json(path, "measurements")
    rows = read_validation(path)[1] if isinstance(data, dict) else data
    if not isinstance(rows, list) or not rows:
        raise UserError(f"measurements {path} must be a non-empty JSON list of {{\"arch\": ..., \"latency_ms\": ...}} "
                        "or a validation.json")
    points = []
    for i, row in enumerate(rows):
        value = row.get("latency_ms", row.get("measured_ms")) if isinstance(row, dict) else None
        if not isinstance(row, dict) or "arch" not in row or not plausible_ms(value):
            raise UserError(f"measurements {path}: entry {i} needs an \"arch\" and a \"latency_ms\" from {MIN_MS:g} "
                            f"to {MAX_MS:g} ms")
        try:
            arch = space.parse(row["arch"])
        except UserError as err:
            raise UserError(f"measurements {path}: entry {i}: {err}") from None
        points.append({"arch": space.to_string(arch), "measured_ms": float(value), "source": "calibrate"})
    return points


def calibrate(table: LatencyTable, points: list[dict[str, Any]], out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Add measured points to the table's calibration, refit its correction and write it (atomically).

    A subnet measured again replaces its earlier point. Returns the figures on ``points`` before and after.
    """
    space = table.space
    odd = next((p for p in points if not plausible_ms(p.get("measured_ms"))), None)
    if odd is not None:  # read_measurements refuses these; a caller of this function may not have used it
        raise UserError(f"calibrate: {odd.get('arch')} was measured at {odd.get('measured_ms')!r} ms, not a time from "
                        f"{MIN_MS:g} to {MAX_MS:g} ms; nothing was written")
    archs = [space.parse(p["arch"]) for p in points]
    measured = [p["measured_ms"] for p in points]
    before = agreement([table.predict(a) for a in archs], measured)
    data = json.loads(json.dumps(table.data))
    new = {p["arch"] for p in points}
    data["calibration"] = [p for p in data["calibration"] if p["arch"] not in new] + points
    refit(data)
    path = Path(out) if out else table.path
    problem = correction_problem(data["correction"], space.config, data["entries"])
    if problem:  # what the loader would refuse is never written, least of all over the table itself
        c = data["correction"]
        raise UserError(f"calibrate: refitted to these measurements ({c['scale']:.4g} * sum + {c['offset_ms']:.4g} ms), "
                        f"the table {problem}; {path} was not written: check that the measurements are milliseconds "
                        "of this space's subnets at the table's batch size")
    write_json(path, data)
    updated = LatencyTable(data, path)
    after = agreement([updated.predict(a) for a in archs], measured)
    return {"before": before, "after": after, "correction_before": table.data["correction"],
            "correction_after": data["correction"], "path": str(path)}


# ---- CLI ------------------------------------------------------------------------------------------
def _setting_flags(parser: argparse.ArgumentParser, *, table_decides: bool = False) -> None:
    """The measurement-setting flags; with ``table_decides`` one left out is None: the table's is used."""
    also = ", or the table's" if table_decides else ""
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N (default cpu)")
    parser.add_argument("--space", default=None if table_decides else "mbv3",
                        help="registered search space (default " + ("the --table's, else " if table_decides else "")
                             + "mbv3)")
    parser.add_argument("--batch-size", type=BATCH_SIZE, default=None if table_decides else DEFAULT_BATCH_SIZE,
                        help=f"images per timed call (default {DEFAULT_BATCH_SIZE}{also})")
    parser.add_argument("--threads", type=THREADS, default=None if table_decides else DEFAULT_THREADS,
                        help=f"torch threads while timing (default {DEFAULT_THREADS}{also}; 0: torch's own)")
    parser.add_argument("--runtime", choices=RUNTIMES, default=None if table_decides else "eager",
                        help=f"eager PyTorch or TorchScript (default eager{also})")


def _settings(args: argparse.Namespace) -> TimingSettings:
    try:
        return TimingSettings(warmup=getattr(args, "warmup", 10), repeats=getattr(args, "repeats", 30),
                              threads=args.threads, runtime=args.runtime,
                              reference_probe=getattr(args, "reference_probe", True))
    except ValueError as err:
        raise UserError(f"bad timing flags: {err}") from None


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m search.latency", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="measure a table on a device", description="Measure a latency table on a device.")
    _setting_flags(build)
    build.add_argument("--warmup", type=WARMUP, default=TimingSettings.warmup, help="untimed runs before each unit's timing")
    build.add_argument("--repeats", type=REPEATS, default=TimingSettings.repeats, help="timed runs of each unit (their median is kept)")
    build.add_argument("--reference-probe", action=argparse.BooleanOptionalAction, default=True,
                       help="pair every timed call with a reference probe (default: on; see search.timing)")
    build.add_argument("--calibration-subnets", type=int_range(0, DRAWN_MAX), default=DEFAULT_CALIBRATION_SUBNETS,
                       help="random subnets timed end to end to fit the correction")
    build.add_argument("--out", default=None, help="table file (default: the cache folder)")
    build.add_argument("--overwrite", action="store_true",
                       help="rebuild an existing table (kept until the new one is complete), or start over a "
                            "partial build of other settings")
    build.add_argument("--keep-busy", action="store_true",
                       help="save the table even if the machine was busy while it was measured (see search.load); "
                            "without it such a table is left beside the target as *.busy.json")
    show = commands.add_parser("show", help="print a table's fingerprint, coverage and correction", description="Print a table's fingerprint, coverage and correction.")
    show.add_argument("table", nargs="?", default=None,
                      help="table file (default: this CPU's cached table of --space, default setting)")
    show.add_argument("--space", default="mbv3", help="the space whose cached table to show, without TABLE")
    check = commands.add_parser("validate", help="time random subnets end to end and compare with the table", description="Time random subnets end to end and compare them with the table's predictions.")
    _setting_flags(check, table_decides=True)
    check.add_argument("--table", default=None, help="table file (default: this device's cached one)")
    check.add_argument("--allow-foreign-table", action="store_true",
                       help="accept a table measured on another device, with a warning")
    check.add_argument("--subnets", type=int_range(2, DRAWN_MAX), default=100,
                       help="random subnets to time (default 100)")
    check.add_argument("--seed", type=random_seed, default=0, help="which random subnets are timed")
    check.add_argument("--out", default="runs/latency-validation", help="folder for validation.json/.png")
    check.add_argument("--overwrite", action="store_true",
                       help="replace a validation of another table or seed in --out")
    fix = commands.add_parser("calibrate", help="refit a table's correction with measured latencies", description="Refit a table's correction with latencies measured elsewhere.")
    fix.add_argument("table")
    fix.add_argument("measurements", help="JSON list of {\"arch\", \"latency_ms\"}, or a validation.json")
    fix.add_argument("--out", default=None, help="write the calibrated table here (default: in place)")
    fix.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    if args.command in ("build", "calibrate") and args.out:  # a file; refused now, not after the measuring
        refuse_folder(args.out, "--out", "table.json")

    if args.command == "build":
        table = build_table(get_space(args.space).config, parse_device(args.device), batch_size=args.batch_size,
                            settings=_settings(args), calibration_subnets=args.calibration_subnets, out=args.out,
                            overwrite=args.overwrite, keep_busy=args.keep_busy)
        print(f"wrote {table.path}")
        describe(table)
    elif args.command == "show":
        describe(load_table(args.table) if args.table else
                 table_for(get_space(args.space).config, torch.device("cpu"), build=False))
    elif args.command == "validate":
        device = parse_device(args.device)
        # A --table names its space; --space, when also given, must be that one (table_for refuses another).
        space = load_table(args.table).space if args.table and not args.space else get_space(args.space or "mbv3")
        table = table_for(space.config, device, batch_size=args.batch_size, threads=args.threads,
                          runtime=args.runtime, path=args.table, allow_foreign=args.allow_foreign_table, build=False)
        with claim_folder(args.out, what="a latency validation", run_files=("validation.json", "validation.png"),
                          resume=not args.overwrite, overwrite=args.overwrite):  # validate() checks what it resumes
            result = validate(table, device, subnets=args.subnets, seed=args.seed, out=args.out,
                              overwrite=args.overwrite)
        report(result)
        print(f"wrote {Path(args.out) / 'validation.json'} and {Path(args.out) / 'validation.png'}")
    else:
        table = load_table(args.table)
        out = Path(args.out or args.table)
        in_place = out.exists() and os.path.samefile(out, args.table)
        with claim_file(out, what="latency table", overwrite=args.overwrite, may_replace=in_place):
            change = calibrate(table, read_measurements(args.measurements, table.space), out)
        old, new = change["correction_before"], change["correction_after"]
        print(f"correction: {old['scale']:.4f} * sum + {old['offset_ms']:.3f} ms ({old.get('points', 0)} points) -> "
              f"{new['scale']:.4f} * sum + {new['offset_ms']:.3f} ms ({new['points']} points)")
        print(format_row("on these measurements, before", change["before"]))
        print(format_row("on these measurements, after", change["after"]))
        print(f"wrote {change['path']}")


def describe(table: LatencyTable) -> None:
    """Print fingerprint, coverage, correction and the predicted range of the space."""
    print(json.dumps(table.fingerprint, indent=2))
    expected = expected_keys(table.space.config)
    probe = table.data.get("probe")
    print(f"space {table.space.name}: {len(table.entries)}/{len(expected)} units measured"
          + (f"; reference probe {probe['ms']:.3f} ms" if probe else "; wall-clock timing (no probe)"))
    c = table.data["correction"]
    print(f"correction: {c['scale']:.4f} * sum of units + {c['offset_ms']:.3f} ms, fitted on {c.get('points', 0)} "
          f"subnets timed end to end")
    print(f"predicted latency: lowest of any subnet {table.lowest_ms():.2f} ms (smallest subnet "
          f"{table.predict(table.space.smallest()):.2f} ms), largest {table.predict(table.space.largest()):.2f} ms: "
          "budgets in between bind")
    load = table.data.get("load")
    if load:
        share = "n/a" if load.get("cpu_share") is None else f"{100 * load['cpu_share']:.0f}%"
        order = "" if load.get("pairs") is None else f"; {load.get('out_of_order')} of {load['pairs']} choice pairs out of order"
        print(f"machine while measuring: {'BUSY' if load['busy'] else 'quiet'} (timing thread on a core {share}"
              f"{order}){'; kept with --keep-busy' if load['busy'] and load.get('kept') else ''}")


if __name__ == "__main__":
    run_cli(main)
