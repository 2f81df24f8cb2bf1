"""The NAS-Bench-201 table read from analog-nasbench: its op ids and edge order checked against facts of the space.

Each check would fail under a wrong mapping: a swapped op id or edge moves cells off chance level, breaks the
identity networks' equal figures, or puts pooling among the best cells. The data tests skip without the
package (a bench-only dependency); the missing-package message is checked either way.
"""
from __future__ import annotations

import importlib.util
from typing import Iterator

import pytest

from bench import nb201_published as nb

installed = pytest.mark.skipif(importlib.util.find_spec("analognasbench") is None,
                               reason="analog-nasbench is not installed (bench-only): pip install analog-nasbench")


@installed
def test_table_holds_every_cell_once_keyed_by_its_arch_string() -> None:
    table = nb.all_published()
    assert len(table) == nb.CELLS
    assert all(nb.format_arch(nb.parse_arch(arch)) == arch for arch in table)
    assert 10.0 <= min(table.values()) and max(table.values()) < 95.0  # percent, not a fraction
    table[nb.BEST] = 0.0  # a caller's copy: the cache is untouched
    assert nb.published_accuracy(nb.BEST) == nb.all_published()[nb.BEST] > 93.5


@installed
def test_cells_whose_output_is_unreachable_are_exactly_the_ones_at_chance() -> None:
    assert not nb.output_reachable("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|none~2|")
    assert nb.output_reachable("|none~0|+|skip_connect~0|none~1|+|none~0|none~1|avg_pool_3x3~2|")
    table = nb.all_published()
    unreachable = {arch for arch in table if not nb.output_reachable(arch)}
    assert len(unreachable) == 341
    assert {arch for arch, accuracy in table.items() if accuracy <= 11.0} == unreachable
    assert all(table[arch] == 10.0 for arch in unreachable)


@installed
def test_skip_along_any_single_path_is_the_same_identity_network() -> None:
    def spread(op: str) -> float:
        figures = [nb.published_accuracy(nb.single_path(op, path)) for path in nb.PATHS]
        return max(figures) - min(figures)

    assert spread("skip_connect") < 0.5
    assert min(spread(op) for op in ("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")) > 2.0


@installed
def test_convolutions_make_the_best_cells_and_pooling_or_skip_alone_poor_ones() -> None:
    table = nb.all_published()
    ranked = sorted(table, key=table.get, reverse=True)
    assert ranked.index(nb.BEST) < 10
    assert table[nb.uniform("nor_conv_3x3")] > 93.0 > table[nb.uniform("nor_conv_1x1")] > 89.0
    assert table[nb.uniform("avg_pool_3x3")] < 55.0 and table[nb.uniform("skip_connect")] < 65.0
    assert max(table[arch] for arch in table
               if set(nb.parse_arch(arch).values()) <= {"skip_connect", "avg_pool_3x3"}) < 65.0
    ops = [op for arch in ranked[:50] for op in nb.parse_arch(arch).values()]
    assert max(nb.OPS, key=ops.count) == "nor_conv_3x3" and min(nb.OPS, key=ops.count) == "avg_pool_3x3"


@installed
@pytest.mark.parametrize("cells", [
    # node 1 unreachable: its outgoing edges 1->2 and 1->3 are dead
    ["|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|",
     "|none~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
     "|none~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"],
    # node 2 feeds nothing: its incoming edges 0->2 and 1->2 are dead
    ["|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|",
     "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|nor_conv_3x3~1|none~2|",
     "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"],
])
def test_isomorphic_cells_have_near_equal_accuracy(cells: list[str]) -> None:
    assert len({nb.live_form(arch) for arch in cells}) == 1
    figures = [nb.published_accuracy(arch) for arch in cells]
    assert max(figures) - min(figures) < 0.5


def test_package_keys_read_as_naslib_op_indices() -> None:
    """NASLib's convert_op_indices_to_str gives these; the data fixes the edge order only up to mirroring."""
    assert nb.package_key_to_arch((2, 1, 0, 2, 1, 0)) == nb.RESNET
    assert nb.package_key_to_arch((0, 1, 2, 3, 4, 1)) == (
        "|skip_connect~0|+|none~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|")
    assert nb.reversed_arch(nb.RESNET) == (
        "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|")


@pytest.mark.parametrize("arch", [
    "|nor_conv_3x3~0|+|none~0|skip_connect~1|",  # two nodes
    "|nor_conv_3x3~0|+|none~0|skip_connect~0|+|skip_connect~0|none~1|none~2|",  # wrong source index
    "|conv~0|+|none~0|skip_connect~1|+|skip_connect~0|none~1|none~2|",  # unknown op
    "nor_conv_3x3~0|+|none~0|skip_connect~1|+|skip_connect~0|none~1|none~2|",  # missing bar
])
def test_malformed_arch_strings_are_refused_in_one_line(arch: str) -> None:
    with pytest.raises(ValueError) as error:
        nb.parse_arch(arch)
    assert arch in str(error.value) or repr(arch) in str(error.value)
    assert "\n" not in str(error.value)


@pytest.fixture
def fresh_caches() -> Iterator[None]:
    nb._package_table.cache_clear()
    nb._arch_table.cache_clear()
    yield
    nb._package_table.cache_clear()
    nb._arch_table.cache_clear()


def test_without_the_package_the_error_names_the_install_command(fresh_caches: None,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nb.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(nb.MissingPackage, match="pip install analog-nasbench") as error:
        nb.published_accuracy(nb.BEST)
    assert "\n" not in str(error.value)
