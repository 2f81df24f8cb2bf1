"""NAS-Bench-201's family: benchmark strings, the 6,466 function classes, supernet vs extracted subnet,
TorchScript, and the additive view (unit keys, FLOPs and params against thop on the whole subnet)."""
import json
import random
import subprocess
import sys
from collections import Counter

import pytest
import thop
import torch

from supernet import family
from supernet.errors import UserError
from supernet.nb201 import CELLS, KEYS, OPS, NB201Config, NB201Space, unique_str
from supernet.nb201_model import NB201Supernet, units

SPACE = family.get_space("nb201")
TINY = NB201Config(name="tiny", channels=4, cells=1, input_size=8)
EXAMPLE = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"


def test_registered_spaces_and_config_round_trip() -> None:
    assert {"nb201", "nb201-cpu"} <= set(family.list_spaces())
    assert "nb201" in family.families()
    config = SPACE.config
    assert (config.channels, config.cells, config.input_size, config.num_classes) == (16, 5, 32, 10)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["family"] == "nb201"
    assert family.config_from_dict(data) == config
    assert family.space_of(config).choices == {key: OPS for key in KEYS}


@pytest.mark.parametrize("change, message", [
    ({"channels": 0}, "channels must be a positive integer"),
    ({"channels": 4096}, "channels 4096 is more than the 1024"),
    ({"cells": 33}, "cells 33 is more than the 32"),
    ({"input_size": 30}, "multiple of 4"),
    ({"cells": True}, "cells must be a positive integer"),
    ({"depth": 3}, "unexpected keyword"),
    ({"family": "mbv3"}, "not 'nb201'"),
])
def test_malformed_config_is_one_line(change: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        NB201Config.from_dict({**SPACE.config.to_dict(), **change}, "ckpt.pt")
    assert "\n" not in str(err.value) and "ckpt.pt" in str(err.value)


def test_benchmark_strings_round_trip() -> None:
    arch = SPACE.from_string(EXAMPLE)
    assert arch["node1.in0"] == "nor_conv_3x3" and arch["node3.in2"] == "avg_pool_3x3"
    assert SPACE.arch_string(arch) == EXAMPLE
    assert SPACE.parse(EXAMPLE) == SPACE.parse(json.dumps(arch)) == SPACE.parse(arch) == arch
    shuffled = "|nor_conv_3x3~0|+|skip_connect~1|none~0|+|avg_pool_3x3~2|skip_connect~0|nor_conv_1x1~1|"
    assert SPACE.from_string(shuffled) == arch
    rng = random.Random(0)
    for _ in range(200):
        cell = SPACE.sample(rng)
        assert SPACE.from_string(SPACE.arch_string(cell)) == cell
        text = SPACE.to_string(cell)
        assert SPACE.to_string(SPACE.from_string(text)) == text


@pytest.mark.parametrize("text, message", [
    ("|nor_conv_3x3~0|+|none~0|skip_connect~1|", "has 2 nodes"),
    ("nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 .* must start and end with '|'"),
    ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 edge 'conv~0' is not of the form"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 edge 'none~1'"),
    ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "node 2 reads node 0 twice"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 has no edge from node 1"),
    ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "'none0' is not of the form"),
    ("", "has 1 nodes"),
])
def test_malformed_strings_get_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        SPACE.parse(text)
    assert "\n" not in str(err.value)


def test_invalid_dicts_and_codes_are_named() -> None:
    with pytest.raises(UserError, match="node2.in1='conv' is not one of"):
        SPACE.validate({**SPACE.largest(), "node2.in1": "conv"})
    with pytest.raises(UserError, match="missing key 'node3.in2'"):
        SPACE.validate({k: v for k, v in SPACE.largest().items() if k != "node3.in2"})
    with pytest.raises(UserError, match="has 18 codes, got 6"):
        SPACE.from_codes([0] * 6)
    with pytest.raises(UserError, match="node1.in0 depth is outside"):
        SPACE.from_codes([1] + [0] * 17)
    with pytest.raises(UserError, match="option index 5 of node1.in0"):
        SPACE.from_indices([5, 0, 0, 0, 0, 0])


def test_enumeration_gives_the_benchmarks_6466_classes() -> None:
    cells = list(SPACE.cells())
    assert len(cells) == CELLS == 15_625 and len({SPACE.arch_string(c) for c in cells}) == CELLS
    classes = Counter(SPACE.to_string(c) for c in cells)
    assert len(classes) == SPACE.size() == 6466
    representatives = list(SPACE.enumerate())
    assert [SPACE.arch_string(r) for r in representatives] == list(classes)  # the first member, in order
    for cell in cells[::97]:  # the representative is itself a member of the class (same benchmark key)
        ops = [cell[k] for k in KEYS]
        rep = SPACE.from_string(SPACE.to_string(cell))
        assert unique_str([rep[k] for k in KEYS]) == unique_str(ops)
    # the all-zero class: node 3's edges from nodes 0 and 2 are none, from node 1 none or node 1 zero; node 2's free
    assert classes[SPACE.to_string(SPACE.smallest())] == (5 + 4) * 25


def test_canonical_string_ignores_what_adds_nothing() -> None:
    base = SPACE.from_string("|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|")
    dead = dict(base, **{"node2.in1": "avg_pool_3x3", "node3.in1": "nor_conv_3x3"})  # edges out of zero node 1
    assert SPACE.arch_string(dead) != SPACE.arch_string(base)
    assert SPACE.to_string(dead) == SPACE.to_string(base)
    assert SPACE.encode(dead) == SPACE.encode(base)
    # sums are unordered and skip_connect passes its input: conv(node 0) + 0 == 0 + conv(node 1 = node 0)
    one = SPACE.from_string("|skip_connect~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|nor_conv_1x1~2|")
    other = SPACE.from_string("|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|nor_conv_1x1~2|")
    assert SPACE.to_string(one) == SPACE.to_string(other)
    # the benchmark's rule: only a node with one zero input counts as zero downstream, a sum of zeros does not
    zero2 = SPACE.from_string("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert SPACE.to_string(dict(zero2, **{"node3.in2": "nor_conv_3x3"})) != SPACE.to_string(zero2)
    assert SPACE.to_string(dict(zero2, **{"node3.in1": "nor_conv_3x3"})) == SPACE.to_string(zero2)
    live = dict(base, **{"node3.in2": "nor_conv_1x1"})
    assert SPACE.to_string(live) != SPACE.to_string(base)


def test_sample_mutate_crossover_and_encodings() -> None:
    rng = random.Random(1)
    for _ in range(100):
        a, b = SPACE.sample(rng), SPACE.sample(rng)
        child = SPACE.mutate(a, rng, prob=0.1)
        assert SPACE.to_string(child) != SPACE.to_string(a)
        mixed = SPACE.crossover(a, b, rng)
        assert all(mixed[k] in (a[k], b[k]) for k in KEYS)
        assert SPACE.from_indices(SPACE.to_indices(a)) == a
        assert SPACE.from_codes(SPACE.to_codes(a)) == a and len(SPACE.to_codes(a)) == 18
        features = SPACE.encode(a)
        assert len(features) == 30 and sum(features) == 6
    assert SPACE.layout() == family.SlotLayout(groups=6, depths=(1,), choices=5, split=1)
    assert [SPACE.sample(random.Random(7)) for _ in range(3)] == [SPACE.sample(random.Random(7)) for _ in range(3)]


def test_search_core_imports_without_torch() -> None:
    code = ("import sys; from supernet import family; s = family.get_space('nb201-cpu'); "
            "s.to_string(s.largest()); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def _cells_to_test() -> list[dict]:
    rng = random.Random(3)
    return [SPACE.largest(), SPACE.smallest(), SPACE.from_string(EXAMPLE)] + [SPACE.sample(rng) for _ in range(4)]


@pytest.mark.parametrize("train", [False, True])
def test_extracted_subnet_equals_supernet(train: bool) -> None:
    torch.manual_seed(0)
    supernet = NB201Supernet(TINY)
    x = torch.randn(4, 3, 8, 8)
    names = set(supernet.state_dict())
    for arch in _cells_to_test():
        supernet.set_active(arch)
        subnet = supernet.extract()
        assert subnet.arch == SPACE.arch_string(arch)
        assert set(subnet.state_dict()) <= names
        supernet.train(train)
        subnet.train(train)
        torch.testing.assert_close(subnet(x), supernet(x), atol=1e-5, rtol=1e-5)
        # BN statistics of the supernet now reflect that cell: a fresh extract picks them up in eval mode
        supernet.eval()
        torch.testing.assert_close(supernet.extract(arch)(x), supernet(x), atol=1e-5, rtol=1e-5)


def test_subnet_scripts_and_runs_alike() -> None:
    torch.manual_seed(0)
    supernet = NB201Supernet(TINY).eval()
    subnet = supernet.extract(SPACE.from_string(EXAMPLE))
    scripted = torch.jit.script(subnet)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(scripted(x), supernet.set_active(SPACE.from_string(EXAMPLE)) and supernet(x))


def test_unit_keys_name_units() -> None:
    keys = {key for key, _, _ in units(TINY)}
    assert keys == {key for key, _, _ in family.units(TINY)}
    space = NB201Space(TINY)
    for arch in _cells_to_test():
        used = family.unit_keys(space, arch)
        assert set(used) <= keys
        assert len(used) == 4 + 6 * 3 * TINY.cells


@pytest.mark.parametrize("cells", [1, 2])
def test_flops_and_params_add_up_to_thop_on_the_subnet(cells: int) -> None:
    config = NB201Config(name="tiny", channels=4, cells=cells, input_size=8)
    counts = {}
    for key, build, shape in units(config):
        module = build()
        assert not module.training
        macs, _ = thop.profile(module, inputs=(torch.zeros(1, *shape),), verbose=False)
        counts[key] = (macs, sum(p.numel() for p in module.parameters()))
    supernet = NB201Supernet(config)
    space = NB201Space(config)
    for arch in _cells_to_test():
        subnet = supernet.extract(arch).eval()
        macs, _ = thop.profile(subnet, inputs=(torch.zeros(1, 3, 8, 8),), verbose=False)
        used = family.unit_keys(space, arch)
        assert sum(counts[key][0] for key in used) == macs
        assert sum(counts[key][1] for key in used) == sum(p.numel() for p in subnet.parameters())


def test_a_search_never_evaluates_one_function_twice() -> None:
    """Evolution on the benchmark's space: every evaluation is of a new function class, though the draws
    and mutations produce many raw cells of classes already seen."""
    from search.problem import Problem
    from search.strategies import random_search, regularized_evolution
    from supernet.nb201 import KEYS, unique_str

    space = family.get_space("nb201")
    for search in (lambda p: random_search(p, evaluations=300, seed=1),
                   lambda p: regularized_evolution(p, objective="score", evaluations=300, seed=2)):
        called: list[str] = []

        def evaluate(arch: dict) -> dict:
            called.append(unique_str([arch[key] for key in KEYS]))
            return {"score": sum(op == "nor_conv_3x3" for op in arch.values()) + random.random()}

        records = search(Problem(space, evaluate, progress=False))
        assert len(called) == len(records) == 300
        assert len(set(called)) == 300, "one function was evaluated twice"
