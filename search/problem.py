"""A search problem as algorithms see it: a space, an evaluator, bounds on metrics, and a journal.

- The *evaluator* is any callable from an architecture to a dict of metrics (the supernet's accuracy, a
  tabular benchmark, your own function). It is the expensive part.
- An optional *estimator* returns cheap metrics (table latency, FLOPs, params) known before evaluating.
- *Bounds* constrain metrics. A bound on an estimated metric is checked before evaluation, so an infeasible
  candidate is redrawn and never costs an evaluation; a bound on an evaluated metric marks the record
  infeasible afterwards.
- The *journal* keeps every evaluation (and every end-to-end timing of a winner) in a JSON file, rewritten
  atomically after each one, with a checksum of its records: one edited by hand is refused. Algorithms are
  deterministic given their seed and the metrics they see, so a search restarted on its journal replays
  the evaluations it already made (without calling the evaluator) and continues exactly where it stopped:
  the finished result equals that of an uninterrupted run.
- Random candidates come from :meth:`Problem.sample`: the space's own ``sample`` unless the problem has a
  ``sampler`` of its own, such as :class:`supernet.sampler.WindowDraws`, which draws only architectures within
  a latency budget, where the space's draws would almost all be rejected. Either way :meth:`Problem.draw`
  still checks every bound.
- Algorithms hand a *batch* of candidates to :meth:`Problem.run_many` wherever their semantics allow. Under
  ``torchrun`` (a :class:`ProcessGroup` of N processes; :class:`supernet.distributed.Group` is one) every rank
  runs the same seeded algorithm, so all propose the same batch; its evaluations are shared round-robin over
  the ranks and the metrics exchanged, so every rank holds the same history and the result does not depend
  on N. Only rank 0 writes the journal and shows progress.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Mapping, Protocol, Sequence, TypeVar

from tqdm import tqdm

from search.space import Arch, SearchSpace
from supernet.errors import UserError
from supernet.io import read_json, verify_checksum, with_checksum, write_json

Metrics = dict[str, Any]
T = TypeVar("T")


class ProcessGroup(Protocol):
    """What a :class:`Problem` needs of the processes that share its evaluations.

    Defined here rather than imported so that the search core needs no torch: the supernet's
    :class:`supernet.distributed.Group` (torchrun's processes) is one, :class:`SingleProcess` another.
    """

    @property
    def rank(self) -> int: ...
    @property
    def world_size(self) -> int: ...
    @property
    def is_main(self) -> bool: ...

    def map(self, function: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``[function(item) for item in items]`` on every process, each computing its share."""
        ...


@dataclass(frozen=True)
class SingleProcess:
    """The default :class:`ProcessGroup`: this process alone evaluates everything."""

    rank: int = 0
    world_size: int = 1
    is_main: bool = True

    def map(self, function: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        return [function(item) for item in items]


@dataclass(frozen=True)
class Bound:
    """``lower <= metrics[metric] <= upper`` (either side optional)."""

    metric: str
    upper: float | None = None
    lower: float | None = None

    def holds(self, metrics: Mapping[str, Any]) -> bool:
        value = metrics[self.metric]
        return (self.upper is None or value <= self.upper) and (self.lower is None or value >= self.lower)

    def __str__(self) -> str:
        parts = [f"{self.lower:g} <=" if self.lower is not None else "", self.metric,
                 f"<= {self.upper:g}" if self.upper is not None else ""]
        return " ".join(p for p in parts if p)


@dataclass
class Record:
    """One evaluated architecture: its metrics (estimated and evaluated), when, and whether it is feasible."""

    arch: Arch
    key: str
    metrics: Metrics
    generation: int
    feasible: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "arch_string": self.key, "metrics": self.metrics, "generation": self.generation,
                "feasible": self.feasible}


class Journal:
    """Evaluations of one search, by canonical key, in a JSON file tagged with the search's identity.

    The file carries a checksum of its records (:func:`supernet.io.with_checksum`): a resumed search replays
    them as measured, so a journal edited by hand (one changed digit can make a subnet the winner) or damaged
    is refused in one line, as is one of another shape.
    """

    FORMAT = "oneshot-nas/search-journal"

    def __init__(self, path: str | os.PathLike | None, identity: Mapping[str, Any]):
        self.path = Path(path) if path else None
        self.identity = dict(identity)
        self.entries: dict[str, Metrics] = {}
        self.measurements: dict[str, Metrics] = {}  # end-to-end timings of verified winners, by device|arch
        if self.path and self.path.exists():
            data = self._read(self.path)
            if data["identity"] != _plain(self.identity):
                differ = sorted(k for k in set(data["identity"]) | set(self.identity)
                                if data["identity"].get(k) != _plain(self.identity).get(k))
                raise UserError(f"{self.path} belongs to a different search ({', '.join(differ) or 'identity'} "
                                "differs); use another --out, or pass --overwrite to start over")
            self.entries = data["entries"]
            self.measurements = data["measurements"]

    @classmethod
    def _read(cls, path: Path) -> dict[str, Any]:
        """The journal at ``path``, checked: format tag, checksum, then the shape of every record."""
        remedy = "pass --overwrite to start the search over, or use another --out"
        data = read_json(path, "search journal")
        if not isinstance(data, dict) or data.get("format") != cls.FORMAT:
            raise UserError(f"{path} is not a search journal of this tool; {remedy}")
        data = verify_checksum(data, path, "search journal", remedy)
        if not isinstance(data.get("identity"), dict):
            raise UserError(f"search journal {path} has no valid \"identity\"; {remedy}")
        for part in ("entries", "measurements"):
            records = data.get(part)
            if not (isinstance(records, dict) and all(isinstance(r, dict) for r in records.values())):
                raise UserError(f"search journal {path}: {part!r} must map keys to records (JSON objects); {remedy}")
        return data

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> Metrics | None:
        return self.entries.get(key)

    def put(self, key: str, metrics: Metrics) -> None:
        self.put_many({key: metrics})

    def put_many(self, entries: Mapping[str, Metrics], *, save: bool = True) -> None:
        """Record several evaluations with one rewrite of the file (none if not ``save``: a rank other than 0
        keeps its copy in step without writing)."""
        self.entries.update(entries)
        if save:
            self._write()

    def measured(self, key: str, measure: Callable[[], Metrics]) -> Metrics:
        """The journalled measurement under ``key``, or ``measure()`` recorded now."""
        if key not in self.measurements:
            self.measurements[key] = measure()
            self._write()
        return self.measurements[key]

    def _write(self) -> None:
        if self.path:
            write_json(self.path, with_checksum({"format": self.FORMAT, "identity": self.identity,
                                                 "entries": self.entries, "measurements": self.measurements}))


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


@dataclass
class Problem:
    """Everything an algorithm needs besides its own settings; collects the history of one search as it goes.

    One problem, one search: a second search on the same problem is refused (see :meth:`session`), since it
    would add to, and be steered by, the first one's history. Make a new problem per search; a shared
    :class:`Journal` replays what an earlier one evaluated.
    """

    space: SearchSpace
    evaluate: Callable[[Arch], Metrics]
    bounds: Sequence[Bound] = ()
    # Optional: the metrics of many architectures in one call (a predictor's batched forward); every rank runs
    # it on the whole batch, since sharing the work costs more than it saves. Used instead of ``evaluate``.
    evaluate_many: Callable[[list[Arch]], list[Metrics]] | None = None
    estimate: Callable[[Arch], Metrics] | None = None
    sampler: Callable[[random.Random], Arch] | None = None  # random candidates; None: space.sample
    journal: Journal | None = None
    progress: bool = True
    max_tries: int = 2000
    group: ProcessGroup = field(default_factory=SingleProcess)
    history: list[Record] = field(default_factory=list)
    replayed: int = 0
    available: float | None = None  # how many distinct networks the sampler can draw, where known

    def __post_init__(self) -> None:
        self.seen: set[str] = set()
        self._estimates: dict[str, Metrics] = {}
        self._metrics: dict[str, Metrics] = {}  # evaluated by this problem, so a repeat is not evaluated again
        self._bar: tqdm | None = None
        self._search: str | None = None  # the algorithm that ran, once one has
        self._objectives: tuple[str, ...] = ()  # metrics the running algorithm ranks by
        self.evaluated = 0  # real evaluator calls made by this process

    @property
    def world_size(self) -> int:
        """How many processes share the evaluations (algorithms may size their batches by it)."""
        return self.group.world_size

    # ---- cheap side ------------------------------------------------------------------------------
    def estimated(self, arch: Arch, key: str | None = None) -> Metrics:
        """The cheap metrics of the network ``arch``'s key names (see :meth:`_evaluate`), cached by key
        (``key``: ``space.to_string(arch)`` where the caller has it)."""
        key = key or self.space.to_string(arch)
        if key not in self._estimates:
            self._estimates[key] = dict(self.estimate(self.network(arch, key))) if self.estimate else {}
        return self._estimates[key]

    def network(self, arch: Arch, key: str | None = None) -> Arch:
        """The network ``arch``'s key names: ``space.parse(key)`` where the space parses its strings (this
        project's do), else ``arch`` itself (a plain :class:`search.space.CategoricalSpace`)."""
        parse = getattr(self.space, "parse", None)
        return parse(key or self.space.to_string(arch)) if parse else dict(arch)

    def plausible(self, arch: Arch, key: str | None = None) -> bool:
        """No bound on an estimated metric is broken (bounds on evaluated metrics are checked later)."""
        cheap = self.estimated(arch, key)
        return all(b.holds(cheap) for b in self.bounds if b.metric in cheap)

    def capped(self, evaluations: int) -> int:
        """``evaluations``, or :attr:`available` where the bounds hold fewer networks (a budget near the fastest
        subnet): the search then evaluates every one of them, and says so, instead of failing to draw more."""
        if self.available is None or evaluations <= self.available:
            return evaluations
        if self.group.is_main:
            print(f"note: only {int(self.available)} networks are predicted within the budget: evaluating all of "
                  f"them, not {evaluations}", file=sys.stderr)
        return int(self.available)

    def sample(self, rng: random.Random) -> Arch:
        """A random architecture drawn with ``rng``: from ``sampler`` if given, else ``space.sample``. Algorithms
        take every random (not bred) candidate from here, through :meth:`draw` or :meth:`draw_many`."""
        return (self.sampler or self.space.sample)(rng)

    def draw(self, make: Callable[[], Arch], exclude: Collection[str] = ()) -> Arch:
        """An architecture from ``make()`` that is new (not seen, not in ``exclude``) and plausible; a clear
        error if none turns up."""
        for _ in range(self.max_tries):
            arch = make()
            key = self.space.to_string(arch)
            if key not in self.seen and key not in exclude and self.plausible(arch, key):
                return arch
        bounds = ", ".join(map(str, self.bounds)) or "none"
        raise UserError(f"no new feasible architecture in {self.max_tries} tries (bounds: {bounds}): the space "
                        "is exhausted or the constraints are too tight; loosen them or evaluate fewer")

    def draw_many(self, make: Callable[[], Arch], count: int) -> list[Arch]:
        """``count`` distinct new plausible architectures from ``make()``: a batch for :meth:`run_many`.

        The draws are those ``count`` calls of :meth:`draw` would make with each evaluated in between, since
        what is excluded (seen or already in the batch) is the same set either way.
        """
        archs: list[Arch] = []
        keys: set[str] = set()
        for _ in range(count):
            archs.append(self.draw(make, keys))
            keys.add(self.space.to_string(archs[-1]))
        return archs

    # ---- expensive side --------------------------------------------------------------------------
    def run(self, arch: Arch, generation: int = 0) -> Record:
        """Evaluate ``arch`` (or replay it from the journal) and append it to the history."""
        return self.run_many([arch], generation)[0]

    def run_many(self, archs: Sequence[Arch], generation: int = 0) -> list[Record]:
        """Evaluate a batch (shared over the ranks), append one record per architecture to the history, in order.

        An architecture in the journal is replayed, one this problem already evaluated (earlier or in the same
        batch) is not evaluated again. With one process each evaluation is journalled at once; with several,
        rank 0 journals the batch once every rank's metrics have arrived.
        """
        keys = [self.space.to_string(arch) for arch in archs]
        todo: dict[str, Arch] = {}
        for key, arch in zip(keys, archs):
            if key in self._metrics or key in todo:
                continue
            known = self.journal.get(key) if self.journal is not None else None
            if known is None:
                todo[key] = arch
            else:
                self._metrics[key] = known
                self.replayed += 1
        if self.evaluate_many:
            fresh = self._evaluate_batch(todo)
        else:
            fresh = self.group.map(self._evaluate, list(todo.values()))
            if self._bar is not None and self.world_size > 1:
                self._bar.update(len(fresh) - len(range(self.group.rank, len(fresh), self.world_size)))
        self._metrics.update(zip(todo, fresh))
        if self.journal is not None and (self.world_size > 1 or self.evaluate_many) and fresh:
            self.journal.put_many(dict(zip(todo, fresh)), save=self.group.is_main)
        records = [self._record(arch, key, generation) for arch, key in zip(archs, keys)]
        if self._bar is not None:
            self._bar.update(len(records) - len(fresh))  # the replayed and repeated ones
        return records

    def _evaluate_batch(self, todo: Mapping[str, Arch]) -> list[Metrics]:
        """The batch ``todo`` (key -> architecture) through ``evaluate_many`` on this rank, estimates added."""
        if not todo:
            return []
        networks = [self.network(arch, key) for key, arch in todo.items()]
        evaluated = list(self.evaluate_many(networks))
        if len(evaluated) != len(networks):
            raise UserError(f"evaluate_many returned {len(evaluated)} results for {len(networks)} architectures; "
                            "it must return one dict of metrics per architecture, in order")
        fresh = [{**self.estimated(arch, key), **m} for (key, arch), m in zip(todo.items(), evaluated)]
        self.evaluated += len(fresh)
        for metrics in fresh[:1]:
            self._check_names(metrics)
        if self._bar is not None:
            self._bar.update(len(fresh))
        return fresh

    def _evaluate(self, arch: Arch) -> Metrics:
        """One real evaluation on this rank (estimated metrics included), of the network ``arch``'s key names.

        That network is :meth:`network`: for NAS-Bench-201 the representative of the cell's class, which
        may run other ops than ``arch`` (two convs from the input where it runs one and a skip), so it is what
        is estimated and scored, as it is what an export, retraining or ensemble of that key builds.
        """
        key = self.space.to_string(arch)
        metrics = {**self.estimated(arch, key), **self.evaluate(self.network(arch, key))}
        self.evaluated += 1
        if self.journal is not None and self.world_size == 1:
            self.journal.put(key, metrics)  # at once: an interruption loses nothing
        self._check_names(metrics)  # on the first evaluation, not after a batch of them
        if self._bar is not None:
            self._bar.update(1)
        return metrics

    def _record(self, arch: Arch, key: str, generation: int) -> Record:
        metrics = self._metrics[key]
        self._check_names(metrics)
        record = Record(dict(arch), key, dict(metrics), generation, all(b.holds(metrics) for b in self.bounds))
        self.seen.add(key)
        self.history.append(record)
        return record

    def _check_names(self, metrics: Mapping[str, Any]) -> None:
        """Refuse a bound or objective naming a metric that ``metrics`` (one evaluation's) lacks, or an
        objective that is not a number."""
        given = ", ".join(sorted(metrics))
        for bound in self.bounds:
            if bound.metric not in metrics:
                raise UserError(f"the bound on {bound.metric!r} names a metric that neither the evaluator nor the "
                                f"estimator returns (they give: {given})")
        for name in self._objectives:
            if name not in metrics:
                raise UserError(f"the objective {name!r} names a metric that neither the evaluator nor the "
                                f"estimator returns (they give: {given}); use one of those")
            try:
                float(metrics[name])
            except (TypeError, ValueError):
                raise UserError(f"the objective {name!r} must be a number, but the evaluator gives "
                                f"{metrics[name]!r}") from None

    @contextlib.contextmanager
    def session(self, total: int, name: str, objectives: Sequence[str] = ()) -> Iterator[None]:
        """The run of algorithm ``name`` on this problem, with a progress bar over ``total`` evaluations.

        ``objectives`` are the metrics it ranks by: each is checked on the first evaluation's metrics, so a
        misspelt one costs one evaluation, not a search. A problem holds the history of one search, so a
        second session, or one after records were added outside a session, is refused before anything runs.
        """
        if self._search is not None or self.history:
            ran = f"ran {self._search}" if self._search else "holds records run outside a search"
            raise UserError(f"this Problem already {ran} ({len(self.history)} records); a Problem holds one "
                            f"search: make a new one for {name} (pass it the same Journal to replay evaluations)")
        bad = [o for o in objectives if not isinstance(o, str)]
        if bad:
            raise UserError(f"an objective is the name of a metric (a string), got {bad[0]!r}")
        self._search, self._objectives = name, tuple(objectives)
        with tqdm(total=total, desc=name, unit="arch", disable=not (self.progress and self.group.is_main),
                  dynamic_ncols=True) as bar:
            self._bar = bar
            try:
                yield
            finally:
                self._bar, self._objectives = None, ()


def value(record: Record, objective: str, maximize: bool = True) -> float:
    """The objective as a number to maximise; infeasible records, and a NaN objective, rank below the rest."""
    if not record.feasible:
        return -math.inf
    v = float(record.metrics[objective])
    if math.isnan(v):
        return -math.inf
    return v if maximize else -v


def best(records: Sequence[Record], objective: str, maximize: bool = True) -> Record | None:
    """The feasible record with the best objective (first on ties), or None."""
    feasible = [r for r in records if r.feasible]
    return max(feasible, key=lambda r: value(r, objective, maximize)) if feasible else None


def check_common(evaluations: int, seed: int) -> random.Random:
    if not isinstance(evaluations, int) or evaluations < 1:
        raise UserError(f"the number of evaluations must be a positive integer, got {evaluations!r}")
    return random.Random(seed)
