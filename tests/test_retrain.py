"""Retraining a searched subnet: metrics, what each mode trains, resume, and the CLI through ``python -m``."""
import json
from pathlib import Path

import pytest
import thop
import torch

from search.export import read_metadata
from search.metrics import classification_report, confusion_matrix
from supernet.checkpoint import load_subnet, load_supernet
from supernet.data import load_splits
from supernet.evaluate import recalibrate_bn
from tests.conftest import run_module

ARCH = "k3e3-k5e4|k3e6-k3e3|k7e3-k3e3-k5e6|k3e4-k3e3"


def test_classification_report_matches_hand_counts() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    predicted = torch.tensor([0, 0, 1, 1, 0, 1, 1, 1])  # class 2 is never predicted
    logits = torch.nn.functional.one_hot(predicted, 3).float()
    assert confusion_matrix(predicted, labels, 3).tolist() == [[2, 1, 0], [1, 1, 0], [0, 3, 0]]
    report = classification_report(logits, labels, ["a", "b", "c"])
    precision = [2 / 3, 1 / 5, 0.0]
    recall = [2 / 3, 1 / 2, 0.0]
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall)]
    assert report["top1"] == pytest.approx(3 / 8)
    assert report["macro_precision"] == pytest.approx(sum(precision) / 3)
    assert report["macro_recall"] == pytest.approx(sum(recall) / 3)
    assert report["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert report["per_class"]["b"] == pytest.approx({"precision": 0.2, "recall": 0.5, "f1": f1[1], "support": 2})
    assert report["images"] == 8 and report["classes"] == ["a", "b", "c"]


def _args(tiny_run: Path, fake_data: Path, fast_table: Path, out: Path, *extra: str) -> list[str]:
    return ["search.retrain", "--checkpoint", str(tiny_run / "final.pt"), "--data", str(fake_data),
            "--table", str(fast_table), "--calibration-size", "32", "--batch-size", "64", "--epochs", "2",
            "--checkpoint-every", "3", "--out", str(out), *extra]


@pytest.mark.slow
def test_retrain_reports_test_metrics_and_sizes_that_thop_agrees_with(tmp_path: Path, tiny_run: Path,
                                                                      fake_data: Path, fast_table: Path) -> None:
    out = tmp_path / "finetune"
    printed = run_module(*_args(tiny_run, fake_data, fast_table, out, "--arch", ARCH, "--mode", "finetune")).stdout
    result = json.loads((out / "retrain.json").read_text())
    test = result["metrics"]["test"]
    assert test["images"] == 80 and len(test["confusion"]) == 10 and sum(map(sum, test["confusion"])) == 80
    assert 0 <= test["macro_f1"] <= 1 and test["top1"] == pytest.approx(
        sum(test["confusion"][i][i] for i in range(10)) / 80)
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert result["metrics"]["val_top1_before"] is not None
    assert result["latency"]["median_ms"] > 0 and result["latency"]["device"] == "cpu"
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"test      top1 {test['top1']:.4f}" in printed

    model, payload = load_subnet(out / "model.pt")
    assert model.arch == ARCH == result["arch"]
    macs, _ = thop.profile(model, inputs=(torch.zeros(1, 1, 28, 28),), verbose=False)
    assert result["flops"] == pytest.approx(float(macs), rel=1e-9)
    assert result["params"] == sum(p.numel() for p in model.parameters())
    assert payload["metrics"]["test"]["top1"] == test["top1"] and "optimizer" not in payload

    exported = tmp_path / "retrained.pt"  # the export carries the retrained figures, not the supernet's
    run_module("search.export", "--subnet", str(out / "model.pt"), "--out", str(exported))
    metadata = read_metadata(exported)
    assert metadata["arch"] == ARCH and metadata["test_top1"] == test["top1"]
    assert metadata["val_top1"] == result["metrics"]["val_top1"]
    assert metadata["latency"]["latency_ms"] == result["latency"]["median_ms"]
    assert metadata["latency"]["fingerprint"] == result["latency"]["fingerprint"]


@pytest.mark.parametrize("mode, trained", [("head", ("head", "classifier")),
                                           ("last-stages", ("stages.3", "head", "classifier"))])
@pytest.mark.slow
def test_partial_modes_leave_the_rest_exactly_as_inherited(tmp_path: Path, tiny_run: Path, fake_data: Path,
                                                           fast_table: Path, mode: str, trained: tuple) -> None:
    run_module(*_args(tiny_run, fake_data, fast_table, tmp_path, "--arch", ARCH, "--mode", mode, "--epochs", "1"))
    model, _ = load_subnet(tmp_path / "model.pt")
    supernet, _ = load_supernet(tiny_run / "final.pt")
    splits = load_splits(fake_data, val_size=64)
    start = recalibrate_bn(supernet.extract(supernet.space.parse(ARCH)), splits.train.subset(torch.arange(32)))
    after = model.state_dict()
    moved = {prefix: 0.0 for prefix in trained}
    for key, value in start.state_dict().items():
        change = (value.double() - after[key].double()).abs().max().item()
        if key.startswith(trained):
            prefix = next(p for p in trained if key.startswith(p))
            moved[prefix] = max(moved[prefix], change)
        else:  # frozen: equal up to the reduction order of another thread count in the recalibration
            assert change < 1e-5, key
    assert all(change > 1e-3 for change in moved.values()), moved


@pytest.mark.slow
def test_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path: Path, tiny_run: Path, fake_data: Path,
                                                              fast_table: Path) -> None:
    common = ["--arch", ARCH, "--mode", "scratch"]
    run_module(*_args(tiny_run, fake_data, fast_table, tmp_path / "a", *common))
    stopped = run_module(*_args(tiny_run, fake_data, fast_table, tmp_path / "b", *common, "--stop-after", "5")).stdout
    assert "stopped at step 5 of 8" in stopped and not (tmp_path / "b" / "model.pt").exists()
    run_module("search.retrain", "--resume", "--out", str(tmp_path / "b"))
    a, _ = load_subnet(tmp_path / "a" / "model.pt")
    b, _ = load_subnet(tmp_path / "b" / "model.pt")
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), key
    ra, rb = (json.loads((tmp_path / d / "retrain.json").read_text()) for d in "ab")
    assert ra["history"] == rb["history"] and ra["metrics"]["val_top1_before"] is None


@pytest.mark.parametrize("extra, message", [
    (["--arch", ARCH, "--mode", "last-stages", "--stages", "9"], "--stages 9 exceeds the space's 4 stages"),
    (["--arch", "k3e3|bad"], "architecture string"),
    (["--arch", ARCH, "--epochs", "0"], "argument --epochs: must be an integer from 1"),
    (["--resume"], "does not exist, so there is no interrupted run"),
    (["--subnet-typo"], "unrecognized argument --subnet-typo"),
])
@pytest.mark.slow
def test_bad_input_gets_one_line_and_exit_2(tmp_path: Path, tiny_run: Path, fake_data: Path, fast_table: Path,
                                            extra: list, message: str) -> None:
    result = run_module(*_args(tiny_run, fake_data, fast_table, tmp_path, *extra), check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
