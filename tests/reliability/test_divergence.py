"""Non-finite losses: a bad step is skipped with a warning; too many in a row stop training, last checkpoint intact."""
from pathlib import Path

import pytest
import torch
from torch import nn

import supernet.train
from supernet.checkpoint import load_checkpoint
from supernet.divergence import StepGuard
from supernet.errors import Diverged
from supernet.train import TrainConfig, train
from tests.conftest import run_module


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)).train()


def step(model: nn.Module, guard: StepGuard, x: torch.Tensor, number: int) -> bool:
    guard.before()
    loss = model(x).square().mean()
    loss.backward()
    return guard.check(loss.item(), number)


def test_a_bad_step_leaves_weights_and_statistics_as_they_were(capsys: pytest.CaptureFixture) -> None:
    model = tiny_model()
    guard = StepGuard(model, limit=3, checkpoint="OUT/last.pt")
    assert step(model, guard, torch.randn(8, 4), 0) and not guard.streak
    model.zero_grad()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bad = torch.randn(8, 4)
    bad[3, 1] = float("nan")
    assert not step(model, guard, bad, 1)
    assert guard.streak and guard.state_dict() == {"in_a_row": 1, "skipped": 1}
    assert all(p.grad is None for p in model.parameters())  # the optimizer sees nothing
    for key, value in model.state_dict().items():  # running statistics restored, not NaN
        assert torch.equal(value, before[key]), key
    assert "warning: step 2: non-finite loss (nan); step skipped (1 in a row" in capsys.readouterr().err
    assert step(model, guard, torch.randn(8, 4), 2) and guard.state_dict() == {"in_a_row": 0, "skipped": 1}


def test_non_finite_gradients_with_a_finite_loss_are_caught() -> None:
    model = tiny_model()
    guard = StepGuard(model, limit=3, checkpoint="c.pt", verbose=False)
    guard.before()
    model(torch.randn(8, 4)).sum().backward()
    model[0].weight.grad[0, 0] = float("inf")
    assert not guard.check(1.0, 0)


def test_the_limit_raises_diverged_naming_the_checkpoint() -> None:
    model = tiny_model()
    guard = StepGuard(model, limit=2, checkpoint="OUT/last.pt", verbose=False, saved=4)
    bad = torch.full((8, 4), float("inf"))
    assert not step(model, guard, bad, 4)
    with pytest.raises(Diverged, match=r"2 steps in a row .*\(steps 5-6\); OUT/last.pt holds the last good state "
                                       r"\(step 4\)"):
        step(model, guard, bad, 5)


def test_with_no_checkpoint_saved_the_message_claims_no_good_state() -> None:
    guard = StepGuard(tiny_model(), limit=1, checkpoint="OUT/last.pt", verbose=False)
    with pytest.raises(Diverged, match=r"no good state was saved \(OUT/last.pt was not written") as err:
        step(guard.model, guard, torch.full((8, 4), float("nan")), 0)
    assert "holds the last good state" not in str(err.value)


def test_a_non_finite_state_is_never_saved_nor_called_good() -> None:
    """A finite loss can still leave non-finite weights or momentum: check_state refuses them, and the last
    good state stays the one saved before."""
    model = tiny_model()
    guard = StepGuard(model, limit=3, checkpoint="OUT/last.pt", verbose=False)
    guard.check_state(2, state_dict=model.state_dict(), optimizer={"state": {0: {"momentum_buffer": torch.ones(3)}}})
    assert guard.saved == 2
    with torch.no_grad():
        model[2].weight[0, 1] = float("inf")
    with pytest.raises(Diverged, match=r"after step 3 1 tensors .* non-finite \(first state_dict\['2.weight'\]\) "
                                       r".*not saved, OUT/last.pt holds the last good state \(step 2\)"):
        guard.check_state(3, state_dict=model.state_dict())
    with pytest.raises(Diverged, match=r"first optimizer\['state'\]\[0\]\['momentum_buffer'\]"):
        guard.check_state(3, optimizer={"state": {0: {"momentum_buffer": torch.tensor([float("nan")])}}})
    assert guard.saved == 2


def test_training_whose_weights_overflow_on_a_finite_loss_writes_no_checkpoint(tmp_path: Path,
                                                                             fake_data: Path) -> None:
    """lr and weight decay 1e38 (finite, allowed) turn the weights infinite in the first update, whose loss was
    finite. Before, last.pt was written with them and the later Diverged message called it the last good state."""
    torch.set_num_threads(1)
    config = TrainConfig(data=str(fake_data), out=str(tmp_path), epochs=1, batch_size=64, val_size=64,
                         calib_size=32, warmup_steps=0, random_subnets=0, lr=1e38, weight_decay=1e38,
                         checkpoint_every=1)
    with pytest.raises(Diverged, match=r"after step 1 \d+ tensors of the model or optimizer are non-finite .*no good "
                                       r"state was saved") as err:
        train(config, command=["pytest"])
    assert "\n" not in str(err.value) and not (tmp_path / "last.pt").exists()


@pytest.mark.slow
def test_one_bad_step_in_training_is_skipped_and_training_finishes(tmp_path: Path, fake_data: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture) -> None:
    real = supernet.train.sandwich_step
    calls = []

    def poisoned(model, x, y, config, rng):  # the third step's batch holds a NaN pixel
        calls.append(1)
        if len(calls) == 3:
            x = x.clone()
            x[0, 0, 5, 5] = float("nan")
        return real(model, x, y, config, rng)

    monkeypatch.setattr(supernet.train, "sandwich_step", poisoned)
    torch.set_num_threads(1)
    config = TrainConfig(data=str(fake_data), out=str(tmp_path), epochs=1, batch_size=64, val_size=64,
                         calib_size=32, warmup_steps=1, random_subnets=0, checkpoint_every=100)
    metrics = train(config, command=["pytest"])
    assert metrics["skipped_steps"] == 1
    assert "warning: step 3: non-finite loss (nan); step skipped" in capsys.readouterr().err
    state = load_checkpoint(tmp_path / "final.pt")
    losses = state["progress"]["losses"]
    assert losses[2] is None and all(isinstance(v, float) for i, v in enumerate(losses) if i != 2)
    assert all(t.isfinite().all() for t in state["state_dict"].values() if t.is_floating_point())


@pytest.mark.slow
def test_training_that_keeps_diverging_stops_with_the_last_good_checkpoint(tmp_path: Path, fake_data: Path) -> None:
    """lr 1e30 blows the weights up after one step: every later loss is NaN. With a limit of 3 the run stops at
    step 4 (exit 3, one error line) and last.pt is bit-identical to a run stopped after its one good step."""
    common = ["supernet.train", "--data", str(fake_data), "--epochs", "2", "--batch-size", "64", "--val-size", "64",
              "--calib-size", "32", "--warmup-steps", "0", "--random-subnets", "0", "--lr", "1e30",
              "--checkpoint-every", "1", "--nonfinite-limit", "3"]
    result = run_module(*common, "--out", str(tmp_path / "diverged"), check=False)
    assert result.returncode == 3, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.strip().splitlines()[-1]] and "Traceback" not in result.stderr
    assert "training diverged: 3 steps in a row" in errors[0] and str(tmp_path / "diverged" / "last.pt") in errors[0]
    assert result.stderr.count("warning: step") == 2
    assert not (tmp_path / "diverged" / "final.pt").exists()

    run_module(*common, "--out", str(tmp_path / "one-step"), "--stop-after", "1")
    diverged = load_checkpoint(tmp_path / "diverged" / "last.pt")
    good = load_checkpoint(tmp_path / "one-step" / "last.pt")
    assert diverged["progress"]["step"] == 1 and diverged["progress"]["nonfinite"] == {"in_a_row": 0, "skipped": 0}
    for key, value in good["state_dict"].items():
        assert torch.equal(diverged["state_dict"][key], value), key


@pytest.mark.slow
def test_retraining_that_keeps_diverging_stops_with_exit_3(tmp_path: Path, tiny_run: Path, fake_data: Path) -> None:
    result = run_module("search.retrain", "--arch", "k3e3-k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", "--mode", "scratch",
                        "--checkpoint", str(tiny_run / "final.pt"), "--data", str(fake_data), "--epochs", "1",
                        "--batch-size", "64", "--lr", "1e30", "--warmup-steps", "0", "--nonfinite-limit", "2",
                        "--out", str(tmp_path), check=False)
    assert result.returncode == 3, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training diverged: 2 steps in a row") and "Traceback" not in result.stderr
    assert not (tmp_path / "model.pt").exists()
