"""The accuracy predictor: its encoding, its regressors, its file, and ``python -m search.predictor`` end to end."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from search.accuracy import kendall_tau
from search.features import features, features_from_codes, width
from search.gp import GaussianProcess
from search.predictor import Predictor, choose, file_sha256, load_predictor, main
from search.regressors import GP, KINDS, Ridge
from supernet.errors import UserError, run_cli
from supernet.family import get_space
from supernet.sampler import decode, encode, sample
from tests.conftest import run_module


def test_encoding_tells_networks_apart_and_marks_inactive_blocks_absent() -> None:
    space = get_space("mbv3")
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(300)]
    x = features(space, archs)
    assert x.shape == (300, width(space.layout())) == (300, 156)
    strings = [space.to_string(a) for a in archs]
    assert len({tuple(row) for row in x.tolist()}) == len(set(strings))  # distinct networks, distinct rows
    shallow = dict(space.largest(), **{"stage1.depth": 2})
    changed = dict(shallow, **{"stage1.block3.kernel": 3, "stage1.block2.expand": 3})  # inactive blocks only
    a, b = features(space, [shallow, changed])
    assert torch.equal(a, b)
    stage1 = a[:39]  # the first stage: depth one-hot (3), then 4 blocks of 9 choices
    assert stage1[:3].tolist() == [1, 0, 0]
    assert stage1[3:21].sum() == 2 and stage1[21:].sum() == 0  # two blocks present, two absent
    deeper = features(space, [dict(shallow, **{"stage1.depth": 3})])[0]
    assert deeper[21:30].sum() == 1 and not torch.equal(deeper, a)
    codes = sample(space, 50, seed=3)  # the sampler's codes encode as the dicts they decode to
    assert torch.equal(features_from_codes(space.layout(), codes), features(space, decode(space, codes)))


def test_isomorphic_nb201_cells_encode_alike() -> None:
    space = get_space("nb201")
    rng, seen = random.Random(0), {}
    while True:
        cell = space.sample(rng)
        key = space.to_string(cell)
        if key in seen and seen[key] != cell:
            break
        seen[key] = cell
    assert torch.equal(*features(space, [cell, seen[key]]))


def additive(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of ``count`` random mbv3 networks and an accuracy that adds one amount per choice."""
    space, rng = get_space("mbv3"), random.Random(seed)
    x = features(space, [space.sample(rng) for _ in range(count)])
    weight = torch.randn(x.shape[1], generator=torch.Generator().manual_seed(seed))
    return x, 0.8 + 0.01 * (x @ weight)


def test_regressors_learn_an_additive_accuracy_and_reload_exactly() -> None:
    x, y = additive(240, seed=1)
    for kind in KINDS:
        model = kind.fit(x[:160], y[:160], seed=0)
        predicted = model.predict(x[160:])
        tau = kendall_tau(predicted.tolist(), y[160:].tolist())
        assert tau > (0.98 if kind is Ridge else 0.5), (kind.kind, tau)  # ridge is the true model here
        assert torch.equal(kind.from_state(model.state()).predict(x[160:]), predicted)
        assert predicted.dtype == torch.float32 and predicted.shape == (80,)


def test_gp_mean_in_float32_matches_the_float64_process() -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 2, (300, 40)).astype(np.float64))  # one-hot-like encodings
    y = x[:, :10].sum(1) * 0.01 + torch.from_numpy(rng.normal(0, 0.002, 300))
    model = GP.fit(x[:200], y[:200])
    reference = GaussianProcess().fit(x[:200].numpy(), y[:200].numpy()).predict(x[200:].numpy())[0]
    np.testing.assert_allclose(model.predict(x[200:]).double().numpy(), reference, rtol=0, atol=2e-6)
    assert model.predict(x[:0]).shape == (0,)


def test_choice_is_by_tau_then_rmse() -> None:
    figures = {"a": {"kendall_tau": 0.5, "rmse": 0.1}, "b": {"kendall_tau": 0.7, "rmse": 0.3},
               "c": {"kendall_tau": 0.7, "rmse": 0.2}}
    assert choose(figures)[0] == "c" and "0.700" in choose(figures)[1]
    tied = {"a": {"kendall_tau": None, "rmse": 0.2}, "b": {"kendall_tau": None, "rmse": 0.1}}
    assert choose(tied)[0] == "b" and "tied" in choose(tied)[1]


def test_predictor_file_refuses_another_space_or_checkpoint(tmp_path: Path) -> None:
    space = get_space("mbv3")
    archs = [space.sample(random.Random(5)), space.largest(), space.smallest()]
    x, y = additive(40, seed=2)
    (tmp_path / "ckpt.pt").write_bytes(b"the checkpoint")
    (tmp_path / "other.pt").write_bytes(b"another checkpoint")
    figures = {"evaluations": 40, "fitted_on": 30, "held_out": 10,
               "held_out_top1": {"min": 0.7, "max": 0.9, "std": 0.05},
               "models": {"ridge": {"kendall_tau": 0.9, "spearman_rho": 0.95, "rmse": 0.01, "fit_seconds": 0.1}},
               "chosen": "ridge", "why": "test", "baselines": {"params": {"kendall_tau": None},
                                                              "fitted_mean": {"rmse": 0.05}}}
    checkpoint = {"path": str(tmp_path / "ckpt.pt"), "sha256": file_sha256(tmp_path / "ckpt.pt")}
    Predictor(space, Ridge.fit(x, y), checkpoint, figures).save(tmp_path / "p.pt")
    loaded = load_predictor(tmp_path / "p.pt", space, tmp_path / "ckpt.pt")
    scores = loaded.predict(archs)
    assert scores.shape == (3,) and torch.allclose(scores, Ridge.fit(x, y).predict(features(space, archs)))
    assert torch.equal(loaded.predict(encode(space, archs)), scores)  # codes, batched, score as the dicts do
    with pytest.raises(UserError, match="was fitted for space 'mbv3'.*not this 'nb201'") as err:
        load_predictor(tmp_path / "p.pt", get_space("nb201"))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="was fitted for checkpoint .*ckpt.pt .*not .*other.pt"):
        load_predictor(tmp_path / "p.pt", space, tmp_path / "other.pt")


@pytest.mark.parametrize("argv, message", [
    (["fit", "--checkpoint", "MISSING.pt"], "checkpoint MISSING.pt does not exist"),
    (["fit", "--checkpoint", "x.pt", "--evaluations", "4"], "--evaluations: must be an integer from 5"),
    (["fit", "--checkpoint", "x.pt", "--evaluations", "6", "--held-out", "0.9"], "leaves 1 to fit on and 5 to measure"),
    (["show", "FOREIGN"], "is not a predictor checkpoint of this tool"),
    (["show", "MISSING.pt"], "predictor MISSING.pt does not exist; fit one"),
])
def test_bad_input_is_one_line(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "something else"}, tmp_path / "FOREIGN")
    with pytest.raises(SystemExit) as exit_:
        run_cli(main, argv)
    error = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and message in error and len(error.splitlines()) == 1, error


@pytest.mark.slow
def test_fit_cli_end_to_end_resumes_from_its_journal(tmp_path: Path, tiny_run: Path, fake_data: Path) -> None:
    (tmp_path / "a").mkdir()
    checkpoint = tmp_path / "a" / "final.pt"  # a copy: the predictor goes beside it, not into the shared run
    shutil.copy(tiny_run / "final.pt", checkpoint)
    common = ["search.predictor", "fit", "--checkpoint", str(checkpoint), "--data", str(fake_data),
              "--evaluations", "12", "--held-out", "0.34", "--calibration-size", "32", "--threads", "1"]
    stopped = run_module(*common, "--stop-after", "5")
    assert "stopped after 5 evaluations in this run (5 of 12 done" in stopped.stdout
    journal = tmp_path / "a" / "final.predictor.journal.json"
    assert len(json.loads(journal.read_text())["entries"]) == 5
    assert not (tmp_path / "a" / "final.predictor.pt").exists()
    resumed = run_module(*common)
    assert "resuming" in resumed.stderr and "5 evaluations recorded are replayed" in resumed.stderr
    figures = json.loads((tmp_path / "a" / "final.predictor.json").read_text())
    assert figures["seconds"]["fresh_evaluations"] == 7 and figures["evaluations"] == 12
    assert (figures["fitted_on"], figures["held_out"]) == (8, 4) and len(figures["held_out_points"]) == 4
    assert set(figures["models"]) == {"ridge", "mlp", "gp"} and figures["chosen"] in figures["models"]
    assert all(f["rmse"] >= 0 and "kendall_tau" in f for f in figures["models"].values())
    assert (tmp_path / "a" / "final.predictor.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # an uninterrupted fit evaluates the same architectures to the same accuracies
    whole = run_module(*common, "--out", str(tmp_path / "b" / "p.pt"))
    assert "resuming" not in whole.stderr
    again = json.loads((tmp_path / "b" / "p.json").read_text())
    assert again["held_out_points"] == figures["held_out_points"] and again["models"].keys() == figures["models"].keys()
    shown = run_module("search.predictor", "show", str(tmp_path / "a" / "final.predictor.pt"))
    assert "Kendall tau" in shown.stdout and f"{figures['chosen']}" in shown.stdout and "chosen" in shown.stdout
    predictor = load_predictor(tmp_path / "a" / "final.predictor.pt", get_space("mbv3"), checkpoint)
    assert predictor.model.kind == figures["chosen"] and predictor.figures["chosen"] == figures["chosen"]
    assert predictor.predict(sample(predictor.space, 1000, seed=0)).shape == (1000,)
    with pytest.raises(UserError, match="was fitted for checkpoint"):
        load_predictor(tmp_path / "a" / "final.predictor.pt", checkpoint=tiny_run / "last.pt")
    refused = run_module(*common, check=False)  # the predictor exists: refused without --overwrite
    assert refused.returncode == 2 and "already exists; pass --overwrite to replace it with a new predictor" in refused.stderr
