"""Layouts with a global choice (``SlotLayout.modes``): the sampler draws whole networks of one mode, uniformly
over all networks or those in a latency window, on both backends; extremes and window counts match brute force."""
import collections
import itertools

import pytest
import torch

from supernet import sampler
from supernet.family import SlotLayout
from supernet.kernels import kernel_backend
from supernet.sampler import MetricTable

LAYOUT = SlotLayout(groups=2, depths=(1, 2), choices=2 * 2 * 2, split=2, modes=2)  # 2 modes x (2 x 2) choices
BACKENDS = ["reference"] + (["cpp"] if kernel_backend() == "cpp" else [])


class ToySpace:
    """Just what the sampler asks of a space: a name and a layout."""

    name = "toy-modes"

    def layout(self) -> SlotLayout:
        return LAYOUT


def networks(layout: SlotLayout) -> list[tuple[int, ...]]:
    """Every distinct network's canonical code (unused slots 0), by enumeration."""
    per_mode = layout.mode_choices
    out = []
    for mode in range(layout.modes):
        groups = []
        for _ in range(layout.groups):
            options = []
            for di, depth in enumerate(layout.depths):
                for picks in itertools.product(range(per_mode), repeat=depth):
                    slots = [(0, 0)] * layout.max_depth
                    for b, c in enumerate(picks):
                        choice = mode * per_mode + c
                        slots[b] = (choice // layout.split, choice % layout.split)
                    options.append((di, *[d for pair in slots for d in pair]))
            groups.append(options)
        out.extend(tuple(x for group in combo for x in group) for combo in itertools.product(*groups))
    return out


def table(seed: int = 0) -> MetricTable:
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randint(1, 40, (LAYOUT.groups, LAYOUT.max_depth, LAYOUT.choices), generator=generator)
    return MetricTable(("latency_ms",), (blocks * 0.01).to(torch.float64).unsqueeze(-1),
                       torch.tensor([0.5], dtype=torch.float64))


def mode_of(code: tuple[int, ...]) -> set[int]:
    """The modes the used slots of a code carry (one, for a valid network)."""
    width, per_mode_first = 1 + 2 * LAYOUT.max_depth, LAYOUT.mode_choices // LAYOUT.split
    modes = set()
    for g in range(LAYOUT.groups):
        depth = LAYOUT.depths[code[g * width]]
        for b in range(depth):
            modes.add(code[g * width + 1 + 2 * b] // per_mode_first)
    return modes


def test_the_layout_refuses_choices_that_are_not_whole_modes():
    with pytest.raises(ValueError, match="modes"):
        SlotLayout(groups=1, depths=(1,), choices=6, split=2, modes=2)  # 3 choices per mode, split 2
    assert LAYOUT.mode_choices == 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_uniform_draws_are_whole_networks_of_one_mode_uniform_over_all(backend):
    all_networks = networks(LAYOUT)
    assert len(all_networks) == len(set(all_networks)) == 2 * (4 + 16) ** 2
    n = 200_000
    codes = sampler.sample(ToySpace(), n, seed=3, backend=backend)
    counts = collections.Counter(map(tuple, codes.tolist()))
    assert set(counts) <= set(all_networks), "a draw is not a canonical network of one mode"
    assert all(len(mode_of(code)) == 1 for code in counts)
    expected = n / len(all_networks)
    chi2 = sum((counts.get(code, 0) - expected) ** 2 / expected for code in all_networks)
    dof = len(all_networks) - 1
    assert chi2 < dof + 5 * (2 * dof) ** 0.5, f"chi-square {chi2:.0f} over {dof} degrees of freedom"


def test_both_backends_draw_the_same_codes():
    if kernel_backend() != "cpp":
        pytest.skip("the C++ extension is not built: only the reference path exists")
    latency = table()
    for kwargs in ({}, {"latency": latency, "window": (0.9, 1.3)}):
        a = sampler.sample(ToySpace(), 5000, seed=11, backend="reference", **kwargs)
        b = sampler.sample(ToySpace(), 5000, seed=11, backend="cpp", **kwargs)
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_window_draws_are_uniform_over_the_networks_in_the_window(backend):
    latency, window = table(), (0.9, 1.3)
    everything = torch.tensor(networks(LAYOUT), dtype=torch.int8)
    ticks = sampler.quantised_latency(ToySpace(), everything, latency)
    lo, hi = round(window[0] / sampler.DEFAULT_RESOLUTION_MS), round(window[1] / sampler.DEFAULT_RESOLUTION_MS)
    inside = [tuple(c) for c, t in zip(everything.tolist(), ticks.tolist()) if lo <= t <= hi]
    assert 50 < len(inside) < len(everything)
    assert sampler.window_count(ToySpace(), latency, window) == len(inside)
    assert {len(mode_of(code)) for code in inside} == {1} and {m for c in inside for m in mode_of(c)} == {0, 1}
    n = 100_000
    counts = collections.Counter(map(tuple, sampler.sample(ToySpace(), n, seed=5, latency=latency, window=window,
                                                           backend=backend).tolist()))
    assert set(counts) <= set(inside)
    expected = n / len(inside)
    chi2 = sum((counts.get(code, 0) - expected) ** 2 / expected for code in inside)
    dof = len(inside) - 1
    assert chi2 < dof + 5 * (2 * dof) ** 0.5


def test_extremes_and_scores_match_brute_force():
    latency = table(seed=4)
    everything = torch.tensor(networks(LAYOUT), dtype=torch.int8)
    scores = sampler.score(ToySpace(), everything, latency)[:, 0]
    low, high = sampler.extremes(LAYOUT, latency.blocks[..., 0], float(latency.base[0]))
    assert low == pytest.approx(float(scores.min())) and high == pytest.approx(float(scores.max()))
    with pytest.raises(Exception, match="achievable"):
        sampler.sample(ToySpace(), 10, latency=latency, window=(high + 1.0, high + 2.0))
