"""CIFAR-10 test accuracy of all 15,625 NAS-Bench-201 cells, read from the ``analog-nasbench`` package.

    python bench/nb201_published.py      # self-check: prints the evidence for the op ids and the edge order

A bench-only dependency (``pip install analog-nasbench``), never part of the product's install; nothing here
imports ``supernet/`` or ``search/``.

What the numbers are -- read before quoting them as "NAS-Bench-201's": the package (AnalogNAS-Bench, 0.1.3)
ships one pickle, ``analognasbench/data.anb``: a dict from a 6-tuple of op ids to a record with 14 fields
(``baseline_accuracy``, ``ptq_accuracy``, ``qat_accuracy``, ``noisy_accuracy``, ``analog_accuracy`` and eight
drift figures). None of them is NAS-Bench-201's own table. ``baseline_accuracy``, the one used here, is
AnalogNAS-Bench's *own* digital retraining of each cell: 200 epochs on the 50,000 CIFAR-10 training images,
SGD with Nesterov momentum 0.9, lr 0.1 cosine to 0, weight decay 5e-4, batch 256 (NAS-Bench-201's recipe),
one seed per cell, then top-1 on the 10,000 test images averaged over 25 passes (its generation script,
``analognasbench/training_script.py`` in IBM/analog-nas, applies the training crop and flip to the test
images too; all values but one are multiples of 0.0004 % = 0.01 % / 25, which fits). It is therefore the same space
and nearly the same training as the published table, but not its figures: its best cell reads 94.07 % (the
published best is 94.37 %), the ResNet cell 93.44 % (published 93.97 %). The other accuracy fields are analog
or quantised, and so not wanted here. Values are in percent.

Cells are keyed in the package by a tuple of op ids in NASLib's order (the package built its networks with
NASLib's ``NasBench201SearchSpace.set_spec``): positions are the edges 0->1, 0->2, 0->3, 1->2, 1->3, 2->3,
and ids are 0 skip_connect, 1 none, 2 nor_conv_3x3, 3 nor_conv_1x1, 4 avg_pool_3x3. The self-check verifies
this from the accuracies themselves; reversing the cell (node i <-> 3 - i) leaves every check that the data
allows unchanged, so the edge order is settled by the data only up to that reversal, and by NASLib's edge
list beyond it (see ``evidence``).

The pickle is read with an unpickler that admits only the package's two record classes (mapped to a plain
stand-in), so no code from it runs and neither pandas nor the removed ``pkg_resources``, which the package's
own ``AnalogNASBench`` class imports, is needed.
"""
from __future__ import annotations

import functools
import importlib.util
import itertools
import pickle
import random
import statistics
import sys
from pathlib import Path
from typing import Iterable, Mapping

INSTALL = "pip install analog-nasbench"
FIELD = "baseline_accuracy"
CELLS = 15_625
OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")  # package op id -> name
PACKAGE_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))  # package tuple position -> edge
STRING_EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # order of the edges in an arch string
Cell = dict[tuple[int, int], str]


class MissingPackage(ImportError):
    """analog-nasbench is not installed (it is a bench-only dependency)."""


class _Record:
    """Stand-in for the package's ``Architecture`` and ``DriftMeasurement``: unpickling fills ``__dict__``."""


class _RecordsOnly(pickle.Unpickler):
    """Admits the package's two record classes and nothing else, so loading the data runs none of its code."""

    def find_class(self, module: str, name: str) -> type:
        if module == "analognasbench.data" and name in ("Architecture", "DriftMeasurement"):
            return _Record
        raise pickle.UnpicklingError(f"analog-nasbench data refers to {module}.{name}, not a record class")


def parse_arch(arch: str) -> Cell:
    """``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` as {(from, to): op}; a malformed string is a ValueError."""
    expected = "an arch string like |nor_conv_3x3~0|+|none~0|skip_connect~1|+|skip_connect~0|none~1|none~2|"
    nodes = arch.split("+") if isinstance(arch, str) else []
    if len(nodes) != 3:
        raise ValueError(f"{arch!r} is not {expected}")
    cell: Cell = {}
    for target, node in enumerate(nodes, start=1):
        tokens = node.split("|")
        if len(tokens) != target + 2 or tokens[0] or tokens[-1]:
            raise ValueError(f"{arch!r} is not {expected}")
        for source, token in enumerate(tokens[1:-1]):
            op, _, index = token.partition("~")
            if op not in OPS or index != str(source):
                raise ValueError(f"{arch!r}: edge {token!r} into node {target} should be OP~{source} "
                                 f"with OP one of {', '.join(OPS)}")
            cell[(source, target)] = op
    return cell


def format_arch(cell: Mapping[tuple[int, int], str]) -> str:
    """The arch string of {(from, to): op}, edges in the benchmark's order."""
    node = lambda target: "|" + "|".join(f"{cell[(s, target)]}~{s}" for s in range(target)) + "|"
    return "+".join(node(target) for target in (1, 2, 3))


def output_reachable(arch: str) -> bool:
    """Whether some path of non-``none`` edges leads from the input node to the output node."""
    cell = parse_arch(arch)
    reached = {0}
    for target in (1, 2, 3):
        if any(cell[(s, target)] != "none" for s in reached):
            reached.add(target)
    return 3 in reached


def _data_path() -> Path:
    """The package's ``data.anb``, found without importing the package (its import needs pandas)."""
    spec = importlib.util.find_spec("analognasbench")
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackage(f"the NAS-Bench-201 accuracies come from analog-nasbench, not installed: {INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data.anb"
    if not path.is_file():
        raise MissingPackage(f"analog-nasbench has no {path}; reinstall it: {INSTALL}")
    return path


@functools.cache
def _package_table() -> dict[tuple[int, ...], float]:
    """{package op-id tuple: ``baseline_accuracy``}, read and checked once per process."""
    path = _data_path()
    with path.open("rb") as handle:
        records = _RecordsOnly(handle).load()
    keys = set(itertools.product(range(len(OPS)), repeat=len(PACKAGE_EDGES)))
    if not isinstance(records, dict) or set(records) != keys:
        raise ValueError(f"{path} does not hold the {CELLS} cells keyed by op-id tuples; reinstall: {INSTALL}")
    return {key: float(getattr(record, FIELD)) for key, record in records.items()}


def package_key_to_arch(key: Iterable[int]) -> str:
    """The arch string of a package key (op ids at the edges of ``PACKAGE_EDGES``)."""
    return format_arch({edge: OPS[op] for edge, op in zip(PACKAGE_EDGES, key)})


@functools.cache
def _arch_table() -> dict[str, float]:
    return {package_key_to_arch(key): accuracy for key, accuracy in _package_table().items()}


def all_published() -> dict[str, float]:
    """CIFAR-10 test top-1 in percent of all 15,625 cells, keyed by arch string (a fresh dict each call)."""
    return dict(_arch_table())


def published_accuracy(arch_string: str) -> float:
    """CIFAR-10 test top-1 in percent (``baseline_accuracy``, see the module note) of one cell."""
    return _arch_table()[format_arch(parse_arch(arch_string))]


# ---------------------------------------------------------------------------------------------------------
# Evidence for the mapping, from the accuracies alone (what ``python bench/nb201_published.py`` prints).

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
RESNET = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
PATHS = {"0-3": [(0, 3)], "0-1-3": [(0, 1), (1, 3)], "0-2-3": [(0, 2), (2, 3)],
         "0-1-2-3": [(0, 1), (1, 2), (2, 3)]}


def single_path(op: str, path: str) -> str:
    """The cell whose only non-``none`` edges are ``op`` along one input-to-output path."""
    return format_arch({edge: op if edge in PATHS[path] else "none" for edge in STRING_EDGES})


def uniform(op: str) -> str:
    """The cell with ``op`` on all six edges."""
    return format_arch({edge: op for edge in STRING_EDGES})


def live_form(arch: str) -> str:
    """The cell with every edge off all input-to-output paths set to ``none``: a dead edge changes nothing,
    so cells of equal live form are the same network (NAS-Bench-201's isomorphic cells of this kind)."""
    cell = parse_arch(arch)
    forward, backward = {0}, {3}
    for target in (1, 2, 3):
        if any(cell[(s, target)] != "none" and s in forward for s in range(target)):
            forward.add(target)
    for source in (2, 1, 0):
        if any(cell[(source, t)] != "none" and t in backward for t in range(source + 1, 4)):
            backward.add(source)
    return format_arch({(s, t): op if s in forward and t in backward else "none" for (s, t), op in cell.items()})


def _orders_matching_chance() -> list[tuple[tuple[int, int], ...]]:
    """Every order of the six package positions under which 'output unreachable' is exactly 'at 10 %'."""
    table = _package_table()
    none = OPS.index("none")
    matching = []
    for order in itertools.permutations(PACKAGE_EDGES):
        if all(output_reachable(format_arch({edge: "skip_connect" if key[p] != none else "none"
                                             for p, edge in enumerate(order)})) == (accuracy != 10.0)
               for key, accuracy in table.items()):
            matching.append(order)
    return matching


def reversed_arch(arch: str) -> str:
    """The cell mirrored node i <-> 3 - i (edge s->t becomes 3-t -> 3-s): the one other edge order the data allows."""
    cell = parse_arch(arch)
    return format_arch({(3 - t, 3 - s): op for (s, t), op in cell.items()})


def _average_ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2
        start = end + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float:
    """Rank correlation, ties given their average rank."""
    rx, ry = _average_ranks(xs), _average_ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5


def evidence(orders: bool = True) -> list[str]:
    """Lines of figures that tie the op ids and the edge order to facts of NAS-Bench-201."""
    table = all_published()
    values = sorted(table.values())
    ranked = sorted(table, key=table.get, reverse=True)
    fmt = lambda arch: f"{table[arch]:.2f}"
    lines = [f"source: analog-nasbench {FIELD} (AnalogNAS-Bench's own 200-epoch digital training), percent",
             f"cells {len(table)}: min {values[0]:.2f}  median {statistics.median(values):.2f}  "
             f"max {values[-1]:.2f}  ({ranked[0]})"]

    dead = [a for a in table if not output_reachable(a)]
    live = [table[a] for a in table if output_reachable(a)]
    lines.append(f"unreachable output (none on every path): {len(dead)} cells, accuracy "
                 f"{min(table[a] for a in dead):.2f}..{max(table[a] for a in dead):.2f}; reachable ones: "
                 f"min {min(live):.2f}")
    if orders:
        found = _orders_matching_chance()
        lines.append(f"orders of the 6 positions (of 720) under which exactly the unreachable cells sit at "
                     f"10 %: {len(found)}: " + "; ".join(" ".join(f"{s}{t}" for s, t in o) for o in found)
                     + "  (an order and its reversal i<->3-i: the data cannot tell these apart)")

    for op in ("skip_connect", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3"):
        paths = "  ".join(f"{p} {fmt(single_path(op, p))}" for p in PATHS)
        lines.append(f"{op:>13} alone on one path: {paths}  |  on all 6 edges: {fmt(uniform(op))}")
    lines.append("  (skip along any path is the identity network: equal figures only for skip_connect)")

    pool_skip = [table[a] for a in table if set(parse_arch(a).values()) <= {"skip_connect", "avg_pool_3x3"}]
    conv_only = [table[a] for a in table if set(parse_arch(a).values()) <= {"nor_conv_3x3", "nor_conv_1x1"}]
    lines.append(f"cells of skip/pool only ({len(pool_skip)}): max {max(pool_skip):.2f}; of convolutions only "
                 f"({len(conv_only)}): min {min(conv_only):.2f}")
    lines.append(f"all nor_conv_3x3: {fmt(uniform('nor_conv_3x3'))}, rank {ranked.index(uniform('nor_conv_3x3')) + 1}"
                 f" of {len(table)}; NAS-Bench-201's best cell: {fmt(BEST)} (published 94.37), rank "
                 f"{ranked.index(BEST) + 1}; ResNet cell: {fmt(RESNET)} (published 93.97)")
    top = [op for arch in ranked[:50] for op in parse_arch(arch).values()]
    lines.append("ops on the edges of the 50 best cells: "
                 + ", ".join(f"{op} {top.count(op)}" for op in sorted(OPS, key=top.count, reverse=True)))

    groups: dict[str, list[float]] = {}
    for arch, accuracy in table.items():
        if accuracy != 10.0:
            groups.setdefault(live_form(arch), []).append(accuracy)
    members = [g for g in groups.values() if len(g) > 1]
    rng = random.Random(0)
    within = [abs(a - b) for a, b in (rng.sample(rng.choices(members, [len(g) for g in members])[0], 2)
                                      for _ in range(20_000))]
    across = [abs(table[rng.choice(ranked)] - table[rng.choice(ranked)]) for _ in range(20_000)]
    lines.append(f"isomorphic cells (same network once dead edges are dropped): {sum(map(len, members))} cells "
                 f"in {len(members)} groups; two of one group differ by a median {statistics.median(within):.2f}, "
                 f"two random cells by {statistics.median(across):.2f}")
    archs = list(table)
    mirrored = [table[reversed_arch(arch)] for arch in archs]
    lines.append(f"if the edge order were the mirrored one instead, the ranking would be Spearman "
                 f"{spearman([table[a] for a in archs], mirrored):.3f} to this one (median |change| "
                 f"{statistics.median(abs(table[a] - m) for a, m in zip(archs, mirrored)):.2f} points)")
    return lines


def main() -> int:
    try:
        lines = evidence()
    except MissingPackage as error:
        print(error, file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
