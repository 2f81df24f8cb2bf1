"""Batch sampler and scorer: kernel vs reference, vs the per-architecture Python path, vs thop, and exact
uniformity (chi-square against full enumeration of a tiny space), from one list of sample inputs."""
import itertools
import math
from collections import Counter

import pytest
import thop
import torch

from search.latency import LatencyTable, load_table
from supernet import sampler as sm
from supernet.errors import UserError
from supernet.kernels import kernel_backend
from supernet.model import Supernet, units
from supernet.space import Space, SpaceConfig, StageConfig, get_space

BUILT = kernel_backend() == "cpp"

TINY = SpaceConfig(name="tiny", in_channels=1, input_size=8, num_classes=3, stem_channels=4, stem_stride=2,
                   stages=(StageConfig(width=8, stride=1), StageConfig(width=8, stride=2, use_se=True,
                                                                       activation="hswish")),
                   head_channels=16, depths=(1, 2), kernels=(3, 5), expands=(3, 4))
ODD = SpaceConfig(name="odd", in_channels=1, input_size=8, num_classes=3, stem_channels=4, stem_stride=1,
                  stages=(StageConfig(8, 1), StageConfig(8, 2), StageConfig(12, 1)), head_channels=8,
                  depths=(3, 1), kernels=(3, 5, 7), expands=(2,))


def synthetic_table(config: SpaceConfig, seed: int, low: float = 0.05, high: float = 0.6) -> LatencyTable:
    """A LatencyTable of random per-unit medians (ms), built by hand: no timing."""
    g = torch.Generator().manual_seed(seed)
    entries = {key: {"median_ms": float(low + (high - low) * torch.rand(1, generator=g)), "spread_ms": 0.0,
                     "count": 1} for key, _, _ in units(config)}
    return LatencyTable({"space": config.to_dict(), "fingerprint": {"batch_size": 1}, "entries": entries})


TABLES = {"tiny": synthetic_table(TINY, 0), "odd": synthetic_table(ODD, 1),
          "mbv3": synthetic_table(get_space("mbv3").config, 2, 0.2, 1.0)}


def window_of(table: LatencyTable, low: float, high: float) -> tuple[float, float]:
    """The window between fractions ``low`` and ``high`` of the space's latency range."""
    small, large = table.predict(table.space.smallest()), table.predict(table.space.largest())
    return small + low * (large - small), small + high * (large - small)


# name: (table, n, seed, window or None, resolution)
SAMPLES = {
    "tiny-uniform": ("tiny", 3000, 0, None, sm.DEFAULT_RESOLUTION_MS),
    "tiny-window": ("tiny", 3000, 1, (0.3, 0.5), sm.DEFAULT_RESOLUTION_MS),
    "tiny-window-coarse": ("tiny", 500, 2, (0.0, 0.2), 0.1),
    "odd-uniform": ("odd", 2000, 3, None, sm.DEFAULT_RESOLUTION_MS),
    "odd-window": ("odd", 2000, 4, (0.6, 0.9), 0.02),
    "mbv3-uniform": ("mbv3", 5000, 5, None, sm.DEFAULT_RESOLUTION_MS),
    "mbv3-window": ("mbv3", 5000, 6, (0.4, 0.45), sm.DEFAULT_RESOLUTION_MS),
    "mbv3-window-edge": ("mbv3", 300, 7, (-1.0, 0.002), sm.DEFAULT_RESOLUTION_MS),
    "mbv3-full-window": ("mbv3", 1000, 8, (-1.0, 2.0), sm.DEFAULT_RESOLUTION_MS),
    "empty-batch": ("mbv3", 0, 9, (0.4, 0.45), sm.DEFAULT_RESOLUTION_MS),
    "huge-seed": ("tiny", 100, 2 ** 63 - 1, None, sm.DEFAULT_RESOLUTION_MS),
    "negative-seed": ("odd", 100, -5, (0.2, 0.8), sm.DEFAULT_RESOLUTION_MS),
}


def run(name: str, backend: str | None = None) -> tuple[Space, LatencyTable, torch.Tensor]:
    table_name, n, seed, fractions, resolution = SAMPLES[name]
    table = TABLES[table_name]
    window = window_of(table, *fractions) if fractions else None
    codes = sm.sample(table.space, n, seed=seed, latency=table.metric_table(), window=window,
                      resolution=resolution, backend=backend)
    return table.space, table, codes


@pytest.mark.skipif(not BUILT, reason="C++ extension not built")
@pytest.mark.parametrize("name", SAMPLES)
def test_kernel_codes_equal_reference(name: str) -> None:
    _, _, got = run(name, "cpp")
    _, _, expected = run(name, "reference")
    assert got.dtype == torch.int8 and torch.equal(got, expected)


@pytest.mark.parametrize("name", SAMPLES)
def test_samples_are_canonical_and_in_window(name: str) -> None:
    space, table, codes = run(name)
    assert codes.shape == (SAMPLES[name][1], len(space.choices))
    archs = sm.decode(space, codes)
    for arch in archs[:200]:
        assert space.from_string(space.to_string(arch)) == arch  # inactive blocks hold option 0
    fractions, resolution = SAMPLES[name][3], SAMPLES[name][4]
    if fractions and len(codes):
        lo, hi = window_of(table, *fractions)
        ticks = sm.quantised_latency(space, codes, table.metric_table(), resolution)
        assert ticks.min() >= math.ceil(lo / resolution - 1e-9) and ticks.max() <= math.floor(hi / resolution + 1e-9)
        slack = (2 * space.num_stages * space.max_depth + 1) * resolution / 2
        predicted = torch.tensor([table.predict(a) for a in archs[:200]])
        assert predicted.min() >= lo - slack and predicted.max() <= hi + slack


def test_seeds_and_prefixes() -> None:
    """Counter-based: a prefix of a batch is the smaller batch; another seed gives other codes."""
    space = get_space("mbv3")
    lat = TABLES["mbv3"].metric_table()
    window = window_of(TABLES["mbv3"], 0.3, 0.6)
    for kwargs in ({}, {"latency": lat, "window": window}):
        big = sm.sample(space, 5000, seed=11, **kwargs)
        assert torch.equal(big[:1234], sm.sample(space, 1234, seed=11, **kwargs))
        assert not torch.equal(big[:100], sm.sample(space, 100, seed=12, **kwargs))


# ---- scoring ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in SAMPLES if SAMPLES[n][1] > 0] + ["empty-batch"])
def test_scores(name: str) -> None:
    """Kernel == reference bit for bit; == the per-architecture Python path; latency == LatencyTable.predict."""
    space, table, codes = run(name)
    metrics = table.metric_table().join(sm.flops_params_table(space.config))
    got = sm.score(space, codes, metrics)
    expected = sm.score_archs_reference(codes, metrics.blocks, metrics.base, list(space.config.depths),
                                        len(space.config.expands))
    assert got.dtype == torch.float64 and got.shape == (len(codes), 3) and torch.equal(got, expected)
    archs = sm.decode(space, codes[:100])
    python = torch.tensor([sm.score_python(space, arch, metrics) for arch in archs], dtype=torch.float64)
    assert torch.equal(got[:100], python.reshape(-1, 3))
    predicted = torch.tensor([table.predict(arch) for arch in archs], dtype=torch.float64)
    torch.testing.assert_close(got[:100, 0], predicted, rtol=1e-12, atol=1e-12)  # predict adds in another order


def test_scores_of_non_canonical_codes() -> None:
    """Inactive blocks' values do not count: Space.sample's dicts score like their canonical forms."""
    import random

    space = get_space("mbv3")
    metrics = TABLES["mbv3"].metric_table()
    archs = [space.sample(random.Random(i)) for i in range(50)]
    canonical = [space.from_string(space.to_string(a)) for a in archs]
    assert torch.equal(sm.score(space, sm.encode(space, archs), metrics),
                       sm.score(space, sm.encode(space, canonical), metrics))


@pytest.mark.parametrize("config", [TINY, get_space("mbv3").config], ids=["tiny", "mbv3"])
def test_flops_and_params_match_thop_on_extracted_subnets(config: SpaceConfig) -> None:
    space = Space(config)
    supernet = Supernet(config)
    metrics = sm.flops_params_table(config)
    archs = [space.smallest(), space.largest()] + sm.decode(space, sm.sample(space, 2, seed=3))
    scores = sm.score(space, sm.encode(space, archs), metrics)
    for arch, (flops, params) in zip(archs, scores.tolist()):
        subnet = supernet.extract(arch).eval()
        macs, _ = thop.profile(subnet, inputs=(torch.zeros(1, config.in_channels, config.input_size,
                                                           config.input_size),), verbose=False)
        assert flops == macs
        assert params == sum(p.numel() for p in subnet.parameters())


BAD = {
    "depth-index": (torch.tensor([[2, 0, 0, 0, 0] * 2], dtype=torch.int8), ValueError),
    "kernel-index": (torch.tensor([[0, 2, 0, 0, 0] * 2], dtype=torch.int8), ValueError),
    "negative": (torch.tensor([[0, 0, -1, 0, 0] * 2], dtype=torch.int8), ValueError),
    "columns": (torch.zeros(1, 7, dtype=torch.int8), ValueError),
    "dtype": (torch.zeros(1, 10, dtype=torch.int64), ValueError),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_codes_raise_on_both_paths(name: str) -> None:
    codes, _ = BAD[name]
    metrics = TABLES["tiny"].metric_table()
    args = (codes, metrics.blocks, metrics.base, [1, 2], 2)
    with pytest.raises(ValueError, match="score_archs"):
        sm.score_archs_reference(*args)
    if BUILT:
        with pytest.raises(RuntimeError, match="score_archs"):
            torch.ops.oneshot.score_archs(*args)


def test_empty_window_is_a_user_error() -> None:
    table = TABLES["tiny"]
    space, lat = table.space, table.metric_table()
    for window in ((0.0, 0.01), (50.0, 60.0)):
        with pytest.raises(UserError, match=r"holds no architecture of space 'tiny' \(achievable: "):
            sm.sample(space, 10, latency=lat, window=window)
        with pytest.raises(UserError, match="holds no architecture"):
            sm.sample(space, 10, latency=lat, window=window, backend="reference")
    with pytest.raises(UserError, match="lo > hi"):
        sm.sample(space, 10, latency=lat, window=(2.0, 1.0))
    with pytest.raises(UserError, match="needs a latency table"):
        sm.sample(space, 10, window=(1.0, 2.0))


def test_gap_inside_the_range_is_a_user_error() -> None:
    """A window between achievable sums (a hole of the tick distribution) is empty too, on both paths."""
    space = Space(TINY)
    blocks = torch.ones(2, 2, 4, 1, dtype=torch.float64)  # every block 1 ms: sums 2, 3 or 4 ms
    lat = sm.MetricTable(("latency_ms",), blocks, torch.zeros(1, dtype=torch.float64))
    for backend in ("cpp", "reference") if BUILT else ("reference",):
        with pytest.raises(UserError, match="holds no architecture"):
            sm.sample(space, 10, latency=lat, window=(2.2, 2.8), backend=backend)
        assert len(sm.sample(space, 10, latency=lat, window=(2.2, 3.0), backend=backend)) == 10


def test_a_negative_base_shifts_the_window() -> None:
    """A table's correction may have a negative offset (every network still predicted a positive time): the
    window is then on the same sums as with base 0 and the window moved by the offset, on both paths."""
    space = Space(TINY)
    blocks = torch.ones(2, 2, 4, 1, dtype=torch.float64)  # sums 2, 3 or 4 ms
    shifted = sm.MetricTable(("latency_ms",), blocks, torch.tensor([-1.0], dtype=torch.float64))
    plain = sm.MetricTable(("latency_ms",), blocks, torch.zeros(1, dtype=torch.float64))
    for backend in ("cpp", "reference") if BUILT else ("reference",):
        got = sm.sample(space, 50, seed=3, latency=shifted, window=(1.5, 2.0), backend=backend)
        assert torch.equal(got, sm.sample(space, 50, seed=3, latency=plain, window=(2.5, 3.0), backend=backend))
        assert set(sm.quantised_latency(space, got, shifted).tolist()) == {round(2.0 / sm.DEFAULT_RESOLUTION_MS)}
    assert sm.window_count(space, shifted, (0.0, 1.5)) == sm.window_count(space, plain, (0.0, 2.5)) > 0


# ---- exact uniformity ---------------------------------------------------------------------------
def enumerate_codes(space: Space) -> torch.Tensor:
    """Canonical codes of every distinct network (as many as Space.size())."""
    config = space.config
    C = len(config.kernels) * len(config.expands)
    stages = []
    for di, depth in enumerate(config.depths):
        for blocks in itertools.product(range(C), repeat=depth):
            code = [di] + [0] * (2 * space.max_depth)
            for b, c in enumerate(blocks):
                code[1 + 2 * b], code[2 + 2 * b] = divmod(c, len(config.expands))
            stages.append(code)
    rows = [sum(parts, []) for parts in itertools.product(stages, repeat=space.num_stages)]
    codes = torch.tensor(rows, dtype=torch.int8)
    assert len(codes) == space.size()
    return codes


def chi_square_rejects(observed: Counter, cells: list[tuple], n: int, z: float = 4.75) -> tuple[bool, float, float]:
    """Pearson chi-square of ``observed`` against uniform over ``cells``; critical value at ~1e-6 by
    Wilson-Hilferty. Also rejects any sample outside the cells."""
    expected = n / len(cells)
    stat = sum((observed.get(cell, 0) - expected) ** 2 / expected for cell in cells)
    df = len(cells) - 1
    critical = df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
    outside = sum(observed.values()) - sum(observed.get(cell, 0) for cell in cells)
    return stat > critical or outside > 0, stat, critical


def test_uniform_sampling_is_uniform_over_networks() -> None:
    space = Space(TINY)
    cells = [tuple(row) for row in enumerate_codes(space).tolist()]
    n = 40 * len(cells)
    observed = Counter(map(tuple, sm.sample(space, n, seed=123).tolist()))
    rejected, stat, critical = chi_square_rejects(observed, cells, n)
    assert not rejected, (stat, critical)
    # The test has power: Space.sample (uniform per key, so per depth, not per network) is rejected.
    import random

    rng = random.Random(0)
    biased = Counter(tuple(space.to_indices(space.from_string(space.to_string(space.sample(rng)))))
                     for _ in range(n))
    assert chi_square_rejects(biased, cells, n)[0]


@pytest.mark.parametrize("fractions", [(0.35, 0.5), (0.0, 0.2)])
def test_window_sampling_is_uniform_over_the_window(fractions: tuple[float, float]) -> None:
    table = TABLES["tiny"]
    space, lat = table.space, table.metric_table()
    window = window_of(table, *fractions)
    codes = enumerate_codes(space)
    ticks = sm.quantised_latency(space, codes, lat)
    inside = (ticks >= math.ceil(window[0] / sm.DEFAULT_RESOLUTION_MS - 1e-9)) & (
        ticks <= math.floor(window[1] / sm.DEFAULT_RESOLUTION_MS + 1e-9))
    cells = [tuple(row) for row in codes[inside].tolist()]
    assert 5 <= len(cells) < len(codes) and sm.window_count(space, lat, window) == len(cells)
    n = 100 * len(cells)
    observed = Counter(map(tuple, sm.sample(space, n, seed=7, latency=lat, window=window).tolist()))
    rejected, stat, critical = chi_square_rejects(observed, cells, n)
    assert not rejected, (stat, critical)
    # Power: uniform samples filtered to the window are uniform too, but tilting them towards the lower
    # half of the window's networks is rejected.
    tilted = Counter({cell: (2 * n if i < len(cells) // 2 else n) // (len(cells) + len(cells) // 2)
                      for i, cell in enumerate(cells)})
    assert chi_square_rejects(tilted, cells, sum(tilted.values()))[0]


# ---- dispatcher ---------------------------------------------------------------------------------
@pytest.mark.skipif(not BUILT, reason="C++ extension not built")
def test_opcheck() -> None:
    space, table, codes = run("tiny-window")
    metrics = table.metric_table()
    torch.library.opcheck(torch.ops.oneshot.score_archs, (codes[:50], metrics.blocks, metrics.base, [1, 2], 2))
    ticks = torch.round(metrics.blocks[..., 0] / 0.01).to(torch.int64)
    torch.library.opcheck(torch.ops.oneshot.sample_archs, (20, 3, 2, [1, 2], 2, 2, ticks, 20, 80))


def test_space_indices_round_trip() -> None:
    space = get_space("mbv3")
    arch = space.largest()
    assert space.from_indices(space.to_indices(arch)) == arch
    with pytest.raises(UserError, match="option index"):
        space.from_indices([9] * len(space.choices))


def test_metric_table_from_a_real_table(fast_table) -> None:
    """The latency part from a measured table predicts as LatencyTable.predict does."""
    table = load_table(fast_table)
    space = table.space
    codes = sm.sample(space, 300, seed=1)
    got = sm.score(space, codes, table.metric_table())[:, 0]
    expected = torch.tensor([table.predict(a) for a in sm.decode(space, codes)], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
