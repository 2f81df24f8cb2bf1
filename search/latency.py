"""Latency lookup tables: time every piece of every subnet once on a device, then predict any subnet.

``python -m search.latency build --device cpu`` times each unit of the space (the stem, the head and every
kernel/expand choice at every block position) in isolation, with warm-up and the median of repeats, and
writes a versioned JSON table keyed by a device fingerprint (CPU model or GPU name, threads, torch version,
batch size, dtype, runtime). A subnet's predicted latency is the sum of its units' medians.

The default setting is a batch of 4 images on one thread (eager PyTorch, float32, channels-last): one core
serving small batches, which times far more steadily on this shared 2-core machine than two threads do. With
it the ``mbv3`` space spans about 6.5 ms (smallest subnet) to 17.5 ms (largest) here, so ``--latency-ms 10``
splits the space: the largest subnet is over budget and the smallest is under.

``show TABLE`` prints a table's fingerprint and coverage. Tables live in the cache folder
(``$ONESHOT_CACHE`` or ``~/.cache/oneshot-nas``) unless ``--out`` names a file; an interrupted build keeps
what it measured and resumes.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn
from tqdm import tqdm

from supernet.errors import UserError, run_cli
from supernet.io import read_json, write_json
from supernet.kernels import lut_sum
from supernet.model import unit_keys, units
from supernet.sampler import MetricTable
from supernet.space import Space, SpaceConfig, get_space

FORMAT = "oneshot-nas/latency-table"
VERSION = 1
DEFAULT_BATCH_SIZE = 4
DEFAULT_THREADS = 1
DEFAULT_WARMUP = 10
DEFAULT_REPEATS = 30


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


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint(device: torch.device, batch_size: int, threads: int | None = DEFAULT_THREADS) -> dict[str, Any]:
    """What must match for a table's numbers to hold: hardware, software and measurement setting."""
    info: dict[str, Any] = {"device": device.type, "torch": torch.__version__,
                            "threads": threads or torch.get_num_threads(),
                            "batch_size": batch_size, "dtype": "float32", "runtime": "eager",
                            "memory_format": "channels_last"}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["cpu"] = _cpu_model()
    return info


def space_hash(config: SpaceConfig) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def cache_dir() -> Path:
    root = os.environ.get("ONESHOT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "oneshot-nas"
    return Path(root) / "latency"


def default_table_path(config: SpaceConfig, fp: Mapping[str, Any]) -> Path:
    """Cache file for a space on a fingerprinted device: one file per (space, device, setting)."""
    key = hashlib.sha256(json.dumps(dict(fp), sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"{config.name}-{space_hash(config)}-{fp['device']}-{key}.json"


# ---- timing ---------------------------------------------------------------------------------------
def time_call(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> dict[str, float]:
    """Median and spread (inter-quartile range) in milliseconds of ``repeats`` calls after ``warmup``."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync()
            times.append((time.perf_counter() - start) * 1000)
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_ms": statistics.median(times), "spread_ms": quartiles[2] - quartiles[0], "count": len(times)}


def prepare(module: nn.Module, shape: Iterable[int], device: torch.device) -> Callable[[], object]:
    """A no-argument call running ``module`` in eval mode on a random input of ``shape``."""
    module = module.to(device, memory_format=torch.channels_last).eval()
    x = torch.rand(*shape, device=device).contiguous(memory_format=torch.channels_last)
    return lambda: module(x)


class _Threads:
    """Run with ``n`` torch threads (or leave them be), restoring the previous count afterwards."""

    def __init__(self, n: int | None):
        self.n, self.previous = n, torch.get_num_threads()

    def __enter__(self) -> None:
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.previous)


def measure_model(model: nn.Module, input_shape: Iterable[int], device: torch.device, *,
                  threads: int | None = DEFAULT_THREADS,
                  warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS) -> dict[str, float]:
    """End-to-end latency of a whole model, timed exactly as table entries are."""
    with _Threads(threads):
        return time_call(prepare(model, input_shape, device), device, warmup, repeats)


# ---- tables ---------------------------------------------------------------------------------------
class LatencyTable:
    """A loaded, checked table; :meth:`predict` sums the medians of an architecture's units."""

    def __init__(self, data: dict[str, Any], path: Path | None = None):
        self.data, self.path = data, path
        self.entries: dict[str, dict[str, float]] = data["entries"]
        self.space = Space(SpaceConfig.from_dict(data["space"]))
        config = self.space.config
        self._choices = [(k, e) for k in config.kernels for e in config.expands]
        blocks = [[self.entries[f"stage{s + 1}.block{b}.k{k}e{e}"]["median_ms"] for k, e in self._choices]
                  for s in range(len(config.stages)) for b in range(self.space.max_depth)]
        fixed = self.entries["stem"]["median_ms"] + self.entries["head"]["median_ms"]
        self._lut = torch.tensor([[fixed] + [0.0] * (len(self._choices) - 1)] + blocks,
                                 dtype=torch.float64).unsqueeze(-1)  # [slots, choices, 1] for lut_sum

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self.data["fingerprint"]

    @property
    def batch_size(self) -> int:
        return int(self.fingerprint["batch_size"])

    def predict(self, arch: Mapping[str, int]) -> float:
        """Predicted latency of ``arch`` in milliseconds."""
        return sum(self.entries[key]["median_ms"] for key in unit_keys(self.space, arch))

    def predict_many(self, archs: Iterable[Mapping[str, int]]) -> torch.Tensor:
        """Predicted latencies of many architectures in one :func:`supernet.kernels.lut_sum` call."""
        slots = 1 + len(self.space.config.stages) * self.space.max_depth
        codes = []
        for arch in archs:
            code = [0] + [-1] * (slots - 1)  # slot 0: stem + head, always present
            for s, b, k, e in self.space.blocks(self.space.validate(arch)):
                code[1 + s * self.space.max_depth + b] = self._choices.index((k, e))
            codes.append(code)
        indices = torch.tensor(codes, dtype=torch.int64).reshape(len(codes), slots)
        return lut_sum(indices, self._lut).squeeze(-1)

    def metric_table(self) -> MetricTable:
        """The ``"latency_ms"`` :class:`supernet.sampler.MetricTable` of this table, for the batch sampler/scorer.

        Blocks ``[S, D, C, 1]`` (choice ``c = kernel_idx * len(expands) + expand_idx``), base = stem + head.
        """
        config = self.space.config
        blocks = torch.tensor([[[self.entries[f"stage{s + 1}.block{b}.k{k}e{e}"]["median_ms"] for k, e in self._choices]
                                for b in range(self.space.max_depth)] for s in range(len(config.stages))],
                              dtype=torch.float64).unsqueeze(-1)
        base = torch.tensor([self.entries["stem"]["median_ms"] + self.entries["head"]["median_ms"]],
                            dtype=torch.float64)
        return MetricTable(("latency_ms",), blocks, base)

    def input_shape(self) -> tuple[int, ...]:
        config = self.space.config
        return (self.batch_size, config.in_channels, config.input_size, config.input_size)


def expected_keys(config: SpaceConfig) -> list[str]:
    return [key for key, _, _ in units(config)]


def _check(data: Any, path: Path) -> dict[str, Any]:
    """Schema check of a table read from ``path``: format, version, fields and every entry's numbers."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path} is not a latency table of this tool (no {FORMAT!r} format tag)")
    if data.get("version") != VERSION:
        raise UserError(f"latency table {path} has schema version {data.get('version')!r}; this tool reads "
                        f"version {VERSION}: rebuild it with `python -m search.latency build`")
    for key, kind in (("space", dict), ("fingerprint", dict), ("entries", dict), ("settings", dict)):
        if not isinstance(data.get(key), kind):
            raise UserError(f"latency table {path} lacks a valid {key!r} field; rebuild it")
    for key, entry in data["entries"].items():
        ok = isinstance(entry, dict) and all(
            isinstance(entry.get(f), (int, float)) and not isinstance(entry.get(f), bool) and entry[f] >= 0
            for f in ("median_ms", "spread_ms", "count"))
        if not ok:
            raise UserError(f"latency table {path}: entry {key!r} is malformed; rebuild the table")
    config = SpaceConfig.from_dict(data["space"])
    missing = [k for k in expected_keys(config) if k not in data["entries"]]
    if missing:
        raise UserError(f"latency table {path} is incomplete ({len(missing)} entries missing, e.g. "
                        f"{missing[0]!r}); finish it with `python -m search.latency build` and the same flags")
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
        here = fingerprint(device, table.batch_size, table.fingerprint.get("threads"))
        diff = [k for k in here if k not in ("torch",) and here[k] != table.fingerprint.get(k)]
        if diff and not allow_foreign:
            raise UserError(f"latency table {path} was measured on another device ({diff[0]}: "
                            f"{table.fingerprint.get(diff[0])!r}, here {here[diff[0]]!r}); build one here or "
                            "pass --allow-foreign-table")
        if diff:
            print(f"warning: using latency table {path} from another device ({diff[0]} differs)", file=sys.stderr)
        if table.fingerprint.get("torch") != torch.__version__:
            print(f"warning: latency table {path} was made with torch {table.fingerprint.get('torch')}, "
                  f"this is {torch.__version__}", file=sys.stderr)
    return table


def build_table(config: SpaceConfig, device: torch.device, *, batch_size: int = DEFAULT_BATCH_SIZE,
                threads: int | None = DEFAULT_THREADS, warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS,
                out: str | os.PathLike | None = None, progress: bool = True) -> LatencyTable:
    """Measure every unit of ``config`` on ``device`` and write the table atomically.

    The partial table is rewritten every few entries, so an interrupted build resumes where it stopped.
    """
    if batch_size <= 0 or warmup < 0 or repeats <= 0:
        raise UserError("--batch-size and --repeats must be positive and --warmup not negative")
    fp = fingerprint(device, batch_size, threads)
    path = Path(out) if out else default_table_path(config, fp)
    settings = {"warmup": warmup, "repeats": repeats}
    data = {"format": FORMAT, "version": VERSION, "space": config.to_dict(), "fingerprint": fp,
            "settings": settings, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "entries": {}, "complete": False}
    if path.exists():
        try:
            old = read_json(path, "latency table")
        except UserError:
            old = None
        if (isinstance(old, dict) and old.get("format") == FORMAT and old.get("version") == VERSION
                and old.get("fingerprint") == fp and old.get("space") == json.loads(json.dumps(config.to_dict()))
                and old.get("settings") == settings and isinstance(old.get("entries"), dict)):
            data["entries"] = old["entries"]
    todo = [(key, build, shape) for key, build, shape in units(config) if key not in data["entries"]]
    torch.manual_seed(0)
    with _Threads(threads):
        for number, (key, build, shape) in enumerate(
                tqdm(todo, desc=f"latency table ({device})", unit="unit", disable=not progress), 1):
            data["entries"][key] = time_call(prepare(build(), (batch_size, *shape), device), device, warmup, repeats)
            if number % 10 == 0:
                write_json(path, data)
    data["complete"] = True
    write_json(path, data)
    return LatencyTable(_check(data, path), path)


def table_for(config: SpaceConfig, device: torch.device, *, batch_size: int = DEFAULT_BATCH_SIZE,
              threads: int | None = DEFAULT_THREADS, path: str | os.PathLike | None = None,
              allow_foreign: bool = False) -> LatencyTable:
    """The table to search against: ``path`` if given, else this device's cached table, built if missing."""
    if path:
        return load_table(path, device=device, space=config, allow_foreign=allow_foreign)
    fp = fingerprint(device, batch_size, threads)
    cached = default_table_path(config, fp)
    if cached.exists():
        try:
            return load_table(cached, device=device, space=config)
        except UserError as err:
            print(f"rebuilding cached latency table: {err}", file=sys.stderr)
    print(f"no latency table for this device yet: measuring one ({cached})", file=sys.stderr)
    return build_table(config, device, batch_size=batch_size, threads=threads, out=cached)


# ---- CLI ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m search.latency", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="measure a table on a device")
    build.add_argument("--device", default="cpu", help="cpu or cuda:N (default cpu)")
    build.add_argument("--space", default="mbv3", help="registered search space (default mbv3)")
    build.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    build.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                       help=f"torch threads while timing (default {DEFAULT_THREADS}; 0: torch's own)")
    build.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    build.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    build.add_argument("--out", default=None, help="table file (default: the cache folder)")
    show = commands.add_parser("show", help="print a table's fingerprint and coverage")
    show.add_argument("table")
    args = parser.parse_args(argv)

    if args.command == "build":
        space = get_space(args.space)
        table = build_table(space.config, parse_device(args.device), batch_size=args.batch_size,
                            threads=args.threads, warmup=args.warmup, repeats=args.repeats, out=args.out)
        print(f"wrote {table.path}")
        describe(table)
    else:
        describe(load_table(args.table))


def describe(table: LatencyTable) -> None:
    """Print fingerprint, coverage and the predicted range of the space."""
    print(json.dumps(table.fingerprint, indent=2))
    expected = expected_keys(table.space.config)
    print(f"space {table.space.name}: {len(table.entries)}/{len(expected)} units measured")
    print(f"predicted latency: smallest {table.predict(table.space.smallest()):.2f} ms, "
          f"largest {table.predict(table.space.largest()):.2f} ms")


if __name__ == "__main__":
    run_cli(main)
