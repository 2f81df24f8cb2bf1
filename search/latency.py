"""Latency lookup tables: time every piece of every subnet once on a device, then predict any subnet.

``python -m search.latency build --device cpu`` times each unit of the space (the stem, the head and every
kernel/expand choice at every block position) after warm-up, as the median of repeats paired with a
reference probe (see :mod:`search.timing`: this is what keeps tables steady on machines whose speed moves),
then times a few random subnets end to end and fits ``scale * sum + offset`` from the sum of their units'
medians to their measured latency. A subnet's predicted latency is that corrected sum. The table is a
versioned JSON file keyed by a device fingerprint (CPU model and instruction sets or GPU, driver and CUDA,
torch version, threads, dtype, batch size, runtime).

The default setting is a batch of 4 images on one thread, eager PyTorch, float32, channels-last: one core
serving small batches. On this project's machine the ``mbv3`` space spans about 8 ms (smallest subnet) to
19 ms (largest) in it, so ``--latency-ms 10`` splits the space.

- ``show TABLE`` prints a table's fingerprint, coverage and correction.
- ``validate`` times random subnets end to end and prints how far to trust the table (MAPE, share within
  5%/10%, Kendall tau, worst cases; FLOPs as a baseline predictor); writes JSON and a scatter plot.
- ``calibrate TABLE MEASUREMENTS`` refits the correction with latencies measured elsewhere (deployed subnets).

Tables live in the cache folder (``$ONESHOT_CACHE`` or ``~/.cache/oneshot-nas``) unless a path is given; an
interrupted build or validation keeps what it measured and resumes.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import hashlib
import itertools
import json
import math
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
from search.plot import scatter_png
from search.timing import RUNTIMES, Timer, TimingSettings, prepare
from supernet.errors import ArgumentParser, UserError, run_cli
from supernet.io import read_json, refuse_folder, write_json
from supernet.kernels import lut_sum
from supernet.model import Subnet, unit_keys, units
from supernet.sampler import MetricTable, flops_params_table, score_python
from supernet.space import Space, SpaceConfig, get_space

FORMAT = "oneshot-nas/latency-table"
VERSION = 2
DEFAULT_BATCH_SIZE = 4
DEFAULT_THREADS = 1
DEFAULT_CALIBRATION_SUBNETS = 20
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


def space_hash(config: SpaceConfig) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def cache_dir() -> Path:
    root = os.environ.get("ONESHOT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "oneshot-nas"
    return Path(root) / "latency"


def default_table_path(config: SpaceConfig, fp: Mapping[str, Any], settings: TimingSettings = TimingSettings()) -> Path:
    """Cache file for a space on a fingerprinted device and setting: one file per combination."""
    key = hashlib.sha256(json.dumps([dict(fp), dataclasses.asdict(settings)], sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"{config.name}-{space_hash(config)}-{fp['device']}-{key}.json"


def make_probe(config: SpaceConfig, batch_size: int, device: torch.device, runtime: str):
    """The reference probe of :mod:`search.timing`: the space's smallest subnet with seed-0 weights and input."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = Subnet(config, Space(config).smallest())
        return prepare(module, (batch_size, config.in_channels, config.input_size, config.input_size), device, runtime)


def sample_archs(space: Space, count: int, stream: str) -> list[dict[str, int]]:
    """``count`` random architectures from a named, reproducible stream (calibration and validation differ)."""
    return [space.sample(random.Random(f"{stream}-{i}")) for i in range(count)]


# ---- tables ---------------------------------------------------------------------------------------
class LatencyTable:
    """A loaded, checked table; :meth:`predict` is the corrected sum of an architecture's unit medians."""

    def __init__(self, data: dict[str, Any], path: Path | None = None):
        self.data, self.path = data, path
        self.entries: dict[str, dict[str, float]] = data["entries"]
        self.space = Space(SpaceConfig.from_dict(data["space"]))
        correction = data.get("correction") or {"scale": 1.0, "offset_ms": 0.0}
        self.scale, self.offset_ms = float(correction["scale"]), float(correction["offset_ms"])
        config = self.space.config
        self._choices = [(k, e) for k in config.kernels for e in config.expands]

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
        """Unit medians as blocks ``[S, D, C]`` (choice ``c = kernel_idx * len(expands) + expand_idx``) and the
        stem + head median: the layout both batch paths below read."""
        config = self.space.config
        blocks = torch.tensor([[[self.entries[f"stage{s + 1}.block{b}.k{k}e{e}"]["median_ms"] for k, e in self._choices]
                                for b in range(self.space.max_depth)] for s in range(len(config.stages))],
                              dtype=torch.float64)
        return blocks, self.entries["stem"]["median_ms"] + self.entries["head"]["median_ms"]

    def predict_many(self, archs: Iterable[Mapping[str, int]]) -> torch.Tensor:
        """Predicted latencies of many architectures in one :func:`supernet.kernels.lut_sum` call."""
        blocks, fixed = self._medians
        first = torch.zeros(1, blocks.shape[-1], dtype=torch.float64)
        first[0, 0] = fixed
        lut = torch.cat([first, blocks.flatten(0, 1)]).unsqueeze(-1)
        slots = 1 + blocks.shape[0] * blocks.shape[1]
        codes = []
        for arch in archs:
            code = [0] + [-1] * (slots - 1)  # slot 0: stem + head, always present
            for s, b, k, e in self.space.blocks(self.space.validate(arch)):
                code[1 + s * self.space.max_depth + b] = self._choices.index((k, e))
            codes.append(code)
        indices = torch.tensor(codes, dtype=torch.int64).reshape(len(codes), slots)
        return self.scale * lut_sum(indices, lut).squeeze(-1) + self.offset_ms

    def metric_table(self) -> MetricTable:
        """The ``"latency_ms"`` :class:`supernet.sampler.MetricTable` of this table (correction included).

        Blocks ``[S, D, C, 1]`` scaled, base = the scaled stem + head plus the offset: the same affine
        prediction as :meth:`predict`.
        """
        blocks, fixed = self._medians
        base = torch.tensor([self.scale * fixed + self.offset_ms], dtype=torch.float64)
        return MetricTable(("latency_ms",), self.scale * blocks.unsqueeze(-1), base)

    def input_shape(self) -> tuple[int, ...]:
        config = self.space.config
        return (self.batch_size, config.in_channels, config.input_size, config.input_size)

    def timer(self, device: torch.device) -> Timer:
        """A timer that measures on ``device`` exactly as this table's entries were measured."""
        settings = self.settings
        probe = make_probe(self.space.config, self.batch_size, device, settings.runtime) if settings.reference_probe else None
        return Timer(device, settings, probe, self.probe_ms)

    def measure(self, module: nn.Module, device: torch.device, timer: Timer | None = None) -> dict[str, float]:
        """End-to-end latency of a whole model, timed as this table's entries (same runtime, batch, probe)."""
        timer = timer or self.timer(device)
        return timer(prepare(module, self.input_shape(), device, self.settings.runtime))


def expected_keys(config: SpaceConfig) -> list[str]:
    return [key for key, _, _ in units(config)]


def _is_finite(value: Any) -> bool:
    """A number that is finite as a float (JSON also holds NaN, Infinity and integers of any size)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= sys.float_info.max


def _is_number(value: Any) -> bool:
    return _is_finite(value) and value >= 0


def sum_range(config: SpaceConfig, entries: Mapping[str, Mapping[str, float]]) -> tuple[float, float]:
    """The least and the greatest sum of unit medians over every subnet of ``config``.

    Each block slot's choices are independent, so the extremes take every slot's fastest (slowest) choice
    and every stage's best (worst) depth; no subnet is enumerated.
    """
    sums = []
    for pick in (min, max):
        total = entries["stem"]["median_ms"] + entries["head"]["median_ms"]
        for s in range(len(config.stages)):
            slots = [pick(entries[f"stage{s + 1}.block{b}.k{k}e{e}"]["median_ms"]
                          for k in config.kernels for e in config.expands) for b in range(max(config.depths))]
            total += pick(sum(slots[:d]) for d in config.depths)
        sums.append(total)
    return sums[0], sums[1]


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
    for key, entry in data["entries"].items():
        if not (isinstance(entry, dict) and all(_is_number(entry.get(f)) for f in ("median_ms", "spread_ms", "count"))):
            raise UserError(f"latency table {path}: entry {key!r} is malformed; rebuild the table")
    for i, point in enumerate(data["calibration"]):  # what calibrate refits from
        if not (isinstance(point, dict) and isinstance(point.get("arch"), str) and _is_number(point.get("measured_ms"))):
            raise UserError(f"latency table {path}: calibration point {i} is malformed; rebuild the table")
    try:
        config = SpaceConfig.from_dict(data["space"])
        names = {f.name for f in dataclasses.fields(TimingSettings)}
        TimingSettings(**{k: v for k, v in data["settings"].items() if k in names})
    except (TypeError, ValueError, KeyError) as err:
        raise UserError(f"latency table {path} has a malformed space or settings ({err}); rebuild it") from None
    batch_size = data["fingerprint"].get("batch_size")
    if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0):
        raise UserError(f"latency table {path} has no valid batch size in its fingerprint; rebuild it")
    probe = data.get("probe")
    if (probe is not None or data["settings"].get("reference_probe")) and not (isinstance(probe, dict)
                                                                               and _is_number(probe.get("ms"))):
        raise UserError(f"latency table {path} lacks its reference probe's speed; rebuild it")
    # A few thousand at most: a corrupt space can name more units (a depth of 10**18) than could ever be listed.
    missing = list(itertools.islice((key for key, _, _ in units(config) if key not in data["entries"]), 10_000))
    if missing or not data.get("complete"):
        raise UserError(f"latency table {path} is incomplete ({len(missing)} unit entries missing"
                        f"{', e.g. ' + repr(missing[0]) if missing else ', calibration unfinished'}); finish it with "
                        "`python -m search.latency build` and the same flags")
    correction = data.get("correction")
    if not (isinstance(correction, dict) and _is_number(correction.get("scale")) and correction["scale"] > 0
            and _is_finite(correction.get("offset_ms"))):
        raise UserError(f"latency table {path} has a malformed correction; rebuild it or rerun calibrate")
    low, high = (correction["scale"] * total + correction["offset_ms"] for total in sum_range(config, data["entries"]))
    if not (low > 0 and math.isfinite(high)):
        raise UserError(f"latency table {path} predicts latencies from {low:.3g} to {high:.3g} ms across the space, "
                        "not all positive and finite; rebuild it or rerun calibrate")
    return data


def load_table(path: str | os.PathLike, *, device: torch.device | None = None, space: SpaceConfig | None = None,
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


def build_table(config: SpaceConfig, device: torch.device, *, batch_size: int = DEFAULT_BATCH_SIZE,
                settings: TimingSettings = TimingSettings(), calibration_subnets: int = DEFAULT_CALIBRATION_SUBNETS,
                out: str | os.PathLike | None = None, progress: bool = True) -> LatencyTable:
    """Measure every unit of ``config`` on ``device``, then the calibration subnets; write atomically.

    The partial table is rewritten as it grows, so an interrupted build resumes where it stopped.
    """
    if batch_size <= 0 or calibration_subnets < 0:
        raise UserError("--batch-size must be positive and --calibration-subnets not negative")
    fp = fingerprint(device, batch_size, settings)
    path = Path(out) if out else default_table_path(config, fp, settings)
    recipe = {**dataclasses.asdict(settings), "calibration_subnets": calibration_subnets}
    space = Space(config)
    data: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "space": config.to_dict(), "fingerprint": fp, "settings": recipe,
        "probe": None, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "entries": {}, "calibration": [], "correction": None, "complete": False}
    old = _resumable(path, data)
    if old:
        data.update(probe=old["probe"], created=old["created"], entries=old["entries"], calibration=old["calibration"])
        print(f"resuming {path}: {len(data['entries'])} units and {len(data['calibration'])} calibration subnets "
              "already measured", file=sys.stderr)
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
            write_json(path, data)
    write_json(path, data)
    table = LatencyTable(data)
    done = {p["arch"] for p in data["calibration"]}
    archs = [a for a in sample_archs(space, calibration_subnets, "calibration") if space.to_string(a) not in done]
    for arch in tqdm(archs, desc="calibration subnets", unit="subnet", disable=not progress):
        timing = table.measure(Subnet(config, arch), device, timer)
        data["calibration"].append({"arch": space.to_string(arch), "measured_ms": timing["median_ms"],
                                    "raw_median_ms": timing["raw_median_ms"], "source": "build"})
        write_json(path, data)
    _rescale_to_typical_speed(data, timer)
    refit(data)
    data["complete"] = True
    write_json(path, data)
    return LatencyTable(_check(data, path), path)


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
    return old


def table_for(config: SpaceConfig, device: torch.device, *, batch_size: int = DEFAULT_BATCH_SIZE,
              settings: TimingSettings = TimingSettings(), path: str | os.PathLike | None = None,
              allow_foreign: bool = False, build: bool = True) -> LatencyTable:
    """The table to search against: ``path`` if given, else this device's cached table, built if missing."""
    if path:
        return load_table(path, device=device, space=config, allow_foreign=allow_foreign)
    cached = default_table_path(config, fingerprint(device, batch_size, settings), settings)
    if cached.exists():
        try:
            return load_table(cached, device=device, space=config)
        except UserError as err:
            if not build:
                raise
            print(f"rebuilding cached latency table: {err}", file=sys.stderr)
    if not build:
        raise UserError(f"no latency table for this device and setting yet ({cached}); build one with "
                        f"`python -m search.latency build --device {device} --batch-size {batch_size}` "
                        "(and the same --threads/--runtime)")
    print(f"no latency table for this device yet: measuring one ({cached})", file=sys.stderr)
    return build_table(config, device, batch_size=batch_size, settings=settings, out=cached)


# ---- validation and calibration -------------------------------------------------------------------
def _measurement_id(table: LatencyTable) -> str:
    """Identifies what a table measured (not its correction, which calibrate changes)."""
    what = [table.fingerprint, table.data["settings"], table.data.get("probe"), table.entries]
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def validate(table: LatencyTable, device: torch.device, *, subnets: int = 100, seed: int = 0,
             out: str | os.PathLike = "runs/latency-validation", progress: bool = True) -> dict[str, Any]:
    """Time ``subnets`` random subnets end to end as the table was timed; compare with its predictions.

    Writes ``OUT/validation.json`` (every subnet, the figures per predictor) and ``OUT/validation.png``.
    Measurements are kept as they are made, and reused by a later run with the same table and seed.
    """
    if subnets < 2:
        raise UserError(f"--subnets must be at least 2 (rank correlation needs pairs), got {subnets}")
    out = Path(out)
    space, config = table.space, table.space.config
    key = {"table": _measurement_id(table), "seed": seed}
    previous: dict[str, dict[str, Any]] = {}
    if (out / "validation.json").exists():
        try:
            old = read_json(out / "validation.json", "validation")
            if isinstance(old, dict) and old.get("key") == key:
                previous = {row["arch"]: row for row in old.get("subnets", [])}
        except (UserError, KeyError, TypeError):
            previous = {}
    archs = sample_archs(space, subnets, f"validate-{seed}")
    timer = table.timer(device)
    flops_table = flops_params_table(config)
    rows: list[dict[str, Any]] = []
    for arch in tqdm(archs, desc=f"validating on {device}", unit="subnet", disable=not progress):
        name = space.to_string(arch)
        row = previous.get(name)
        if row is None:
            torch.manual_seed(len(rows))
            timing = table.measure(Subnet(config, arch), device, timer)
            row = {"arch": name, "measured_ms": timing["median_ms"], "spread_ms": timing["spread_ms"],
                   "raw_median_ms": timing["raw_median_ms"]}
            previous[name] = row
        row.update(predicted_ms=table.predict(arch), unit_sum_ms=table.unit_sum(arch),
                   flops=score_python(space, arch, flops_table)[0])
        rows.append(row)
        if len(rows) % 10 == 0:
            write_json(out / "validation.json", {"key": key, "complete": False, "subnets": rows})
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
              "in_calibration": sum(r["arch"] in calibrated_on for r in rows),
              "figures": figures, "subnets": rows}
    write_json(out / "validation.json", result)
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
    if result["in_calibration"]:
        print(f"note: {result['in_calibration']} of these subnets were among the table's calibration points")


def read_measurements(path: str | os.PathLike, space: Space) -> list[dict[str, Any]]:
    """Measured latencies from a file: a list of ``{"arch", "latency_ms"}`` or a ``validation.json``."""
    data = read_json(path, "measurements")
    rows = data.get("subnets") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not rows:
        raise UserError(f"measurements {path} must be a non-empty JSON list of {{\"arch\": ..., \"latency_ms\": ...}} "
                        "or a validation.json")
    points = []
    for i, row in enumerate(rows):
        value = row.get("latency_ms", row.get("measured_ms")) if isinstance(row, dict) else None
        if not isinstance(row, dict) or "arch" not in row or not _is_number(value) or value <= 0:
            raise UserError(f"measurements {path}: entry {i} needs an \"arch\" and a positive \"latency_ms\"")
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
    archs = [space.parse(p["arch"]) for p in points]
    measured = [p["measured_ms"] for p in points]
    before = agreement([table.predict(a) for a in archs], measured)
    data = json.loads(json.dumps(table.data))
    new = {p["arch"] for p in points}
    data["calibration"] = [p for p in data["calibration"] if p["arch"] not in new] + points
    refit(data)
    path = Path(out) if out else table.path
    write_json(path, data)
    updated = LatencyTable(data, path)
    after = agreement([updated.predict(a) for a in archs], measured)
    return {"before": before, "after": after, "correction_before": table.data["correction"],
            "correction_after": data["correction"], "path": str(path)}


# ---- CLI ------------------------------------------------------------------------------------------
def _setting_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N (default cpu)")
    parser.add_argument("--space", default="mbv3", help="registered search space (default mbv3)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"torch threads while timing (default {DEFAULT_THREADS}; 0: torch's own)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="eager", help="eager PyTorch or TorchScript")


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
    build = commands.add_parser("build", help="measure a table on a device")
    _setting_flags(build)
    build.add_argument("--warmup", type=int, default=TimingSettings.warmup)
    build.add_argument("--repeats", type=int, default=TimingSettings.repeats)
    build.add_argument("--reference-probe", action=argparse.BooleanOptionalAction, default=True,
                       help="pair every timed call with a reference probe (default: on; see search.timing)")
    build.add_argument("--calibration-subnets", type=int, default=DEFAULT_CALIBRATION_SUBNETS,
                       help="random subnets timed end to end to fit the correction")
    build.add_argument("--out", default=None, help="table file (default: the cache folder)")
    show = commands.add_parser("show", help="print a table's fingerprint, coverage and correction")
    show.add_argument("table")
    check = commands.add_parser("validate", help="time random subnets end to end and compare with the table")
    _setting_flags(check)
    check.add_argument("--table", default=None, help="table file (default: this device's cached one)")
    check.add_argument("--allow-foreign-table", action="store_true",
                       help="accept a table measured on another device, with a warning")
    check.add_argument("--subnets", type=int, default=100, help="random subnets to time (default 100)")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--out", default="runs/latency-validation", help="folder for validation.json/.png")
    fix = commands.add_parser("calibrate", help="refit a table's correction with measured latencies")
    fix.add_argument("table")
    fix.add_argument("measurements", help="JSON list of {\"arch\", \"latency_ms\"}, or a validation.json")
    fix.add_argument("--out", default=None, help="write the calibrated table here (default: in place)")
    args = parser.parse_args(argv)
    if args.command in ("build", "calibrate") and args.out:  # a file; refused now, not after the measuring
        refuse_folder(args.out, "--out", "table.json")

    if args.command == "build":
        table = build_table(get_space(args.space).config, parse_device(args.device), batch_size=args.batch_size,
                            settings=_settings(args), calibration_subnets=args.calibration_subnets, out=args.out)
        print(f"wrote {table.path}")
        describe(table)
    elif args.command == "show":
        describe(load_table(args.table))
    elif args.command == "validate":
        device = parse_device(args.device)
        table = table_for(get_space(args.space).config, device, batch_size=args.batch_size,
                          settings=_settings(args), path=args.table, allow_foreign=args.allow_foreign_table,
                          build=False)
        result = validate(table, device, subnets=args.subnets, seed=args.seed, out=args.out)
        report(result)
        print(f"wrote {Path(args.out) / 'validation.json'} and {Path(args.out) / 'validation.png'}")
    else:
        table = load_table(args.table)
        change = calibrate(table, read_measurements(args.measurements, table.space), args.out)
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
    print(f"predicted latency: smallest {table.predict(table.space.smallest()):.2f} ms, "
          f"largest {table.predict(table.space.largest()):.2f} ms")


if __name__ == "__main__":
    run_cli(main)
