"""Data-parallel training under real ``torchrun`` (2 gloo processes on this CPU) against the same steps in one.

Batch norm normalises each process's shard with the shard's own statistics, so 2 processes do not compute
exactly what 1 process computes on the whole global batch: on this data at initialisation the sandwich
step's gradient differs by about 60% (mostly in the early depthwise weights, whose gradient is small noise
that batch norm's normalisation shapes). The oracle is therefore :func:`simulate`: the same steps in this
process, each shard's sandwich step run in turn from the same weights and statistics, the results summed
weighted by the shard's share of the batch -- what N processes must compute. Runs match it to float rounding
(bit for bit on this CPU), whatever the world size of each part of a resumed run; a plain 1-process run ends
6.6 away (L2) after 4 steps, and a run that sums instead of averaging ends 690 away.
"""
import json
import random
import subprocess
from pathlib import Path

import pytest
import torch

from supernet.data import load_splits
from supernet.model import Supernet
from supernet.space import get_space
from supernet.train import TrainConfig, epoch_batches, make_optimizer, sandwich_step, set_lr
from tests.conftest import run_module

STEPS = 4  # the fake data's 320 - 64 training images in global batches of 64
FLAGS = {"epochs": 1, "batch_size": 64, "val_size": 64, "calib_size": 32, "warmup_steps": 1}
ARGS = [part for name, value in FLAGS.items() for part in ("--" + name.replace("_", "-"), str(value))]


def train(nproc: int, out: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``python -m supernet.train`` in one process, or under ``torchrun --nproc-per-node nproc``."""
    launcher = ["torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), "-m"] if nproc > 1 else []
    return run_module(*launcher, "supernet.train", "--out", str(out), *args, check=check)


def simulate(data: Path, worlds: list[int]) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Weights and losses after ``len(worlds)`` steps where step i is shared by ``worlds[i]`` processes."""
    torch.set_num_threads(1)
    config = TrainConfig(data=str(data), **FLAGS)
    splits = load_splits(config.data, val_size=config.val_size, seed=config.seed)
    torch.manual_seed(config.seed)
    model = Supernet(get_space(config.space).config)
    optimizer = make_optimizer(model, config)
    model = model.to(memory_format=torch.channels_last).train()
    stats = [b for b in model.buffers() if b.is_floating_point()]
    losses = []
    for step, world in enumerate(worlds):
        x, y = next(epoch_batches(splits.train, config, 0, start=step))
        set_lr(optimizer, config, step, STEPS)
        before = [s.clone() for s in stats]
        grads = [torch.zeros_like(p) for p in model.parameters()]
        after = [torch.zeros_like(s) for s in stats]
        loss = 0.0
        for index in torch.tensor_split(torch.arange(len(y)), world):
            share = len(index) / len(y)
            for s, b in zip(stats, before):
                s.copy_(b)
            optimizer.zero_grad(set_to_none=True)
            loss += share * sandwich_step(model, x[index].contiguous(memory_format=torch.channels_last), y[index],
                                          config, random.Random(f"{config.seed}-{step}"))
            grads = [g + share * p.grad for g, p in zip(grads, model.parameters())]
            after = [a + share * s for a, s in zip(after, stats)]
        for p, g in zip(model.parameters(), grads):
            p.grad = g
        for s, a in zip(stats, after):
            s.copy_(a)
        optimizer.step()
        losses.append(loss)
    return model.state_dict(), losses


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """L2 distance between the floating-point entries of two state dicts."""
    return sum(((a[k].double() - b[k].double()) ** 2).sum() for k in a if a[k].is_floating_point()).item() ** 0.5


def checkpoint(out: Path) -> dict:
    return torch.load(out / "last.pt", weights_only=True)


@pytest.mark.slow
def test_two_processes_train_as_the_sum_of_their_shards_and_only_rank_0_writes(tmp_path: Path,
                                                                              fake_data: Path) -> None:
    data = ["--data", str(fake_data), *ARGS]
    two = train(2, tmp_path / "two", *data)
    train(1, tmp_path / "one", *data)
    expected, expected_losses = simulate(fake_data, [2] * STEPS)
    got, one = checkpoint(tmp_path / "two"), checkpoint(tmp_path / "one")
    # to float rounding what the shards sum to (one process on the whole batch is not: per-rank batch norm)
    off, one_off = distance(got["state_dict"], expected), distance(one["state_dict"], expected)
    assert off < 1e-4 < 1e-3 * one_off, (off, one_off)
    assert got["progress"]["losses"] == pytest.approx(expected_losses, abs=1e-5)
    assert got["progress"]["losses"] == pytest.approx(one["progress"]["losses"], abs=0.05)
    # ... and within tolerance of one process: the 4 steps move the weights about 7x farther than per-rank batch
    # norm separates the two runs (a run that did not train, or summed instead of averaging, fails this)
    torch.manual_seed(0)
    start = Supernet(get_space("mbv3").config).state_dict()
    assert distance(got["state_dict"], one["state_dict"]) < 0.25 * distance(start, one["state_dict"])
    assert got["progress"]["world_size"] == 2
    assert json.loads((tmp_path / "two" / "config.json").read_text())["world_size"] == 2
    # rank 0 alone wrote files, results and progress
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["config.json", "final.pt", "last.pt",
                                                                   "metrics.json"]
    assert two.stdout.count("wrote ") == 1 and two.stdout.count("largest ") == 1
    assert two.stderr.count(f"0/{STEPS} [") == 1, "one progress bar"


@pytest.mark.parametrize("first,then", [(2, 1), (1, 2)])
@pytest.mark.slow
def test_a_checkpoint_resumes_under_another_world_size(tmp_path: Path, fake_data: Path, first: int,
                                                       then: int) -> None:
    out = tmp_path / "run"
    stopped = train(first, out, "--data", str(fake_data), *ARGS, "--stop-after", "2")
    assert stopped.stdout.count(f"stopped at step 2 of {STEPS}") == 1
    train(then, out, "--resume")
    expected, expected_losses = simulate(fake_data, [first, first, then, then])
    got = checkpoint(out)
    assert distance(got["state_dict"], expected) < 1e-4
    assert got["progress"]["losses"] == pytest.approx(expected_losses, abs=1e-5)
    assert got["progress"]["world_size"] == then and (out / "final.pt").exists()


@pytest.mark.parametrize("args,message", [
    (["--batch-size", "63"], "--batch-size 63 is the global batch and must be divisible by the 2 processes"),
    (["--subset", "129"], "the last batch of each epoch has 1 image(s), fewer than the 2 processes"),
], ids=["batch-size", "last-batch"])
@pytest.mark.slow
def test_a_batch_the_processes_cannot_share_is_one_line_from_each(tmp_path: Path, fake_data: Path, args: list,
                                                                  message: str) -> None:
    result = train(2, tmp_path / "bad", "--data", str(fake_data), *ARGS, *args, check=False)
    assert result.returncode != 0
    assert result.stderr.count(f"error: {message}") == 2, result.stderr[-3000:]
    assert "exitcode  : 2" in result.stderr  # torchrun's report of the first rank(s) to exit
    assert "supernet/" not in result.stderr, "a traceback through this project"
    assert not (tmp_path / "bad").exists()
