"""NAS-Bench-201 mixed edge: the fused C++ kernel against its op-by-op reference, from one sample list (values,
gradients, running statistics, eval mode, gradcheck, opcheck, bad input), and MixedOp wired to it."""
import pytest
import torch

from supernet.kernels import _EDGE_KERNEL, mixed_edge, mixed_edge_reference
from supernet.nb201 import KEYS, OPS, NB201Config
from supernet.nb201_model import MixedOp, NB201Supernet
from tests.layouts import random_input


def sample(n: int, c: int, h: int, w: int, training: bool = True, dtype: torch.dtype = torch.float64,
           layout: str = "contiguous", momentum: float = 0.1, seed: int = 0) -> dict:
    """Every input of one edge: x, softmax weights, both convolutions, both batch norms (running variance
    positive), mode, momentum and eps."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype)

    return dict(x=random_input(n, c, h, w, g, dtype, layout), weights=torch.softmax(randn(5), 0),
                conv1=randn(c, c, 1, 1), conv3=randn(c, c, 3, 3),
                bn1_weight=randn(c), bn1_bias=randn(c), bn1_mean=randn(c), bn1_var=randn(c).exp(),
                bn3_weight=randn(c), bn3_bias=randn(c), bn3_mean=randn(c), bn3_var=randn(c).exp(),
                training=training, momentum=momentum, eps=1e-5)


SAMPLES = {
    "train": sample(3, 4, 6, 6),
    "train-odd": sample(2, 5, 7, 5, momentum=0.3),
    "train-one-row": sample(3, 2, 1, 6),
    "train-one-pixel": sample(4, 3, 1, 1),
    "eval": sample(2, 4, 5, 6, training=False),
    "eval-empty-batch": sample(0, 3, 4, 4, training=False),
    "channels-last": sample(2, 4, 5, 5, layout="channels_last"),
    "strided": sample(2, 3, 6, 4, layout="strided"),
    "float32": sample(8, 16, 16, 16, dtype=torch.float32),
    "float32-eval": sample(4, 8, 8, 8, training=False, dtype=torch.float32),
}
LEAVES = ("x", "weights", "conv1", "conv3", "bn1_weight", "bn1_bias", "bn3_weight", "bn3_bias")
BUFFERS = ("bn1_mean", "bn1_var", "bn3_mean", "bn3_var")


def fresh(args: dict) -> dict:
    """A copy of ``args`` whose differentiable inputs are new leaves and whose running statistics are new."""
    return {k: (v.clone().requires_grad_(k in LEAVES) if isinstance(v, torch.Tensor) else v) for k, v in args.items()}


def tolerance(args: dict) -> dict:
    return {"atol": 2e-4, "rtol": 2e-4} if args["x"].dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-10}


def kernel_args(args: dict) -> tuple:
    """The positional inputs of ``torch.ops.oneshot.mixed_edge`` (no momentum)."""
    return tuple(v for k, v in args.items() if k != "momentum")


@pytest.mark.parametrize("name", SAMPLES)
def test_values_gradients_and_running_stats_match_reference(name: str) -> None:
    ours, ref = fresh(SAMPLES[name]), fresh(SAMPLES[name])
    out, expected = mixed_edge(**ours), mixed_edge_reference(**ref)
    torch.testing.assert_close(out, expected, **tolerance(ours))
    for key in BUFFERS:
        torch.testing.assert_close(ours[key], ref[key], **tolerance(ours))
    if not out.numel():
        return
    grad = torch.randn_like(expected)
    got = torch.autograd.grad(out, [ours[k] for k in LEAVES], grad)
    want = torch.autograd.grad(expected, [ref[k] for k in LEAVES], grad)
    for key, a, b in zip(LEAVES, got, want):
        torch.testing.assert_close(a, b, **tolerance(ours), msg=lambda m, key=key: f"grad of {key}: {m}")


def test_training_moves_running_stats_and_eval_uses_them() -> None:
    """A training call changes the statistics (so the check above is not vacuous); eval then depends on them."""
    args = fresh(SAMPLES["train"])
    before = [args[k].clone() for k in BUFFERS]
    mixed_edge(**args)
    assert all(not torch.equal(a, args[k]) for a, k in zip(before, BUFFERS))
    evaluated = {**args, "training": False}
    shifted = {**evaluated, "bn3_mean": args["bn3_mean"] + 1}
    assert not torch.allclose(mixed_edge(**evaluated), mixed_edge(**shifted))


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck(training: bool) -> None:
    args = sample(2, 2, 3, 4, training=training, layout="strided")
    leaves = [args[k].clone().requires_grad_() for k in LEAVES]
    rest = fresh(args)

    def edge(*tensors: torch.Tensor) -> torch.Tensor:
        return mixed_edge(**{**rest, **dict(zip(LEAVES, tensors))})

    assert torch.autograd.gradcheck(edge, leaves)


@pytest.mark.skipif(not _EDGE_KERNEL, reason="C++ extension not built")
@pytest.mark.parametrize("name", SAMPLES)
def test_opcheck(name: str) -> None:
    args = fresh(SAMPLES[name])
    torch.library.opcheck(torch.ops.oneshot.mixed_edge, kernel_args(args))
    out, relu, y1, y3, stats = torch.ops.oneshot.mixed_edge(*kernel_args(args))
    if name == "train":
        grad = torch.randn_like(out)
        saved = [args[k].detach() for k in LEAVES[:3]] + [args["conv3"].detach()] + \
            [args[k].detach() for k in LEAVES[4:]]
        torch.library.opcheck(torch.ops.oneshot.mixed_edge_backward,
                              (grad, *saved, relu, y1, y3, stats, True, args["eps"]))
    torch.library.opcheck(torch.ops.oneshot.mixed_edge_update_stats,
                          (*[args[k].detach() for k in BUFFERS], stats.detach(), 0.1, 10))


def test_mixed_op_fused_equals_ops_one_by_one() -> None:
    """MixedOp.mixed on the kernel against the ops run alone: outputs, every gradient, the batch norms' running
    statistics and batch counts, over two training steps (momentum 0.1 and cumulative), then eval."""
    torch.manual_seed(0)
    fused, alone = MixedOp(6).double(), MixedOp(6).double()
    for op in (fused, alone):
        op["nor_conv_3x3"][2].momentum = None  # a cumulative average for one, nn's default for the other...
        op["nor_conv_1x1"][2].momentum = None  # ...must step alike: set both
    alone.load_state_dict(fused.state_dict())
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64)
    weights = torch.softmax(torch.randn(5, dtype=torch.float64), 0)
    for training in (True, True, False):
        fused.train(training), alone.train(training)
        xs, ws = [x.clone().requires_grad_() for _ in range(2)], [weights.clone().requires_grad_() for _ in range(2)]
        outs = [fused.mixed(xs[0], ws[0]), alone.mixed(xs[1], ws[1], fused=False)]
        torch.testing.assert_close(outs[0], outs[1])
        grads = [torch.autograd.grad(o.square().sum(), [xi, wi, *m.parameters()])
                 for o, xi, wi, m in zip(outs, xs, ws, (fused, alone))]
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b)
        for (key, a), b in zip(fused.state_dict().items(), alone.state_dict().values()):
            torch.testing.assert_close(a, b, msg=lambda m, key=key: f"{key}: {m}")


@pytest.mark.parametrize("train", [False, True])
def test_one_hot_forward_mixed_equals_forward_of_that_arch(train: bool) -> None:
    net = NB201Supernet(NB201Config(name="tiny", channels=4, cells=1, input_size=8)).train(train)
    arch = {key: OPS[(3 * k + 2) % len(OPS)] for k, key in enumerate(KEYS)}
    weights = {key: torch.nn.functional.one_hot(torch.tensor(OPS.index(arch[key])), len(OPS)).float()
               for key in KEYS}
    net.set_active(arch)
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(net.forward_mixed(x, weights), net(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bad, message", [
    ({"weights": torch.ones(4)}, "weights must be 1-D with one entry per op"),
    ({"conv3": torch.ones(3, 3, 1, 1)}, "conv3 must be"),
    ({"bn1_var": torch.ones(2)}, "1-D of 3 channels"),
    ({"x": torch.ones(3, 4, 4)}, "x must be 4-D"),
])
def test_bad_arguments_raise_one_line_on_both_paths(bad: dict, message: str) -> None:
    args = {**sample(2, 3, 4, 4, dtype=torch.float32), **bad}
    for fn in (mixed_edge_reference, mixed_edge):
        with pytest.raises(ValueError, match=message) as err:
            fn(**args)
        assert "\n" not in str(err.value).strip()


def test_training_on_one_value_per_channel_is_refused() -> None:
    with pytest.raises(ValueError):
        mixed_edge(**sample(1, 3, 1, 1))
