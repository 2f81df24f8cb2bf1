"""Sample and score many encoded architectures at once: uniformly, or uniformly within a latency window.

Encoding: a space's :meth:`to_codes` in its :class:`supernet.family.SlotLayout`, as an int8 tensor ``[N, K]``
(per group the depth index, then every slot's two choice digits; mbv3: per stage the depth index, then every
block's kernel and expand index). Sampled codes are canonical: slots beyond a group's depth hold index 0, so
*uniform* means uniform over the networks the layout tells apart (mbv3: the distinct networks that
:meth:`Space.size` counts, not the dicts that :meth:`Space.sample` draws; nb201: its 15,625 cells).

Scoring sums a :class:`MetricTable`: a per-slot table ``[S, D, C, M]`` (group, slot, choice ``c = digit0 *
split + digit1``) plus a base ``[M]`` present in every network (mbv3: stem and head). :func:`unit_table`
builds one from per-unit figures through the family's unit costs; :func:`flops_params_table` counts FLOPs
(multiply-adds, as thop counts them) and params of every unit; ``search.latency`` adds the latency part.

Windowed sampling is exactly uniform (up to float64 rounding of the counts) over the networks whose
*quantised* latency lies in the window: every block's latency and the base are rounded to integer ticks of
``resolution`` ms and a network is in ``[lo, hi]`` when ``ceil(lo / res) <= sum of its ticks <= floor(hi / res)``.
Dynamic programming counts the networks per tick sum; sampling walks exact conditional distributions (total,
each stage's sum, each stage's depth, each block's choice), never rejecting.
:class:`WindowDraws` hands such draws out one at a time to code that draws from a ``random.Random``
(a search's random candidates), a batch per kernel call.

Every op has two paths with identical outputs: the C++ kernels (``csrc/arch_sampler.cpp``) and the numpy /
PyTorch references below, which run when the extension is not built. Both draw from the same counter-based
generator (splitmix64 of seed, architecture index and draw index) and build the counting tables with the same
float operations in the same order, so ``sample(..., seed)`` gives bit-identical codes on both paths.
"""
from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from supernet import family
from supernet.errors import UserError
from supernet.family import Arch, Space
from supernet.kernels import kernel_backend

DEFAULT_RESOLUTION_MS = 0.01
"""Tick of the latency window, 10 us: far below the spread of measured unit latencies, coarse enough that
the counting tables stay small (a few MB for mbv3). A network's quantised latency is within
(number of units) * resolution / 2 of its table latency."""

_CHUNK = 4096  # rows per step of the numpy reference, bounding its temporary memory


# ---- metric tables --------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricTable:
    """Additive per-network metrics: ``base[m] + sum over active blocks of blocks[s, b, c, m]``."""

    names: tuple[str, ...]
    blocks: torch.Tensor  # [S, D, C, M] float64
    base: torch.Tensor  # [M] float64

    def __post_init__(self) -> None:
        if self.blocks.dim() != 4 or self.base.shape != (self.blocks.shape[3],) or len(self.names) != len(self.base):
            raise ValueError("MetricTable: blocks must be [S, D, C, M], base [M] and one name per metric")

    def join(self, other: "MetricTable") -> "MetricTable":
        """Both tables' metrics side by side (this one's first)."""
        return MetricTable(self.names + other.names, torch.cat([self.blocks, other.blocks], 3),
                           torch.cat([self.base, other.base]))

    def column(self, name: str) -> "MetricTable":
        """The table of one metric."""
        if name not in self.names:
            raise UserError(f"metric {name!r} is not in this table ({', '.join(self.names)})")
        m = self.names.index(name)
        return MetricTable((name,), self.blocks[..., m:m + 1].clone(), self.base[m:m + 1].clone())


def thop_ops() -> dict[type, Any]:
    """thop's ``custom_ops`` for the layers it cannot count by itself (functional convolutions and matrix
    products): the audio front end and attention. Every FLOPs count of the package passes them."""
    from supernet.audio import THOP_OPS as AUDIO_OPS
    from supernet.transformer_model import THOP_OPS as TEXT_OPS

    return {**AUDIO_OPS, **TEXT_OPS}


@functools.lru_cache(maxsize=8)
def _count_units(config: Any) -> tuple[dict[str, tuple[float, int]], ...]:
    import thop  # imported here: only this function needs it

    counts = {}
    for key, build, shape in family.units(config):
        module = build()
        macs, _ = thop.profile(module, inputs=(torch.zeros(1, *shape),), custom_ops=thop_ops(), verbose=False)
        counts[key] = (float(macs), sum(p.numel() for p in module.parameters()))
    return (counts,)


def unit_table(config: Any, names: tuple[str, ...], values: Mapping[str, Sequence[float]]) -> MetricTable:
    """The :class:`MetricTable` of per-unit metrics ``values[key]`` (one number per name) of ``config``'s units.

    Each slot choice and the base add up the units they cost (:meth:`supernet.family.Family.unit_costs`),
    each as often as it runs; a slot choice no network uses stays 0.
    """
    space = family.space_of(config)
    layout, costs = space.layout(), family.family_of(config).unit_costs(config)

    def total(parts: Iterable[tuple[str, int]]) -> torch.Tensor:
        out = torch.zeros(len(names), dtype=torch.float64)
        for key, count in parts:
            out += count * torch.tensor([float(v) for v in values[key]], dtype=torch.float64)
        return out

    blocks = torch.zeros(layout.groups, layout.max_depth, layout.choices, len(names), dtype=torch.float64)
    for (g, b, c), parts in costs.slots.items():
        blocks[g, b, c] = total(parts)
    return MetricTable(names, blocks, total(costs.base))


def flops_params_table(config: Any) -> MetricTable:
    """FLOPs (multiply-adds at batch 1, as thop counts them) and parameter counts of every unit of ``config``.

    Each unit of :func:`supernet.family.units` is counted on its own, so the sum over a subnet's units equals
    thop's count and ``sum(p.numel())`` of the extracted subnet.
    """
    counts = _count_units(config)[0]
    return unit_table(config, ("flops", "params"), {key: (f, float(p)) for key, (f, p) in counts.items()})


# ---- encoding -------------------------------------------------------------------------------------
def encode(space: Space, archs: Iterable[Mapping[str, int]]) -> torch.Tensor:
    """int8 codes ``[N, K]`` of :meth:`Space.to_codes` (mbv3: inactive blocks keep their values)."""
    rows = [space.to_codes(arch) for arch in archs]
    layout = space.layout()
    return torch.tensor(rows, dtype=torch.int8).reshape(len(rows), layout.groups * layout.width)


def decode(space: Space, codes: torch.Tensor) -> list[Arch]:
    """The architecture dicts of int8 codes ``[N, K]``."""
    return [space.from_codes(row) for row in codes.tolist()]


def _layout(space: Space) -> tuple[int, int, int, int, list[int]]:
    """The kernels' arguments: groups, slots per group, first and second digit counts, depths."""
    layout = space.layout()
    return layout.groups, layout.max_depth, layout.choices // layout.split, layout.split, list(layout.depths)


# ---- scoring --------------------------------------------------------------------------------------
def _check_score_args(codes: torch.Tensor, table: torch.Tensor, base: torch.Tensor, depths: Sequence[int],
                      num_expands: int) -> None:
    if codes.dim() != 2 or codes.dtype != torch.int8:
        raise ValueError("score_archs: codes must be int8 [N, K]")
    if table.dim() != 4 or table.dtype != torch.float64:
        raise ValueError("score_archs: table must be float64 [S, D, C, M]")
    if base.dim() != 1 or base.dtype != torch.float64 or base.shape[0] != table.shape[3]:
        raise ValueError("score_archs: base must be float64 [M] with M = table.size(3)")
    S, D, C, _ = table.shape
    if num_expands < 1 or C % num_expands:
        raise ValueError("score_archs: table.size(2) must be kernels * num_expands")
    if codes.shape[1] != S * (1 + 2 * D):
        raise ValueError(f"score_archs: codes have {codes.shape[1]} columns, the table implies {S * (1 + 2 * D)}")
    if any(not 1 <= d <= D for d in depths):
        raise ValueError(f"score_archs: a depth is outside [1, {D}]")
    if codes.numel():
        view = codes.reshape(-1, 1 + 2 * D).long()
        if view[:, 0].min() < 0 or view[:, 0].max() >= len(depths):
            raise ValueError(f"score_archs: a depth index is out of range [0, {len(depths)})")
        blocks = view[:, 1:]
        if blocks.min() < 0 or blocks[:, 0::2].max() >= C // num_expands or blocks[:, 1::2].max() >= num_expands:
            raise ValueError("score_archs: a block code is out of range")


def score_archs_reference(codes: torch.Tensor, table: torch.Tensor, base: torch.Tensor, depths: Sequence[int],
                          num_expands: int) -> torch.Tensor:
    """``out[n] = base + sum over stages, then active blocks, of table[s, b, k * E + e]``, in that order.

    Inactive blocks add an exact 0.0, so the sums are bit-identical to the kernel's, which skips them.
    """
    _check_score_args(codes, table, base, depths, num_expands)
    S, D, C, M = table.shape
    width = 1 + 2 * D
    idx = codes.long()
    out = base.expand(idx.shape[0], M).clone()
    depth_values = torch.tensor(list(depths), dtype=torch.int64)
    for s in range(S):
        active_depth = depth_values[idx[:, s * width]] if idx.shape[0] else idx[:, 0]
        for b in range(D):
            choice = idx[:, s * width + 1 + 2 * b] * num_expands + idx[:, s * width + 2 + 2 * b]
            out += torch.where((active_depth > b).unsqueeze(1), table[s, b, choice], 0.0)
    return out


if kernel_backend() == "cpp":
    @torch.library.register_fake("oneshot::score_archs")
    def _score_archs_fake(codes: torch.Tensor, table: torch.Tensor, base: torch.Tensor, depths: list[int],
                          num_expands: int) -> torch.Tensor:
        return table.new_empty((codes.shape[0], table.shape[3]))

    @torch.library.register_fake("oneshot::sample_archs")
    def _sample_archs_fake(n: int, seed: int, num_stages: int, depths: list[int], num_kernels: int,
                           num_expands: int, ticks: torch.Tensor | None = None, lo: int = 0,
                           hi: int = 0) -> torch.Tensor:
        return torch.empty((n, num_stages * (1 + 2 * max(depths))), dtype=torch.int8,
                           device=ticks.device if ticks is not None else "cpu")


def score(space: Space, codes: torch.Tensor, metrics: MetricTable) -> torch.Tensor:
    """float64 ``[N, M]``: the metrics (``metrics.names``) of every encoded architecture, in one call."""
    S, D, _, E, depths = _layout(space)
    if metrics.blocks.shape[:2] != (S, D):
        raise UserError(f"metric table has {tuple(metrics.blocks.shape[:2])} stages x blocks, space "
                        f"{space.name!r} has ({S}, {D})")
    if kernel_backend() == "cpp":
        return torch.ops.oneshot.score_archs(codes, metrics.blocks, metrics.base, depths, E)
    return score_archs_reference(codes, metrics.blocks, metrics.base, depths, E)


def score_python(space: Space, arch: Mapping[str, int], metrics: MetricTable) -> list[float]:
    """One architecture's metrics with plain Python, the per-architecture path the kernels replace."""
    values = metrics.base.tolist()
    table = metrics.blocks
    for s, b, c in space.slots(space.validate(arch)):
        values = [v + x for v, x in zip(values, table[s, b, c].tolist())]
    return values


# ---- counter-based random numbers (identical to csrc/arch_sampler.cpp) ---------------------------
_U64 = np.uint64
_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def _arch_keys(seed: int, start: int, count: int) -> np.ndarray:
    seed_key = _mix(np.array([seed & _MASK64], dtype=_U64))
    return _mix(seed_key + np.arange(start, start + count, dtype=_U64) * _U64(_GOLDEN))


def _draw(keys: np.ndarray, j: int) -> np.ndarray:
    return _mix(keys + _U64(((j + 1) * _GOLDEN) & _MASK64))


def _below(r: np.ndarray, n: int) -> np.ndarray:
    """``floor(r * n / 2^64)`` in 32-bit halves: the 128-bit product the kernel computes."""
    m32 = _U64(0xFFFFFFFF)
    rh, rl = r >> _U64(32), r & m32
    nh, nl = _U64(n >> 32), _U64(n & 0xFFFFFFFF)
    a, b, c = rh * nl, rl * nh, rl * nl
    mid = (c >> _U64(32)) + (a & m32) + (b & m32)
    return rh * nh + (a >> _U64(32)) + (b >> _U64(32)) + (mid >> _U64(32))


def _unit(r: np.ndarray) -> np.ndarray:
    return (r >> _U64(11)).astype(np.float64) * 2.0 ** -53


def _pick_rows(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise inverse CDF as the kernel does it: upper bound of ``u * total``, lower bound of total if past."""
    total = cdf[:, -1]
    idx = (cdf <= (u * total)[:, None]).sum(1)
    past = idx == cdf.shape[1]
    if past.any():
        idx[past] = (cdf[past] < total[past, None]).sum(1)
    return idx


# ---- sampling references ------------------------------------------------------------------------
def _sample_uniform_reference(n: int, seed: int, S: int, depths: list[int], C: int, E: int) -> np.ndarray:
    D = max(depths)
    width = 1 + 2 * D
    per_depth = [C ** d for d in depths]
    if max(per_depth) >= 1 << 63 or sum(per_depth) >= 1 << 63:
        raise ValueError("sample_archs: a stage has 2^63 or more networks")
    total = sum(per_depth)
    out = np.zeros((n, S * width), dtype=np.int8)
    depth_values = np.array(depths)
    for start in range(0, n, _CHUNK * 16):
        rows = slice(start, min(n, start + _CHUNK * 16))
        keys = _arch_keys(seed, start, rows.stop - start)
        for s in range(S):
            x = _below(_draw(keys, s), total)
            di = np.zeros(len(keys), dtype=np.int64)
            for k in range(len(depths) - 1):
                move = (di == k) & (x >= _U64(per_depth[k]))
                x[move] -= _U64(per_depth[k])
                di[move] += 1
            out[rows, s * width] = di
            dv = depth_values[di]
            for b in range(D):
                active = dv > b
                c = (x % _U64(C)).astype(np.int64)
                x //= _U64(C)
                out[rows, s * width + 1 + 2 * b] = np.where(active, c // E, 0)
                out[rows, s * width + 2 + 2 * b] = np.where(active, c % E, 0)
    return out


@dataclass
class _Window:
    """Counting tables of the windowed sampler (the kernel's ``Window``, same layout and arithmetic)."""

    stage_max: list[int]
    suffix: np.ndarray  # [S, nd, D + 1, L + 1]: networks of blocks b.. under depth option di, per tick sum
    counts: np.ndarray  # [T + 1]: networks of the whole space per tick sum (blocks only)
    xlo: int
    xhi: int
    first: np.ndarray  # cumulative counts over tick sums xlo..xhi
    rows: list[tuple[int, np.ndarray]]  # per stage s < S - 1: (first x, conditional CDFs [x, y])


def _window_tables(ticks: np.ndarray, depths: list[int], lo: int, hi: int) -> _Window:
    S, D, C = ticks.shape
    nd = len(depths)
    stage_max = [max(int(sum(ticks[s, b].max() for b in range(d))) for d in depths) for s in range(S)]
    L1 = max(stage_max) + 1
    suffix = np.zeros((S, nd, D + 1, L1))
    F = np.zeros((S, L1))
    for s in range(S):
        for di, dv in enumerate(depths):
            g = suffix[s, di]
            g[dv, 0] = 1.0
            for b in range(dv - 1, -1, -1):
                for c in range(C):
                    shift = int(ticks[s, b, c])
                    if shift < L1:
                        g[b, shift:] += g[b + 1, :L1 - shift]
            F[s] += g[0]
    total_len = sum(stage_max)
    T1 = total_len + 1
    H = np.zeros((S + 1, T1))
    H[S, 0] = 1.0
    for s in range(S - 1, -1, -1):
        for y in range(stage_max[s] + 1):
            f = F[s, y]
            if f != 0.0:
                H[s, y:] += f * H[s + 1, :T1 - y]
    xlo, xhi = max(lo, 0), min(hi, total_len)
    first = np.cumsum(H[0, xlo:xhi + 1]) if xlo <= xhi else np.zeros(0)
    rows = []
    rlo, rhi, suffix_max = xlo, xhi, total_len
    if len(first) and first[-1] > 0:
        for s in range(S - 1):
            x = np.arange(rlo, rhi + 1)[:, None]
            y = np.arange(stage_max[s] + 1)[None, :]
            valid = (y <= x) & (x - y < T1)
            weight = np.where(valid, F[s][y] * H[s + 1][np.clip(x - y, 0, T1 - 1)], 0.0)
            rows.append((rlo, np.cumsum(weight, axis=1)))
            suffix_max -= stage_max[s]
            rlo, rhi = max(rlo - stage_max[s], 0), min(rhi, suffix_max)
    return _Window(stage_max, suffix, H[0], xlo, xhi, first, rows)


def _sample_window_reference(n: int, seed: int, ticks: np.ndarray, depths: list[int], E: int, lo: int,
                             hi: int) -> np.ndarray:
    S, D, C = ticks.shape
    width = 1 + 2 * D
    w = _window_tables(ticks, depths, lo, hi)
    if not len(w.first) or w.first[-1] <= 0:
        raise ValueError(f"sample_archs: the window [{lo}, {hi}] ticks holds no architecture")
    out = np.zeros((n, S * width), dtype=np.int8)
    depth_values = np.array(depths)
    for start in range(0, n, _CHUNK):
        rows = slice(start, min(n, start + _CHUNK))
        keys = _arch_keys(seed, start, rows.stop - start)
        x = w.xlo + _pick_rows(w.first[None, :].repeat(len(keys), 0), _unit(_draw(keys, 0)))
        ys = []
        for s in range(S - 1):
            row_lo, cdf = w.rows[s]
            y = _pick_rows(cdf[x - row_lo], _unit(_draw(keys, 1 + s)))
            ys.append(y)
            x = x - y
        ys.append(x)
        for s in range(S):
            j0 = S + s * (1 + D)
            z = ys[s]
            di = _pick_rows(np.cumsum(w.suffix[s, :, 0][:, z].T, axis=1), _unit(_draw(keys, j0)))
            out[rows, s * width] = di
            dv = depth_values[di]
            for b in range(D):
                rest = z[:, None] - ticks[s, b][None, :]
                weight = np.where(rest >= 0, w.suffix[s, di[:, None], b + 1, np.maximum(rest, 0)], 0.0)
                c = _pick_rows(np.cumsum(weight, axis=1), _unit(_draw(keys, j0 + 1 + b)))
                active = dv > b
                out[rows, s * width + 1 + 2 * b] = np.where(active, c // E, 0)
                out[rows, s * width + 2 + 2 * b] = np.where(active, c % E, 0)
                z = np.where(active, z - ticks[s, b, c], z)
    return out


def sample_archs_reference(n: int, seed: int, num_stages: int, depths: Sequence[int], num_kernels: int,
                           num_expands: int, ticks: torch.Tensor | None = None, lo: int = 0,
                           hi: int = 0) -> torch.Tensor:
    """The numpy reference of ``oneshot::sample_archs``: the same codes, bit for bit."""
    if n < 0:
        raise ValueError(f"sample_archs: n must not be negative, got {n}")
    depths = list(depths)
    if ticks is None:
        codes = _sample_uniform_reference(n, seed, num_stages, depths, num_kernels * num_expands, num_expands)
    else:
        t = ticks.numpy()
        if t.dtype != np.int64 or t.shape != (num_stages, max(depths), num_kernels * num_expands):
            raise ValueError("sample_archs: ticks must be int64 [S, D, C]")
        if t.size and t.min() < 0:
            raise ValueError("sample_archs: ticks must not be negative")
        if lo > hi:
            raise ValueError(f"sample_archs: window lo {lo} > hi {hi}")
        codes = _sample_window_reference(n, seed, t, depths, num_expands, lo, hi)
    return torch.from_numpy(codes)


# ---- modes (supernet.family.SlotLayout.modes) -----------------------------------------------------
def mode_slices(layout: Any, blocks: torch.Tensor) -> list[torch.Tensor]:
    """Per mode, its ``[S, D, mode_choices, ...]`` part of a per-slot table ``[S, D, choices, ...]``."""
    size = layout.mode_choices
    return [blocks[:, :, m * size:(m + 1) * size] for m in range(layout.modes)]


def extremes(layout: Any, blocks: torch.Tensor, base: float = 0.0) -> tuple[float, float]:
    """The least and the greatest ``base + sum over used slots of blocks[g, b, c]`` (``blocks``: ``[S, D, C]``)
    over every network of ``layout``: within a mode the groups are independent, so each takes its best
    (worst) depth of its slots' best (worst) choices; then the best (worst) mode. No network is enumerated;
    NaN entries (a choice no network uses) never count."""
    lows, highs = [], []
    for part in mode_slices(layout, blocks.to(torch.float64)):
        for pick, fill, out in ((torch.min, math.inf, lows), (torch.max, -math.inf, highs)):
            per_slot = torch.cumsum(pick(part.nan_to_num(fill), dim=2).values, dim=1)  # [S, D]: first d slots
            by_depth = torch.stack([per_slot[:, d - 1] for d in layout.depths], dim=1)  # [S, depths]
            out.append(base + float(pick(by_depth, dim=1).values.sum()))
    return min(lows), max(highs)


def _window_size(ticks: np.ndarray, depths: list[int], lo: int, hi: int) -> float:
    w = _window_tables(ticks, depths, lo, hi)
    return float(w.first[-1]) if len(w.first) else 0.0


def _mode_seed(seed: int, mode: int) -> int:
    """The seed of one mode's draws: splitmix64 of the seed and the mode, 63 bits."""
    return int(_mix(np.array([(seed + (mode + 1) * _GOLDEN) & _MASK64], dtype=_U64))[0] >> _U64(1))


def _sample_modes(n: int, seed: int, layout: Any, op: Any, ticks: torch.Tensor | None = None, lo: int = 0,
                  hi: int = 0) -> torch.Tensor:
    """Codes of a layout with modes, composed of the one-mode kernel ``op``: each row's mode is drawn with
    the weight of its networks (all alike for uniform draws; those in ``[lo, hi]`` ticks for windowed ones),
    then ``op`` draws the rows of each mode within that mode's slice of the table, and their used slots'
    first digits are shifted into the mode. The mode draws are numpy's on both backends, so codes stay
    bit-identical across them."""
    S, D, M, depths = layout.groups, layout.max_depth, layout.modes, list(layout.depths)
    kernels, expands = layout.mode_choices // layout.split, layout.split
    parts = None if ticks is None else [part.contiguous() for part in mode_slices(layout, ticks)]
    weights = np.ones(M) if parts is None else np.array([_window_size(p.numpy(), depths, lo, hi) for p in parts])
    if not weights.sum() > 0:
        raise ValueError(f"sample_archs: the window [{lo}, {hi}] ticks holds no architecture")
    keys = _arch_keys(seed, 0, n)
    modes = _pick_rows(np.cumsum(weights)[None, :].repeat(n, 0), _unit(_draw(keys, 0)))
    width = 1 + 2 * D
    out = torch.zeros((n, S * width), dtype=torch.int8)
    depth_values = torch.tensor(depths)
    for m in range(M):
        rows = torch.from_numpy(np.flatnonzero(modes == m))
        if not len(rows):
            continue
        window = () if parts is None else (parts[m], lo, hi)
        codes = op(len(rows), _mode_seed(seed, m), S, depths, kernels, expands, *window).clone()
        view = codes.view(len(rows), S, width)
        used = torch.arange(D) < depth_values[view[:, :, 0].long()][..., None]  # [n, S, D]
        view[:, :, 1::2] += (used * (m * kernels)).to(torch.int8)
        out[rows] = codes
    return out


# ---- public sampling API ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Quantised:
    ticks: torch.Tensor  # [S, D, C] int64
    base: int
    lo: int  # window in block ticks (base removed)
    hi: int
    low: int  # achievable range of the block ticks
    high: int
    resolution: float

    @property
    def low_ms(self) -> float:
        return (self.base + self.low) * self.resolution

    @property
    def high_ms(self) -> float:
        return (self.base + self.high) * self.resolution


def _quantise(space: Space, latency: MetricTable, window: tuple[float, float], resolution: float) -> _Quantised:
    if not resolution > 0:
        raise UserError(f"latency resolution must be positive, got {resolution}")
    lo_ms, hi_ms = window
    if lo_ms > hi_ms:
        raise UserError(f"latency window [{lo_ms}, {hi_ms}] ms is empty: lo > hi")
    lat = latency.column("latency_ms") if latency.names != ("latency_ms",) else latency
    if (lat.blocks < 0).any():  # the base may be negative: a table's correction can have a negative offset
        raise UserError("latency table has negative entries")
    ticks = torch.round(lat.blocks[..., 0] / resolution).to(torch.int64)
    base = int(torch.round(lat.base[0] / resolution))
    lo = math.ceil(lo_ms / resolution - 1e-9) - base
    hi = math.floor(hi_ms / resolution + 1e-9) - base
    low, high = (round(v) for v in extremes(space.layout(), ticks))
    return _Quantised(ticks, base, lo, hi, low, high, resolution)


def _empty_window(space: Space, window: tuple[float, float], q: _Quantised, resolution: float) -> UserError:
    return UserError(f"latency window [{window[0]}, {window[1]}] ms holds no architecture of space "
                     f"{space.name!r} (achievable: {q.low_ms:.3f} to {q.high_ms:.3f} ms at resolution "
                     f"{resolution} ms)")


def sample(space: Space, n: int, *, seed: int = 0, latency: MetricTable | None = None,
           window: tuple[float, float] | None = None, resolution: float = DEFAULT_RESOLUTION_MS,
           backend: str | None = None) -> torch.Tensor:
    """int8 codes ``[n, K]`` of ``n`` architectures drawn uniformly over the distinct networks of ``space``.

    With ``window=(lo, hi)`` (ms) and a ``latency`` table (a :class:`MetricTable` with a ``"latency_ms"``
    metric), uniformly over the networks whose quantised latency lies in the window (see the module doc);
    an empty window raises :class:`UserError` naming the achievable range. The same ``seed`` gives the same
    codes on both backends; ``backend`` (``"cpp"`` or ``"reference"``) forces one, default: the built one.
    """
    backend = backend or kernel_backend()
    if backend not in ("cpp", "reference") or (backend == "cpp" and kernel_backend() != "cpp"):
        raise UserError(f"sampler backend {backend!r} is not available (built: {kernel_backend()!r})")
    if n < 0:
        raise UserError(f"cannot sample {n} architectures")
    S, _, KK, E, depths = _layout(space)
    op = torch.ops.oneshot.sample_archs if backend == "cpp" else sample_archs_reference
    layout = space.layout()
    if layout.modes > 1:
        op = functools.partial(_sample_modes, layout=layout, op=op)
    if window is None:
        return op(n, seed) if layout.modes > 1 else op(n, seed, S, depths, KK, E)
    if latency is None:
        raise UserError("a latency window needs a latency table")
    q = _quantise(space, latency, window, resolution)
    if q.hi < q.low or q.lo > q.high:
        raise _empty_window(space, window, q, resolution)
    try:
        if layout.modes > 1:
            return op(n, seed, ticks=q.ticks, lo=q.lo, hi=q.hi)
        return op(n, seed, S, depths, KK, E, q.ticks, q.lo, q.hi)
    except (RuntimeError, ValueError) as err:
        if "holds no architecture" in str(err):
            raise _empty_window(space, window, q, resolution) from None
        raise


def window_count(space: Space, latency: MetricTable, window: tuple[float, float],
                 resolution: float = DEFAULT_RESOLUTION_MS) -> float:
    """Number of distinct networks whose quantised latency lies in ``window`` (float64: may be huge)."""
    q = _quantise(space, latency, window, resolution)
    layout = space.layout()
    return sum(_window_size(part.contiguous().numpy(), list(layout.depths), q.lo, q.hi)
               for part in mode_slices(layout, q.ticks))


@dataclass
class WindowDraws:
    """One architecture at a time, uniform over the networks of ``space`` whose quantised latency lies in
    ``window`` (ms): the random candidates of a search under a latency budget, where a space's own draws
    would almost all be over it.

    Called with a ``random.Random``, it returns the next architecture of a buffer that it refills ``batch``
    at a time from :func:`sample`, seeded by 63 bits drawn from that generator. So a deterministic caller
    (a seeded search algorithm: rerun, resumed, or run by every process of a distributed search) gets the same
    draws every time, for one kernel call per ``batch``. Draws are with replacement: a caller wanting new
    architectures redraws repeats. An empty window raises :class:`UserError` on construction.
    """

    space: Space
    latency: MetricTable
    window: tuple[float, float]
    batch: int = 256
    resolution: float = DEFAULT_RESOLUTION_MS
    _buffer: list[Arch] = field(default_factory=list, init=False, repr=False)
    count: float = field(default=0.0, init=False)  # distinct networks in the window (float64: may be huge)

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise UserError(f"a window sampler's batch must be at least 1, got {self.batch}")
        self.count = window_count(self.space, self.latency, self.window, self.resolution)
        if self.count <= 0:
            q = _quantise(self.space, self.latency, self.window, self.resolution)
            raise _empty_window(self.space, self.window, q, self.resolution)

    def __call__(self, rng: random.Random) -> Arch:
        """The next architecture, refilling the buffer with a batch seeded from ``rng`` when it is empty."""
        if not self._buffer:
            codes = sample(self.space, self.batch, seed=rng.getrandbits(63), latency=self.latency, window=self.window,
                           resolution=self.resolution)
            self._buffer = decode(self.space, codes)[::-1]  # popped from the end: drawn in the kernel's order
        return self._buffer.pop()


def quantised_latency(space: Space, codes: torch.Tensor, latency: MetricTable,
                      resolution: float = DEFAULT_RESOLUTION_MS) -> torch.Tensor:
    """int64 ``[N]``: every network's latency in ticks, the sum that window membership is decided on."""
    q = _quantise(space, latency, (0.0, 0.0), resolution)
    ticks = MetricTable(("ticks",), q.ticks.to(torch.float64).unsqueeze(-1), torch.tensor([float(q.base)],
                                                                                           dtype=torch.float64))
    return score(space, codes, ticks)[:, 0].round().to(torch.int64)
