"""Which subnets a supernet training step trains: sandwich, SPOS (uniform) and FairNAS' strict fairness."""
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from supernet import family
from supernet.errors import UserError
from supernet.train import TrainConfig, fair_paths, path_step, train


@pytest.mark.parametrize("name", ["mbv3", "nb201"])
def test_fair_paths_train_every_option_of_every_choice_exactly_once(name: str) -> None:
    space = family.get_space(name)
    for seed in range(5):
        paths = fair_paths(space, random.Random(seed))
        assert len(paths) == max(len(options) for options in space.choices.values())
        for key, options in space.choices.items():
            assert Counter(path[key] for path in paths) == Counter(options), key
        for path in paths:
            space.validate(path)
    assert fair_paths(space, random.Random(0)) != fair_paths(space, random.Random(1))


def test_each_family_trains_with_its_own_rule_unless_told() -> None:
    assert TrainConfig(space="mbv3").validate().sampling == "sandwich"
    assert TrainConfig(space="nb201-cpu").validate().sampling == "uniform"
    assert TrainConfig(space="nb201-cpu", sampling="fair").validate().sampling == "fair"
    with pytest.raises(UserError, match="--sampling must be one of sandwich, uniform, fair, got 'spos'"):
        TrainConfig(sampling="spos").validate()


@pytest.mark.parametrize("rule", ["uniform", "fair"])
def test_a_path_step_accumulates_the_mean_gradient_of_its_subnets(rule: str) -> None:
    torch.manual_seed(0)
    space = family.get_space("nb201-cpu")
    model = family.build_supernet(space.config).train()
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    config = TrainConfig(space="nb201-cpu", sampling=rule, paths=3, label_smoothing=0.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loss = path_step(model, x, y, config, random.Random(7))
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    archs = fair_paths(space, random.Random(7)) if rule == "fair" else \
        [space.sample(r) for r in [random.Random(7)] for _ in range(3)]
    model.load_state_dict(state)  # the same batch-norm statistics as the step saw
    model.zero_grad(set_to_none=True)
    losses = []
    for arch in archs:
        model.set_active(arch)
        losses.append(F.cross_entropy(model(x), y))
    torch.stack(losses).mean().backward()
    assert loss == pytest.approx(float(torch.stack(losses).mean()), rel=1e-5)
    expected = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-4)


@pytest.mark.slow
def test_fair_training_runs_and_records_its_rule(tmp_path: Path, fake_data: Path) -> None:
    torch.set_num_threads(1)
    config = TrainConfig(data=str(fake_data), out=str(tmp_path), epochs=1, batch_size=128, val_size=64,
                         calib_size=32, warmup_steps=1, sampling="fair", subset=256, checkpoint_every=100)
    metrics = train(config, command=["pytest"])
    saved = torch.load(tmp_path / "final.pt", weights_only=True)
    assert saved["train_config"]["sampling"] == "fair"
    assert all(n > 0 for n in saved["progress"]["losses"]) and metrics["largest"]["val_top1"] >= 0
