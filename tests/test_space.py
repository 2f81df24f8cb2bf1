import itertools
import json
import random

import pytest

from supernet.errors import UserError
from supernet.space import Space, SpaceConfig, StageConfig, get_space, list_spaces


@pytest.fixture(params=list_spaces())
def space(request: pytest.FixtureRequest) -> Space:
    return get_space(request.param)


@pytest.fixture(params=[name for name in list_spaces() if isinstance(get_space(name), Space)])
def mbv3_space(request: pytest.FixtureRequest) -> Space:
    """The spaces of the mbv3 family (elastic blocks; largest = every option's last)."""
    return get_space(request.param)


def test_mbv3_is_registered_with_the_issue_choices() -> None:
    space = get_space("mbv3")
    assert space.config.depths == (2, 3, 4)
    assert space.config.kernels == (3, 5, 7)
    assert space.config.expands == (3, 4, 6)
    assert space.config.input_size == 28
    assert space.size() == (9 ** 2 + 9 ** 3 + 9 ** 4) ** len(space.config.stages)


def test_unknown_space_names_the_registered_ones() -> None:
    with pytest.raises(UserError, match="unknown search space 'nope'.*mbv3"):
        get_space("nope")


def test_string_round_trip_and_json(space: Space) -> None:
    rng = random.Random(0)
    for _ in range(50):
        arch = space.sample(rng)
        text = space.to_string(arch)
        again = space.from_string(text)
        assert space.to_string(again) == text
        assert space.parse(json.dumps(arch)) == space.validate(arch)
        assert json.loads(json.dumps(arch)) == arch


def test_canonical_string_ignores_inactive_blocks(mbv3_space: Space) -> None:
    space = mbv3_space
    arch = space.smallest()
    other = dict(arch)
    other["stage1.block3.kernel"] = max(space.config.kernels)
    assert arch != other
    assert space.to_string(arch) == space.to_string(other)
    deeper = dict(other, **{"stage1.depth": 4})
    assert space.to_string(deeper) != space.to_string(arch)


@pytest.mark.parametrize("change, message", [
    ({"stage1.depth": 5}, "stage1.depth=5 is not one of"),
    ({"stage2.block0.kernel": 4}, "stage2.block0.kernel=4"),
    ({"stage1.block0.expand": "6"}, "stage1.block0.expand='6'"),
    ({"stage1.block0.expand": True}, "stage1.block0.expand=True"),
    ({"stage9.depth": 2}, "key 'stage9.depth' is not in space"),
])
def test_invalid_values_and_keys_are_named(change: dict, message: str) -> None:
    space = get_space("mbv3")
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")):
        space.validate({**space.largest(), **change})


def test_missing_key_is_named() -> None:
    space = get_space("mbv3")
    arch = space.largest()
    del arch["stage3.block2.kernel"]
    with pytest.raises(UserError, match="missing key 'stage3.block2.kernel'"):
        space.validate(arch)


@pytest.mark.parametrize("text, message", [
    ("k3e3-k3e3|k3e3-k3e3", "has 2 stages"),
    ("k3e3-k3x3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", "block 'k3x3'"),
    ("k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", "stage1.depth=1"),
    ("k3e3-k9e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", "stage1.block1.kernel=9"),
    ("k3e3-k3e3-k3e3-k3e3-k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", "more than 4 blocks"),
    ("{not json", "JSON is malformed"),
])
def test_malformed_strings_get_clear_errors(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        get_space("mbv3").parse(text)


def test_sample_mutate_crossover_stay_valid(space: Space) -> None:
    rng = random.Random(1)
    parents = [space.sample(rng) for _ in range(20)]
    for a, b in zip(parents, parents[1:]):
        child = space.mutate(a, rng, 0.1)
        assert space.validate(child) == child
        assert space.to_string(child) != space.to_string(a), "a mutation must change the network"
        mix = space.crossover(a, b, rng)
        assert all(mix[k] in (a[k], b[k]) for k in space.choices)


def test_sampling_is_seeded(space: Space) -> None:
    first = [space.sample(random.Random(7)) for _ in range(3)]
    second = [space.sample(random.Random(7)) for _ in range(3)]
    assert first == second


def test_size_counts_distinct_networks_by_enumeration() -> None:
    config = SpaceConfig(name="toy", in_channels=1, input_size=8, num_classes=2, stem_channels=4, stem_stride=1,
                         stages=(StageConfig(4, 1), StageConfig(8, 2)), head_channels=8, depths=(1, 2),
                         kernels=(3, 5), expands=(3,))
    space = Space(config)
    keys = list(space.choices)
    distinct = {space.to_string(dict(zip(keys, values)))
                for values in itertools.product(*space.choices.values())}
    assert len(distinct) == space.size() == (2 + 4) ** 2


def test_indices_encoding(mbv3_space: Space) -> None:
    space = mbv3_space
    assert space.to_indices(space.smallest()) == [0] * len(space.choices)
    largest = space.to_indices(space.largest())
    assert largest == [len(options) - 1 for options in space.choices.values()]
