"""The ``nb201`` family: NAS-Bench-201's cell space (Dong & Yang, ICLR 2020) for CIFAR-10.

A cell is a DAG of four nodes; node ``i`` sums one operation applied to each earlier node ``j``, so a cell
is six edges ``j -> i``, each one of :data:`OPS`. The network (built by :mod:`supernet.nb201_model`) is a
3x3 stem, three stages of ``cells`` copies of the *same* cell at ``channels``, 2x and 4x that width,
joined by two residual reduction blocks, then batch norm, ReLU, global pooling and a linear classifier.

An architecture is a flat dict with one key per edge, in the benchmark's order::

    {"node1.in0": "nor_conv_3x3", "node2.in0": "none", "node2.in1": "skip_connect", ...}

and its raw string is the benchmark's (:meth:`NB201Space.arch_string`)::

    |nor_conv_3x3~0|+|none~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|

Many of the 15,625 cells compute the same function (a ``none`` edge, or an edge out of a node that is
zero, adds nothing; ``skip_connect`` passes its input; sums are unordered). :meth:`NB201Space.to_string`,
the cache key everywhere, is the raw string of one fixed member of the cell's class (the first in
enumeration order), so a search never evaluates one function twice. Classes follow the benchmark's own
rule, ``Structure.to_unique_str(consider_zero=True)``: 6,466 of them.

This module imports no torch: the search core stays importable without it.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import random
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Mapping, Sequence

from supernet.errors import UserError
from supernet.family import SlotLayout, Unit, UnitCosts, register_family, register_space
from supernet.space import _option_index, arch_from_indices, check_choices, index_list, malformed_config, parse_arch

Arch = dict[str, str]

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")  # the benchmark's order
NODES = 4  # node 0 is the cell's input, node 3 its output
EDGES = tuple((i, j) for i in range(1, NODES) for j in range(i))  # (target, source), the benchmark's order
KEYS = tuple(f"node{i}.in{j}" for i, j in EDGES)
CELLS = len(OPS) ** len(EDGES)  # 15,625

# CIFAR-10's training-set per-channel statistics of pixels in [0, 1], as the field normalises with them; the
# network's first layer applies them, so data, exported models and latency units all take plain pixels.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# The most a config may ask for: far beyond the published C=16, N=5, far below what would exhaust memory.
LIMITS = {"channels": 1024, "cells": 32, "in_channels": 64, "input_size": 4096, "num_classes": 100_000}
MAX_WEIGHTS = 5 * 10 ** 8  # 2 GB of float32 weights, as for mbv3


@dataclass(frozen=True)
class NB201Config:
    """NAS-Bench-201's macro skeleton: ``channels`` (C) in the first stage, ``cells`` (N) per stage."""

    family: ClassVar[str] = "nb201"
    name: str
    channels: int
    cells: int
    in_channels: int = 3
    input_size: int = 32
    num_classes: int = 10
    mean: tuple[float, ...] = CIFAR10_MEAN
    std: tuple[float, ...] = CIFAR10_STD

    def __post_init__(self) -> None:
        """Refuse what no network can be built from, before anything is built (a corrupt or crafted file)."""
        if not isinstance(self.name, str):
            raise ValueError("name must be text")
        stats = (*self.mean, *self.std)
        if not (isinstance(self.mean, tuple) and isinstance(self.std, tuple)
                and len(self.mean) == len(self.std) == self.in_channels
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e3 for v in stats)
                and all(v > 0 for v in self.std)):
            raise ValueError("mean and std must be one number per input channel, std positive")
        for key, limit in LIMITS.items():
            value = getattr(self, key)
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
            if value > limit:
                raise ValueError(f"{key} {value} is more than the {limit} a space may ask for")
        if self.input_size % 4:
            raise ValueError(f"input_size {self.input_size} must be a multiple of 4 (two stride-2 reductions)")
        if self.largest_weights() > MAX_WEIGHTS:
            raise ValueError(f"its supernet would hold about {self.largest_weights():.2g} weights, more than the "
                             f"{MAX_WEIGHTS:.0g} this tool builds")

    def largest_weights(self) -> int:
        """The convolution and classifier weights of the supernet (every edge holds a 1x1 and a 3x3)."""
        c = self.channels
        cells = sum(self.cells * len(EDGES) * 10 * (c * 2 ** t) ** 2 for t in range(3))
        reductions = sum(10 * (c * 2 ** t) * (c * 2 ** (t + 1)) + 9 * (c * 2 ** (t + 1)) ** 2 for t in range(2))
        return self.in_channels * c * 9 + cells + reductions + 4 * c * self.num_classes

    def stage_channels(self) -> tuple[int, int, int]:
        return (self.channels, 2 * self.channels, 4 * self.channels)

    def stage_sizes(self) -> tuple[int, int, int]:
        return (self.input_size, self.input_size // 2, self.input_size // 4)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "") -> "NB201Config":
        """Rebuild from :meth:`to_dict` output; ``source`` names the file in the one-line error."""
        try:
            fields = dict(data)
            if fields.pop("family", cls.family) != cls.family:
                raise ValueError(f"it is of family {data['family']!r}, not {cls.family!r}")
            for key in ("mean", "std"):
                if isinstance(fields.get(key), list):
                    fields[key] = tuple(fields[key])
            return cls(**fields)
        except (KeyError, TypeError, ValueError) as err:
            raise malformed_config(err, source) from None


def unique_str(ops: Sequence[str]) -> str:
    """The benchmark's isomorphism key of a cell (``Structure.to_unique_str(consider_zero=True)``).

    Each node becomes a term: ``#`` for zero, node 0 is ``0``; a ``none`` edge or an edge out of a node
    whose term is ``#`` gives ``#``, ``skip_connect`` gives its input's term, any other op ``(term)@op``;
    a node is the sorted sum of its edges' terms. As in the benchmark, only a node all of whose terms are
    one ``#`` (node 1) counts as zero downstream: a sum ``#+#`` does not.
    """
    terms = {0: "0"}
    for i in range(1, NODES):
        parts = []
        for j in range(i):
            op = ops[EDGES.index((i, j))]
            if op == "none" or terms[j] == "#":
                parts.append("#")
            elif op == "skip_connect":
                parts.append(terms[j])
            else:
                parts.append(f"({terms[j]})@{op}")
        terms[i] = "+".join(sorted(parts))
    return terms[NODES - 1]


@functools.lru_cache(maxsize=1)
def _classes() -> tuple[dict[str, tuple[str, ...]], tuple[tuple[str, ...], ...]]:
    """``(isomorphism key -> representative cell, representatives in enumeration order)``; the
    representative of a class is its first member in :meth:`NB201Space.cells` order."""
    first: dict[str, tuple[str, ...]] = {}
    for ops in itertools.product(OPS, repeat=len(EDGES)):
        first.setdefault(unique_str(ops), ops)
    return first, tuple(first.values())


class NB201Space:
    """NAS-Bench-201's cells as six named categorical choices (one per edge), with the benchmark's strings.

    ``sample``, ``mutate`` and ``crossover`` take an explicit :class:`random.Random`, as every space here.
    """

    def __init__(self, config: NB201Config):
        self.config = config
        self.choices: dict[str, tuple[str, ...]] = {key: OPS for key in KEYS}

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def num_stages(self) -> int:
        """Stages of the network (of ``cells`` cells at one width each): a subnet's ``stages``."""
        return len(self.config.stage_channels())

    # ---- validation and strings -------------------------------------------------------------------
    def validate(self, arch: Mapping[str, Any]) -> Arch:
        """Return a clean copy of ``arch`` in key order, or raise :class:`UserError` naming the bad entry."""
        return check_choices(self.choices, arch, self.name)

    def _ops(self, arch: Mapping[str, Any]) -> tuple[str, ...]:
        arch = self.validate(arch)
        return tuple(arch[key] for key in KEYS)

    def arch_string(self, arch: Mapping[str, Any]) -> str:
        """The benchmark's string of exactly this cell (``|op~j|`` per edge, nodes joined by ``+``)."""
        return _format(self._ops(arch))

    def to_string(self, arch: Mapping[str, Any]) -> str:
        """Canonical string: the raw string of the representative of ``arch``'s class, so that it is equal
        for two cells exactly when the benchmark counts them as the same network."""
        return _format(self.canonical(arch))

    def canonical(self, arch: Mapping[str, Any]) -> tuple[str, ...]:
        """The ops, in key order, of the representative of ``arch``'s class."""
        return _classes()[0][unique_str(self._ops(arch))]

    def from_string(self, text: str) -> Arch:
        """Parse a benchmark string (``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|``) into exactly that cell.

        Within a node the edges may come in any order; each earlier node must feed it exactly once.
        """
        if not isinstance(text, str):
            raise UserError(f"an architecture string must be text, got {type(text).__name__}")
        example = _format(("nor_conv_3x3",) * len(EDGES))
        nodes = text.strip().split("+")
        if len(nodes) != NODES - 1:
            raise UserError(f"architecture string {text!r} has {len(nodes)} nodes separated by '+', a "
                            f"NAS-Bench-201 cell has {NODES - 1} (expected e.g. {example!r})")
        arch: dict[str, str] = {}
        for i, node in enumerate(nodes, start=1):
            if len(node) < 2 or node[0] != "|" or node[-1] != "|":
                raise UserError(f"architecture string {text!r}: node {i} {node!r} must start and end with '|'")
            for edge in node[1:-1].split("|"):
                op, tilde, source = edge.partition("~")
                if not tilde or op not in OPS or source not in {str(j) for j in range(i)}:
                    raise UserError(f"architecture string {text!r}: node {i} edge {edge!r} is not of the form "
                                    f"'op~j' with op one of {', '.join(OPS)} and j in 0..{i - 1}")
                key = f"node{i}.in{source}"
                if key in arch:
                    raise UserError(f"architecture string {text!r}: node {i} reads node {source} twice")
                arch[key] = op
            missing = [j for j in range(i) if f"node{i}.in{j}" not in arch]
            if missing:
                raise UserError(f"architecture string {text!r}: node {i} has no edge from node {missing[0]}")
        return self.validate(arch)

    def parse(self, value: str | Mapping[str, Any]) -> Arch:
        """Accept a benchmark string, a JSON object text, or a dict; return a validated dict."""
        return parse_arch(self, value)

    # ---- special members and sampling ---------------------------------------------------------------
    def largest(self) -> Arch:
        return dict.fromkeys(KEYS, "nor_conv_3x3")

    def smallest(self) -> Arch:
        return dict.fromkeys(KEYS, "none")

    def sample(self, rng: random.Random) -> Arch:
        """Every edge drawn uniformly and independently: uniform over the 15,625 cells."""
        return {key: rng.choice(OPS) for key in KEYS}

    def mutate(self, arch: Mapping[str, Any], rng: random.Random, prob: float = 0.1) -> Arch:
        """Redraw each edge with probability ``prob``; the child always computes another function."""
        arch = self.validate(arch)
        child = {key: (rng.choice(OPS) if rng.random() < prob else arch[key]) for key in KEYS}
        while self.to_string(child) == self.to_string(arch):
            child[rng.choice(KEYS)] = rng.choice(OPS)
        return child

    def crossover(self, a: Mapping[str, Any], b: Mapping[str, Any], rng: random.Random) -> Arch:
        """Each edge taken from either parent with equal probability."""
        a, b = self.validate(a), self.validate(b)
        return {key: (a[key] if rng.random() < 0.5 else b[key]) for key in KEYS}

    def size(self) -> int:
        """Number of distinct networks (classes of cells computing the same function): 6,466."""
        return len(_classes()[1])

    def enumerate(self) -> Iterator[Arch]:
        """Every distinct network once: the representative of each class, in enumeration order."""
        for ops in _classes()[1]:
            yield dict(zip(KEYS, ops))

    def cells(self) -> Iterator[Arch]:
        """All 15,625 cells, the last edge varying fastest (the representatives' order)."""
        for ops in itertools.product(OPS, repeat=len(EDGES)):
            yield dict(zip(KEYS, ops))

    def encode(self, arch: Mapping[str, Any]) -> list[float]:
        """Numeric features for surrogate models: one-hot of the op on each edge of the canonical cell, so
        two cells of one class encode alike."""
        return [float(op == option) for op in self.canonical(arch) for option in OPS]

    def to_indices(self, arch: Mapping[str, Any]) -> list[int]:
        """The op index of every edge, in key order."""
        return [OPS.index(op) for op in self._ops(arch)]

    def from_indices(self, indices: Sequence[int]) -> Arch:
        """Inverse of :meth:`to_indices`; anything but six in-range whole numbers is a one-line error."""
        return arch_from_indices(self.choices, indices, self.name)

    # ---- the additive view (supernet.family.SlotLayout) -------------------------------------------------
    def layout(self) -> SlotLayout:
        """Six edges of one slot each; an edge's choice is its op."""
        return SlotLayout(groups=len(EDGES), depths=(1,), choices=len(OPS), split=1)

    def slots(self, arch: Mapping[str, Any]) -> Iterator[tuple[int, int, int]]:
        """``(edge, 0, op index)`` of all six edges of a validated ``arch``: every op of the raw cell runs."""
        for edge, index in enumerate(self.to_indices(arch)):
            yield edge, 0, index

    def to_codes(self, arch: Mapping[str, Any]) -> list[int]:
        """The sampler's code: per edge ``[depth index 0, op index, 0]`` (18 numbers)."""
        return [code for index in self.to_indices(arch) for code in (0, index, 0)]

    def from_codes(self, codes: Sequence[int]) -> Arch:
        """Inverse of :meth:`to_codes`; a code of another shape is a one-line error."""
        codes = index_list(codes)
        width = self.layout().width
        if len(codes) != len(KEYS) * width:
            raise UserError(f"an encoded architecture of space {self.name!r} has {len(KEYS) * width} codes, "
                            f"got {len(codes)}")
        for e, key in enumerate(KEYS):
            _option_index(codes[e * width], f"{key} depth", 1)
            _option_index(codes[e * width + 2], f"{key} split", 1)
        return self.from_indices(codes[1::width])


def _format(ops: Sequence[str]) -> str:
    """The benchmark string of a cell given its ops in key order."""
    nodes = [[] for _ in range(NODES - 1)]
    for (i, j), op in zip(EDGES, ops):
        nodes[i - 1].append(f"{op}~{j}")
    return "+".join(f"|{'|'.join(edges)}|" for edges in nodes)


@register_space("nb201")
def nb201() -> NB201Config:
    """NAS-Bench-201 as published: C=16, N=5 cells per stage, 32x32 RGB, 10 classes (CIFAR-10)."""
    return NB201Config(name="nb201", channels=16, cells=5)


@register_space("nb201-cpu")
def nb201_cpu() -> NB201Config:
    """The same cell space at a width and depth a two-core CPU trains in under an hour: C=8, N=1."""
    return NB201Config(name="nb201-cpu", channels=8, cells=1)


class NB201Family:
    """NAS-Bench-201's cell space: :mod:`supernet.nb201_model` builds the networks."""

    name = "nb201"
    default_sampling = "uniform"
    default_optimizer = "sgd"

    def config_from_dict(self, data: Mapping[str, Any], source: str) -> NB201Config:
        return NB201Config.from_dict(data, source)

    def space(self, config: NB201Config) -> NB201Space:
        return NB201Space(config)

    def supernet(self, config: NB201Config) -> Any:
        from supernet.nb201_model import NB201Supernet
        return NB201Supernet(config)

    def subnet(self, config: NB201Config, arch: Mapping[str, Any]) -> Any:
        from supernet.nb201_model import NB201Subnet
        return NB201Subnet(config, arch)

    def units(self, config: NB201Config) -> Iterator[Unit]:
        from supernet.nb201_model import units
        return units(config)

    def unit_costs(self, config: NB201Config) -> UnitCosts:
        """Stem, the two reduction blocks and the head always; an edge's op runs at each stage's shape once
        per cell of that stage."""
        slots = {(e, 0, o): tuple((f"stage{t}.{op}", config.cells) for t in range(1, 4))
                 for e in range(len(EDGES)) for o, op in enumerate(OPS)}
        return UnitCosts((("stem", 1), ("reduction1", 1), ("reduction2", 1), ("head", 1)), slots)


register_family(NB201Family())
