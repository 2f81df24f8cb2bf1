"""The relaxed mbv3 supernet of differentiable search: ``Supernet.forward_mixed`` and ``Supernet.slot_weights``.

One-hot weights must reproduce the elastic subnet exactly (soft and hard paths), every weight vector must get a
gradient, and the slot weights must turn a FLOPs/params table into the exact expected metric.
"""
import copy
import math
import random

import pytest
import torch

from supernet import sampler as sm
from supernet.errors import UserError
from supernet.model import ElasticMBConv, Supernet
from supernet.space import Space, SpaceConfig, StageConfig, get_space
from tests.test_model import randomise_batch_norm

# Depths out of order (the weights follow the choice order, not the size order); stage 2 has squeeze-excite
# whose reduced width differs between the expansions of its second block (make_divisible(32/4)=8, (64/4)=16).
TINY = SpaceConfig(name="tiny-mixed", in_channels=1, input_size=8, num_classes=3, stem_channels=4, stem_stride=1,
                   stages=(StageConfig(width=8, stride=1),
                           StageConfig(width=16, stride=2, use_se=True, activation="hswish")),
                   head_channels=16, depths=(2, 1), kernels=(3, 5), expands=(2, 4))


def one_hot(space: Space, arch: dict, straight_through: bool = False) -> dict[str, torch.Tensor]:
    """One-hot weights of ``arch``; ``straight_through``: exactly one-hot values with the gradient of a softmax
    of random logits (``hard + (p - p.detach())``: the zero added is exact, unlike ``hard - p.detach() + p``)."""
    out = {}
    for key, options in space.choices.items():
        hard = torch.nn.functional.one_hot(torch.tensor(options.index(arch[key])), len(options)).float()
        if straight_through:
            p = torch.randn(len(options)).softmax(0)
            hard = hard + (p - p.detach())
        out[key] = hard
    return out


def soft(space: Space, seed: int) -> dict[str, torch.Tensor]:
    """Leaf logits per key (for gradients) and their softmax, as two dicts."""
    generator = torch.Generator().manual_seed(seed)
    logits = {key: torch.randn(len(options), generator=generator).requires_grad_() for key, options in
              space.choices.items()}
    return logits, {key: value.softmax(0) for key, value in logits.items()}


def archs(space: Space, n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(n)]


def built(config: SpaceConfig) -> Supernet:
    torch.manual_seed(0)
    supernet = Supernet(config)
    randomise_batch_norm(supernet)
    return supernet.eval()


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("config", [TINY, get_space("mbv3").config], ids=["tiny", "mbv3"])
def test_one_hot_weights_reproduce_the_elastic_subnet_in_eval_mode(config: SpaceConfig, hard: bool) -> None:
    supernet = built(config)
    space = supernet.space
    x = torch.rand(2, config.in_channels, config.input_size, config.input_size)
    with torch.no_grad():
        for arch in archs(space, 6 if config is TINY else 2):
            supernet.set_active(arch)
            expected = supernet(x)
            out = supernet.forward_mixed(x, one_hot(space, arch, straight_through=hard), hard=hard)
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_one_hot_weights_reproduce_the_elastic_subnet_in_training_mode() -> None:
    """Batch statistics are per channel, so outputs agree in training too; only the running statistics of the
    masked-out hidden channels move where the elastic forward leaves them alone."""
    supernet = built(TINY).train()
    space = supernet.space
    x = torch.rand(4, 1, 8, 8)
    arch = {**space.smallest(), "stage2.depth": 2}  # depth 2 is choice 0: blocks at expand 2 of max 4
    elastic, mixed = copy.deepcopy(supernet), copy.deepcopy(supernet)
    elastic.set_active(arch)
    torch.testing.assert_close(mixed.forward_mixed(x, one_hot(space, arch)), elastic(x), atol=1e-5, rtol=1e-5)
    before, after_elastic, after_mixed = (m.stages[1][1].dw_bn.running_mean for m in (supernet, elastic, mixed))
    active = 16 * 2
    torch.testing.assert_close(after_mixed[:active], after_elastic[:active])
    assert torch.equal(after_elastic[active:], before[active:]) and not torch.equal(after_mixed[active:],
                                                                                      before[active:])


@pytest.mark.parametrize("hard", [False, True])
def test_every_weight_vector_gets_a_gradient(hard: bool) -> None:
    supernet = built(TINY)
    space = supernet.space
    logits, weights = soft(space, seed=1)
    if hard:  # one-hot straight-through samples of the softmax, with the depth that runs fewest blocks first
        weights = {key: torch.nn.functional.one_hot(w.argmax(), len(w)).float() + (w - w.detach())
                   for key, w in weights.items()}
        weights["stage1.depth"] = torch.tensor([0.0, 1.0]) + (weights["stage1.depth"] - weights["stage1.depth"].detach())
    out = supernet.forward_mixed(torch.rand(2, 1, 8, 8), weights, hard=hard)
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 2])).backward()
    for key, value in logits.items():
        assert value.grad is not None and value.grad.abs().sum() > 0, key


def test_hard_forward_skips_blocks_beyond_the_sampled_depth(monkeypatch: pytest.MonkeyPatch) -> None:
    supernet = built(TINY)
    space = supernet.space
    names = {id(block): (s, b) for s, stage in enumerate(supernet.stages) for b, block in enumerate(stage)}
    ran, original = [], ElasticMBConv.mixed

    def spy(block, *args):
        ran.append(names[id(block)])
        return original(block, *args)

    monkeypatch.setattr(ElasticMBConv, "mixed", spy)
    weights = one_hot(space, {**space.largest(), "stage1.depth": 1})
    supernet.forward_mixed(torch.rand(1, 1, 8, 8), weights, hard=True)
    assert ran == [(0, 0), (1, 0), (1, 1)]
    ran.clear()
    supernet.forward_mixed(torch.rand(1, 1, 8, 8), weights, hard=False)
    assert ran == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_one_hot_slot_weights_give_the_architectures_flops_and_params() -> None:
    supernet = Supernet(TINY)
    space, table = supernet.space, sm.flops_params_table(TINY)
    assert supernet.slot_weights(one_hot(space, space.largest())).shape == table.blocks.shape[:3]
    for arch in archs(space, 6):
        slots = supernet.slot_weights(one_hot(space, arch))
        expected = (slots[..., None] * table.blocks).sum((0, 1, 2)) + table.base
        assert expected.tolist() == pytest.approx(sm.score_python(space, arch, table), rel=1e-12)


def test_soft_slot_weights_give_the_exact_expected_metrics() -> None:
    """Against the expectation over all 400 distinct networks of TINY under the product distribution."""
    supernet = Supernet(TINY)
    space, table = supernet.space, sm.flops_params_table(TINY)
    _, weights = soft(space, seed=2)
    weights = {key: w.detach().double() / w.detach().double().sum() for key, w in weights.items()}
    expected = (supernet.slot_weights(weights)[..., None] * table.blocks).sum((0, 1, 2)) + table.base
    total, mass, values = torch.zeros(2, dtype=torch.float64), 0.0, []
    for arch in space.enumerate():
        p = 1.0
        for s in range(space.num_stages):
            depth = arch[f"stage{s + 1}.depth"]
            p *= float(weights[f"stage{s + 1}.depth"][TINY.depths.index(depth)])
            for b in range(depth):
                p *= float(weights[f"stage{s + 1}.block{b}.kernel"][TINY.kernels.index(arch[f"stage{s + 1}.block{b}.kernel"])])
                p *= float(weights[f"stage{s + 1}.block{b}.expand"][TINY.expands.index(arch[f"stage{s + 1}.block{b}.expand"])])
        metrics = sm.score_python(space, arch, table)
        values.append(metrics[0])
        total += p * torch.tensor(metrics, dtype=torch.float64)
        mass += p
    assert len(values) == 400 and mass == pytest.approx(1.0, rel=1e-12)
    torch.testing.assert_close(expected, total, rtol=1e-12, atol=0)
    assert min(values) < float(expected[0]) < max(values)
    assert not math.isclose(float(expected[0]), min(values)) and not math.isclose(float(expected[0]), max(values))


@pytest.mark.parametrize("change, message", [
    (lambda w: w.pop("stage1.depth"), "stage1.depth must be a 1-D tensor of 2 entries"),
    (lambda w: w.update({"stage1.block0.kernel": torch.ones(3)}), "got shape [3]"),
    (lambda w: w.update({"stage9.depth": torch.ones(2)}), "'stage9.depth', which is not a choice"),
    (lambda w: w.update({"stage1.block0.expand": [0.5, 0.5]}), "got list"),
])
def test_bad_weights_are_one_line_errors(change, message: str) -> None:
    supernet = Supernet(TINY)
    weights = one_hot(supernet.space, supernet.space.largest())
    change(weights)
    for call in (lambda: supernet.forward_mixed(torch.rand(1, 1, 8, 8), weights), lambda: supernet.slot_weights(weights)):
        with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
            call()
