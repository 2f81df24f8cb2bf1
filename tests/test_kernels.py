"""Each kernel against its pure-PyTorch reference, from one list of sample inputs."""
import os

import pytest
import torch

from supernet.kernels import kernel_backend, lut_sum, lut_sum_reference

BUILT = kernel_backend() == "cpp"


def make(n: int, s: int, c: int, m: int, dtype: torch.dtype, seed: int, unused: float = 0.2) -> tuple:
    g = torch.Generator().manual_seed(seed)
    indices = torch.randint(0, c, (n, s), generator=g)
    indices[torch.rand(n, s, generator=g) < unused] = -1
    return indices, torch.rand(s, c, m, generator=g, dtype=dtype)


SAMPLES = {
    "typical-f32": make(500, 18, 9, 3, torch.float32, 0),
    "typical-f64": make(300, 18, 9, 3, torch.float64, 1),
    "empty-batch": make(0, 5, 4, 2, torch.float32, 2),
    "one-slot": make(7, 1, 3, 1, torch.float64, 3),
    "one-metric": make(20, 6, 2, 1, torch.float32, 4),
    "all-unused": make(4, 3, 3, 2, torch.float64, 5, unused=1.1),
    "non-contiguous": (make(40, 12, 5, 4, torch.float64, 6)[0].t().contiguous().t(),
                       make(40, 12, 5, 4, torch.float64, 6)[1].transpose(0, 1).contiguous().transpose(0, 1)),
}


def naive(indices: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(indices.shape[0], table.shape[2], dtype=table.dtype)
    for n in range(indices.shape[0]):
        for s in range(indices.shape[1]):
            if indices[n, s] >= 0:
                out[n] += table[s, indices[n, s]]
    return out


@pytest.mark.parametrize("name", SAMPLES)
def test_lut_sum_matches_reference(name: str) -> None:
    indices, table = SAMPLES[name]
    expected = lut_sum_reference(indices, table)
    got = lut_sum(indices, table)
    assert got.dtype == table.dtype and got.shape == (indices.shape[0], table.shape[2])
    # float64 agrees to rounding only: the kernel adds slots in order, torch.sum in its own order.
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}[table.dtype]
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


def test_both_paths_match_a_plain_loop() -> None:
    indices, table = make(15, 6, 4, 3, torch.float64, 9)
    expected = naive(indices, table)
    torch.testing.assert_close(lut_sum_reference(indices, table), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lut_sum(indices, table), expected, rtol=1e-12, atol=1e-12)


BAD = {
    "out-of-range": (torch.tensor([[0, 5]]), torch.rand(2, 3, 1)),
    "below-minus-one": (torch.tensor([[0, -2]]), torch.rand(2, 3, 1)),
    "slot-mismatch": (torch.tensor([[0, 1, 2]]), torch.rand(2, 3, 1)),
    "wrong-dims": (torch.tensor([0, 1]), torch.rand(2, 3, 1)),
    "int-table": (torch.tensor([[0, 1]]), torch.ones(2, 3, 1, dtype=torch.int64)),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_inputs_raise_on_both_paths(name: str) -> None:
    indices, table = BAD[name]
    with pytest.raises(ValueError, match="lut_sum"):
        lut_sum_reference(indices, table)
    with pytest.raises(RuntimeError if BUILT else ValueError, match="lut_sum"):  # TORCH_CHECK -> RuntimeError
        lut_sum(indices, table)


@pytest.mark.skipif(not BUILT, reason="C++ extension not built")
@pytest.mark.parametrize("name", SAMPLES)
def test_opcheck(name: str) -> None:
    torch.library.opcheck(torch.ops.oneshot.lut_sum, SAMPLES[name])


@pytest.mark.skipif(os.environ.get("ONESHOT_REQUIRE_EXTENSION") != "1",
                    reason="set ONESHOT_REQUIRE_EXTENSION=1 to require the compiled extension (CI does)")
def test_extension_was_built() -> None:
    assert kernel_backend() == "cpp"


@pytest.mark.slow
def test_package_works_without_the_extension() -> None:
    """With supernet._C unimportable (no compiler, failed build), the references take over, saying so."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['supernet._C'] = None\n"
            "import torch\nfrom supernet.kernels import kernel_backend, lut_sum\n"
            "print(kernel_backend(), lut_sum(torch.tensor([[0, -1], [1, 1]]), torch.ones(2, 2, 1)).flatten().tolist())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "ONESHOT_VERBOSE": "1"})
    assert result.stdout.split() == ["reference", "[1.0,", "2.0]"]
    assert result.stderr.strip() == "oneshot-nas kernels: reference"


@pytest.mark.parametrize("blocked", [False, True])
@pytest.mark.slow
def test_supernet_says_once_which_path_it_runs(blocked: bool) -> None:
    """One stderr line per process, naming the C++ kernels or the reference; both paths give the same logits."""
    import subprocess
    import sys

    code = ("import sys\n" + ("sys.modules['supernet._C'] = None\n" if blocked else "") +
            "import torch\nfrom supernet.model import Supernet\nfrom supernet.space import get_space\n"
            "torch.manual_seed(0)\nnets = [Supernet(get_space('mbv3').config).eval() for _ in range(2)]\n"
            "x = torch.randn(2, 1, 28, 28).contiguous(memory_format=torch.channels_last)\n"
            "print(nets[0](x).sum().item())")
    env = {k: v for k, v in os.environ.items() if k != "ONESHOT_VERBOSE"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert ("pure-PyTorch reference" if blocked or not BUILT else "C++ kernels") in lines[0]
    if not blocked and BUILT:
        reference = subprocess.run([sys.executable, "-c", "import sys; sys.modules['supernet._C'] = None\n" +
                                    code.split("\n", 1)[1]], capture_output=True, text=True, check=True, env=env)
        assert abs(float(result.stdout) - float(reference.stdout)) < 1e-3
