import random

import pytest
import torch

from supernet.layers import ElasticBatchNorm2d, ElasticDepthwiseConv2d, centre_kernel
from supernet.family import unit_keys
from supernet.model import Subnet, Supernet, units
from supernet.space import get_space, list_spaces
from tests.conftest import example_input


def randomise_batch_norm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN layer non-trivial statistics so that slicing mistakes show in the logits."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


@pytest.mark.parametrize("name", [name for name in list_spaces() if get_space(name).config.family == "mbv3"])
@pytest.mark.slow
def test_extracted_subnet_equals_supernet_for_20_random_architectures(name: str) -> None:
    torch.manual_seed(0)
    space = get_space(name)
    supernet = Supernet(space.config)
    randomise_batch_norm(supernet)
    supernet.eval()
    x = example_input(space.config, batch=3)
    rng = random.Random(0)
    archs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(18)]
    with torch.no_grad():
        for arch in archs:
            supernet.set_active(arch)
            expected = supernet(x)
            subnet = supernet.extract(arch)
            assert type(subnet) is Subnet
            assert not any(type(m).__module__ == "supernet.layers" for m in subnet.modules())
            torch.testing.assert_close(subnet(x), expected, atol=1e-5, rtol=0)


def test_extract_copies_weights_and_leaves_supernet_untouched() -> None:
    space = get_space("mbv3")
    supernet = Supernet(space.config).eval()
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    subnet = supernet.extract(space.smallest())
    for p in subnet.parameters():
        p.data.add_(1.0)
    for key, value in supernet.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_smaller_kernel_is_the_centre_and_channels_are_leading() -> None:
    conv = ElasticDepthwiseConv2d(8, 7)
    x = torch.randn(2, 5, 9, 9)
    expected = torch.nn.functional.conv2d(x, centre_kernel(conv.weight[:5], 3), None, 1, 1, 1, 5)
    torch.testing.assert_close(conv(x, 3), expected)
    centre = centre_kernel(conv.weight, 3)  # a view (same storage, strides) starting at row 2, column 2 of 7x7
    shares = centre.untyped_storage().data_ptr() == conv.weight.untyped_storage().data_ptr()
    assert shares, "centre_kernel copied the weight instead of returning a view of it"
    assert centre.storage_offset() == 2 * 7 + 2 and centre.stride() == conv.weight.stride()
    assert centre.shape == (8, 1, 3, 3)


def test_elastic_batch_norm_updates_only_the_active_slice() -> None:
    bn = ElasticBatchNorm2d(8).train()
    bn(torch.randn(4, 3, 5, 5) + 5)
    assert (bn.running_mean[:3] > 0.1).all()
    assert torch.equal(bn.running_mean[3:], torch.zeros(5))


def test_training_step_reaches_shared_weights() -> None:
    space = get_space("mbv3")
    supernet = Supernet(space.config).train()
    supernet.set_active(space.smallest())
    supernet(torch.rand(4, 1, 28, 28)).sum().backward()
    dw = supernet.stages[0][0].dw_conv.weight.grad
    hidden = 16 * 3
    assert dw[:hidden, :, 2:5, 2:5].abs().sum() > 0
    assert dw[hidden:].abs().sum() == 0 and dw[:, :, 0].abs().sum() == 0
    assert supernet.stages[0][3].dw_conv.weight.grad is None  # inactive block


def test_units_cover_every_subnet() -> None:
    space = get_space("mbv3")
    keys = {key for key, _, _ in units(space.config)}
    rng = random.Random(0)
    for arch in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(10)]:
        assert set(unit_keys(space, arch)) <= keys
    for key, build, shape in units(space.config):
        if key.startswith("stage2.block0.k5"):
            assert build()(torch.rand(1, *shape)).shape[-1] == 7


def test_subnet_scripts() -> None:
    space = get_space("mbv3")
    subnet = Supernet(space.config).extract(space.sample(random.Random(3))).eval()
    scripted = torch.jit.script(subnet)
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(scripted(x), subnet(x))
