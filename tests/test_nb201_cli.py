"""Every command line on the ``nb201`` family, unchanged in use, through ``python -m`` on real CIFAR-10.

One small pipeline on a slice of the shared CIFAR-10 (symlinks, ``PER_CLASS`` images of each class and split;
decoded images cached in the session's temporary ``$ONESHOT_CACHE``): train the ``nb201-cpu`` supernet with
padded crops, build and validate its latency table, search by evolution and by BO, retrain the winner in
every mode, pick an ensemble, export TorchScript and ONNX and check them in a process without this project,
and write the report. The mbv3 tests of each command (tests/test_pipeline.py and friends) check the figures
in depth; these check that nothing in the commands assumes mbv3's keys, strings or module layout.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from search.export import read_metadata
from search.latency import load_table
from search.latency import main as latency_cli
from search.retrain import RetrainConfig
from search.retrain import main as retrain_cli
from supernet.checkpoint import load_subnet, load_supernet
from supernet.data import image_cache_path, load_splits
from supernet.errors import UserError
from supernet.evaluate import recalibrate_bn
from tests.conftest import (CIFAR, NO_CIFAR, check_markdown, logits_without_the_project, make_cifar_slice, run_module,
                            train_table_and_search)

pytestmark = pytest.mark.skipif(not (CIFAR / "train").is_dir(), reason=NO_CIFAR)

PER_CLASS = 10  # 100 training images (20 of them the validation split), 100 test images
MODES = ("finetune", "scratch", "head", "last-stages")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A trained ``nb201-cpu`` supernet, its latency table and a search by evolution, with what they printed."""
    root = tmp_path_factory.mktemp("nb201-cli")
    return train_table_and_search(root, "nb201-cpu", make_cifar_slice(root / "cifar", PER_CLASS),
                                  ["--crop-padding", "4", "--batch-size", "32"], evaluations=8)


@pytest.fixture(scope="module")
def retrained(run: dict[str, Any]) -> dict[str, Path]:
    """The search's winner retrained for one epoch in every mode (beside the results, where the report looks)."""
    outs = {}
    for mode in MODES:
        outs[mode] = run["results"].parent / f"retrain-{mode}"
        run_module("search.retrain", "--results", str(run["results"]), "--mode", mode, "--epochs", "1",
                   "--batch-size", "32", "--crop-padding", "4", *run["common"], "--out", str(outs[mode]))
    return outs


@pytest.mark.slow
def test_train_and_latency_table(run: dict[str, Any]) -> None:
    supernet, meta = load_supernet(run["checkpoint"])
    space = supernet.space
    assert space.name == "nb201-cpu" and meta["train_config"]["crop_padding"] == 4
    assert f"largest  {space.arch_string(space.largest())}" in run["printed"]["train"]
    cache = image_cache_path(run["data"], 3, 32)
    assert cache.is_file() and Path(os.environ["ONESHOT_CACHE"]) in cache.parents
    assert not list(run["data"].rglob("*.pt")), "the image cache must never be written into the data folder"
    assert "space nb201-cpu: 19/19 units measured" in run["printed"]["build"]

    out = run["root"] / "validation"  # no --space: the table's own
    checked = run_module("search.latency", "validate", "--table", str(run["table"]), "--subnets", "3", "--out", str(out))
    assert "Kendall tau" in checked.stdout and "worst cases" in checked.stdout
    rows = json.loads((out / "validation.json").read_text())["subnets"]
    assert len(rows) == 3 and all(space.to_string(space.parse(r["arch"])) == r["arch"] for r in rows)
    assert (out / "validation.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(UserError, match=r"is for another search space \('nb201-cpu'"):  # a --space must agree
        latency_cli(["validate", "--table", str(run["table"]), "--space", "mbv3", "--out", str(run["root"] / "v2")])


@pytest.mark.slow
def test_evolution_and_bo_find_cells_under_the_budget(run: dict[str, Any]) -> None:
    space, budget = run["space"], run["budget"]
    results = json.loads(run["results"].read_text())
    (name, winner), = results["winners"].items()
    assert name == f"cpu:{budget:g}" and (run["results"].parent / "search.png").read_bytes()[:4] == b"\x89PNG"
    assert all(r["metrics"]["latency_ms@cpu"] <= budget for r in results["history"])
    assert space.to_string(winner["arch"]) == winner["arch_string"] == space.to_string(space.parse(winner["arch_string"]))
    assert winner["meets_budget"] == (winner["measured_latency_ms"] <= budget)
    assert winner["arch_string"] in run["printed"]["evolve"]
    assert results["config"]["data"] == str(run["data"]), "search left --data out and did not score on CIFAR-10"

    table = load_table(run["table"])
    low, high = table.predict(space.smallest()), table.predict(space.largest())
    scenarios = [f"cpu:{low + (high - low) * f:.3f}" for f in (0.3, 0.7)]
    run_module("search.bo", "--scenarios", ",".join(scenarios), "--evaluations", "4", "--initial", "2", "--pool", "20",
               "--verify", "2", *run["common"], "--out", str(run["root"] / "bo"))
    bo = json.loads((run["root"] / "bo" / "results.json").read_text())
    assert [s["name"] for s in bo["scenarios"]] == list(bo["winners"]) and len(bo["winners"]) == 2
    for scenario in bo["scenarios"]:
        won = bo["winners"][scenario["name"]]
        assert won["metrics"]["latency_ms@cpu"] <= scenario["latency_ms"]
        assert space.to_string(space.parse(won["arch_string"])) == won["arch_string"]


def trained_names(model: torch.nn.Module, inherited: torch.nn.Module) -> set[str]:
    """The parameters of ``model`` that differ from those of ``inherited``."""
    start = dict(inherited.named_parameters())
    return {k for k, v in model.named_parameters() if not torch.equal(v, start[k])}


@pytest.mark.slow
def test_retrain_every_mode_trains_what_it_names(run: dict[str, Any], retrained: dict[str, Path]) -> None:
    space = run["space"]
    winner = json.loads(run["results"].read_text())["winners"][f"cpu:{run['budget']:g}"]
    supernet, _ = load_supernet(run["checkpoint"])
    inherited = supernet.extract(space.parse(winner["arch_string"]))
    names = {k for k, _ in inherited.named_parameters()}
    # nb201-cpu is cell, reduction, cell, reduction, cell: the last stage is the second reduction and last cell
    last_stage = {k for k in names if k.startswith(("cells.3.", "cells.4."))}
    end = {k for k in names if k.startswith(("head.", "classifier."))}
    assert end and last_stage
    for mode, out in retrained.items():
        result = json.loads((out / "retrain.json").read_text())
        assert result["config"]["crop_padding"] == 4 and result["mode"] == mode
        assert RetrainConfig(**result["config"]).schedule(3).crop_padding == 4  # what epoch_batches crops by
        assert space.to_string(space.parse(result["arch"])) == winner["arch_string"]
        assert (result["metrics"]["val_top1_before"] is None) == (mode == "scratch")
        assert 0 <= result["metrics"]["test"]["top1"] <= 1 and result["metrics"]["test"]["images"] == 10 * PER_CLASS
        assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
        model, _ = load_subnet(out / "model.pt")
        changed = trained_names(model, inherited)
        if mode == "head":
            assert changed and changed <= end
        elif mode == "last-stages":
            assert changed <= last_stage | end and any(k.startswith("cells.3.") for k in changed)  # its reduction
        else:  # finetune trains everything; scratch starts from fresh weights
            assert changed - last_stage - end
    with pytest.raises(UserError, match="--stages 4 exceeds the space's 3 stages"):
        retrain_cli(["--results", str(run["results"]), "--mode", "last-stages", "--stages", "4", *run["common"],
                     "--out", str(run["root"] / "refused")])


@pytest.mark.slow
def test_ensemble_and_exports_run_without_the_project(run: dict[str, Any], retrained: dict[str, Path],
                                                      tmp_path: Path) -> None:
    space = run["space"]
    supernet, _ = load_supernet(run["checkpoint"])
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    winner = json.loads(run["results"].read_text())["winners"][f"cpu:{run['budget']:g}"]

    # --calibration-size 0 keeps the supernet's statistics: the files must give the supernet's logits exactly
    out = tmp_path / "winner.pt"
    run_module("search.export", "--arch", winner["arch_string"], "--checkpoint", str(run["checkpoint"]), "--data",
               str(run["data"]), "--calibration-size", "0", "--table", str(run["table"]), "--format", "both",
               "--out", str(out))
    supernet.set_active(space.parse(winner["arch_string"]))
    with torch.no_grad():
        expected = supernet.eval()(x)
    for path in (out, out.with_suffix(".onnx")):
        assert read_metadata(path)["arch"] == winner["arch_string"]
        torch.testing.assert_close(logits_without_the_project(path, x, tmp_path), expected, atol=1e-4, rtol=1e-4)

    subnet = tmp_path / "finetuned.pt"
    run_module("search.export", "--subnet", str(retrained["finetune"] / "model.pt"), "--out", str(subnet))
    model, _ = load_subnet(retrained["finetune"] / "model.pt")
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(subnet))(x), model(x), atol=1e-4, rtol=1e-4)

    results = json.loads(run["results"].read_text())
    metrics = {r["arch_string"]: r["metrics"] for r in results["history"]}
    fastest = sorted(metrics[k]["latency_ms@cpu"] for k in results["pareto_front"])
    budget = sum(fastest[:2]) + 0.01
    ensemble = run["results"].parent / "ensemble"  # checkpoint, data, table, calibration: the search's
    run_module("search.ensemble", str(run["results"]), "--latency-ms", f"{budget:.3f}", "--out", str(ensemble),
               "--export")
    members = [m["arch"] for m in json.loads((ensemble / "ensemble.json").read_text())["members"]]
    assert members and set(members) <= set(results["pareto_front"])
    calibration = load_splits(run["data"], channels=3, size=32, val_size=20).train.subset(torch.arange(20))
    with torch.no_grad():
        subnets = [recalibrate_bn(supernet.extract(space.parse(k)), calibration).eval() for k in members]
        torch.testing.assert_close(torch.jit.load(str(ensemble / "ensemble.pt"))(x),
                                   torch.stack([s(x) for s in subnets]).mean(0), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_report_shows_cells_with_pipes_intact(run: dict[str, Any], retrained: dict[str, Path]) -> None:
    results = json.loads(run["results"].read_text())
    out = run["results"].parent
    run_module("search.report", str(run["results"]), "--out", str(out / "report.md"))
    report = (out / "report.md").read_text()
    (name, winner), = results["winners"].items()
    cell = lambda arch: "`" + arch.replace("|", "\\|") + "`"  # noqa: E731  (| escaped inside table cells)
    assert f"| {name} | {cell(winner['arch_string'])} |" in report
    assert all(cell(key) in report for key in results["pareto_front"])
    assert all(f"{mode}, 1 ep" in report for mode in MODES)
    check_markdown(report, out)
