"""What every space family promises the rest of the package, checked on every registered space.

A new family passes these or it is not done: configs survive a file, arch strings round-trip, the extracted
subnet computes what the supernet computes and scripts without this project, the units a table times cover
every subnet, and the additive tables (sampler codes, FLOPs/params, latency) agree with the per-architecture
paths and with thop.
"""
import json
import random

import pytest
import thop
import torch

from search.latency import LatencyTable
from supernet import family
from supernet import sampler as sm
from supernet.errors import UserError
from supernet.evaluate import fold_batch_norm
from tests.conftest import example_input

SPACES = family.list_spaces()


def randomise_batch_norm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN layer non-trivial statistics so that slicing or routing mistakes show in the logits."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d) and module.running_mean is not None:
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            if module.weight is not None:
                module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


def archs_of(space, count: int = 6) -> list[dict]:
    rng = random.Random(0)
    return [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(count)]


@pytest.mark.parametrize("name", SPACES)
def test_config_survives_a_file(name: str) -> None:
    config = family.get_space(name).config
    again = family.config_from_dict(json.loads(json.dumps(config.to_dict())), "test.json")
    assert again == config and family.family_of(again).name == config.family


def test_unknown_family_and_malformed_config_are_one_line() -> None:
    data = family.get_space("mbv3").config.to_dict()
    with pytest.raises(UserError, match="unknown space family 'lstm'.*known: .*mbv3"):
        family.config_from_dict({**data, "family": "lstm"}, "x.pt")
    with pytest.raises(UserError, match="x.pt holds a malformed space config"):
        family.config_from_dict([1, 2], "x.pt")


@pytest.mark.parametrize("name", SPACES)
def test_strings_round_trip_and_name_one_network(name: str) -> None:
    space = family.get_space(name)
    for arch in archs_of(space, 30):
        text = space.to_string(arch)
        assert space.to_string(space.parse(text)) == text
        assert space.to_string(space.parse(json.dumps(arch))) == text
        assert space.validate(json.loads(json.dumps(arch))) == space.validate(arch)


@pytest.mark.parametrize("name", SPACES)
@pytest.mark.slow
def test_extracted_subnet_equals_supernet_and_scripts(name: str) -> None:
    torch.manual_seed(0)
    space = family.get_space(name)
    supernet = family.build_supernet(space.config)
    randomise_batch_norm(supernet)
    supernet.eval()
    x = example_input(space.config)
    with torch.no_grad():
        for number, arch in enumerate(archs_of(space)):
            supernet.set_active(arch)
            expected = supernet(x)
            subnet = supernet.extract(arch).eval()
            assert type(subnet) is type(family.build_subnet(space.config, arch))
            assert type(supernet) not in {type(m) for m in subnet.modules()}
            torch.testing.assert_close(subnet(x), expected, atol=1e-5, rtol=0)
            if number < 2:
                torch.testing.assert_close(torch.jit.script(subnet)(x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", SPACES)
def test_units_cover_every_subnet(name: str) -> None:
    space = family.get_space(name)
    keys = {key for key, _, _ in family.units(space.config)}
    for arch in archs_of(space, 20):
        assert set(family.unit_keys(space, arch)) <= keys


def small(name: str):
    """The space's config, or for ImageNet-scale ones none: thop on 224-pixel subnets is slow."""
    config = family.get_space(name).config
    return None if max(family.input_shape(config)[1:]) > 64 and family.audio_frontend(config) is None else config


@pytest.mark.parametrize("name", [n for n in SPACES if small(n)])
def test_flops_and_params_tables_match_thop_on_extracted_subnets(name: str) -> None:
    config = small(name)
    space = family.space_of(config)
    supernet = family.build_supernet(config)
    metrics = sm.flops_params_table(config)
    archs = archs_of(space, 3)
    scores = sm.score(space, sm.encode(space, archs), metrics)
    for arch, (flops, params) in zip(archs, scores.tolist()):
        subnet = supernet.extract(arch).eval()
        macs, _ = thop.profile(subnet, inputs=(torch.zeros(1, *family.input_shape(config)),), custom_ops=sm.thop_ops(),
                               verbose=False)
        assert flops == pytest.approx(macs, rel=1e-9)
        assert params == sum(p.numel() for p in subnet.parameters())
        assert [flops, params] == pytest.approx(sm.score_python(space, arch, metrics), rel=1e-12)


@pytest.mark.parametrize("name", SPACES)
def test_sampler_codes_and_latency_sums_agree_with_the_per_architecture_paths(name: str) -> None:
    space = family.get_space(name)
    generator = torch.Generator().manual_seed(0)
    entries = {key: {"median_ms": float(0.05 + torch.rand(1, generator=generator)), "spread_ms": 0.0, "count": 1}
               for key, _, _ in family.units(space.config)}
    table = LatencyTable({"space": space.config.to_dict(), "fingerprint": {"batch_size": 1}, "entries": entries})
    drawn = sm.decode(space, sm.sample(space, 20, seed=4))
    archs = archs_of(space, 10) + drawn
    assert [space.to_string(a) for a in sm.decode(space, sm.encode(space, archs))] == \
        [space.to_string(a) for a in archs]
    expected = torch.tensor([table.predict(a) for a in archs], dtype=torch.float64)
    torch.testing.assert_close(table.predict_many(archs), expected)
    scored = sm.score(space, sm.encode(space, archs), table.metric_table())[:, 0]
    torch.testing.assert_close(scored, expected)


@pytest.mark.parametrize("name", SPACES)
def test_folded_batch_norm_gives_the_same_logits_and_leaves_the_subnet_alone(name: str) -> None:
    space = family.get_space(name)
    supernet = family.build_supernet(space.config)
    x = example_input(space.config, 4)
    x = x.double() if x.is_floating_point() else x  # float64: the fold's own rounding, not float32's, is compared
    for arch in archs_of(space, 2):
        subnet = supernet.extract(arch).eval().double()
        randomise_batch_norm(subnet)
        before = {k: v.clone() for k, v in subnet.state_dict().items()}
        folded = fold_batch_norm(subnet)
        with torch.no_grad():
            torch.testing.assert_close(folded(x), subnet(x), atol=1e-10, rtol=1e-8)
        assert all(torch.equal(v, before[k]) for k, v in subnet.state_dict().items())
        norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in subnet.modules())
        left = sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        if space.config.family == "mbv3":
            assert norms > 0 and left == 0  # every norm of MobileNetV3 reads a convolution
        else:
            assert left <= norms


def test_a_model_fx_cannot_trace_is_evaluated_unfolded() -> None:
    class Branchy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = torch.nn.Conv2d(2, 2, 1), torch.nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(self.conv(x)) if x.sum() > 0 else x

    model = Branchy().eval()
    assert fold_batch_norm(model) is model
