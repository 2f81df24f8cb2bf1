"""The Markdown report of a search, with a retrained winner and an ensemble found next to it, through
``python -m``."""
import json
from pathlib import Path

import pytest

from search.latency import load_table
from search.run import read_results
from supernet.checkpoint import load_supernet
from supernet.errors import UserError
from tests.conftest import check_markdown, run_module


@pytest.mark.slow
def test_report_gathers_front_winners_latency_and_retrain(tmp_path: Path, tiny_run: Path, fake_data: Path,
                                                          fast_table: Path) -> None:
    table = load_table(fast_table)
    space = load_supernet(tiny_run / "final.pt")[0].space
    budget = (table.predict(space.smallest()) + table.predict(space.largest())) / 2
    common = ["--checkpoint", str(tiny_run / "final.pt"), "--data", str(fake_data), "--table", str(fast_table),
              "--calibration-size", "32"]
    out = tmp_path / "search"
    run_module("search.evolve", "--latency-ms", f"{budget:.3f}", "--population", "4", "--evaluations", "6",
               "--children", "2", "--tournament", "2", "--verify", "3", *common, "--out", str(out))
    run_module("search.retrain", "--results", str(out / "results.json"), "--mode", "head", "--epochs", "1",
               "--batch-size", "64", *common, "--out", str(out / "retrain-head"))
    run_module("search.ensemble", str(out / "results.json"), "--latency-ms", f"{2 * budget:.3f}", "--max-members", "2",
               "--out", str(out / "ensemble"))
    printed = run_module("search.report", str(out / "results.json")).stdout
    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    retrained = json.loads((out / "retrain-head" / "retrain.json").read_text())
    ensemble = json.loads((out / "ensemble" / "ensemble.json").read_text())

    assert f"wrote {out / 'report.md'}" in printed
    for heading in ("## Accuracy against latency", "## Winners", "## Predicted against measured latency",
                    "## Retrained", "## Ensembles"):
        assert heading in report
    (name, winner), = results["winners"].items()
    cell = lambda arch: "`" + arch.replace("|", "\\|") + "`"  # noqa: E731  (| escaped inside table cells)
    assert f"| {name} | {cell(winner['arch_string'])} |" in report
    assert all(cell(key) in report for key in results["pareto_front"])
    assert report.count("| yes |") + report.count("| no |") == len(winner["verified"])
    one_point = "Only the winner was timed end to end" in report
    assert one_point == (len(winner["verified"]) == 1), "a single timed point must be called one, and only then"
    assert f"{100 * retrained['metrics']['test']['top1']:.2f}%" in report and "head, 1 ep" in report
    assert f"{100 * ensemble['gain_test_top1']:+.2f} points" in report
    assert all(cell(m["arch"]) in report for m in ensemble["members"])
    check_markdown(report, out)


@pytest.mark.slow
def test_report_refuses_a_file_that_is_not_search_results(tmp_path: Path) -> None:
    bogus = tmp_path / "results.json"
    bogus.write_text(json.dumps({"winners": {}}))
    result = run_module("search.report", str(bogus), check=False)
    assert result.returncode == 2 and "is not the results.json of a search" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_one_results_reader_refuses_what_every_command_would_trip_on(tmp_path: Path) -> None:
    """export, retrain, ensemble and report all read results through ``search.run.read_results``."""
    record = {"arch": {"stage1.depth": 2}, "arch_string": "k3e3-k3e3", "generation": 0,
              "metrics": {"val_top1": 0.5, "latency_ms@cpu": 4.0}}
    winner = {**record, "predicted_latency_ms": 4.0, "measured_latency_ms": 4.2, "meets_budget": True,
              "budget_ms": 10.0, "device": "cpu"}
    good = {"scenarios": [{"name": "cpu:10", "device": "cpu", "latency_ms": 10.0}], "winners": {"cpu:10": winner},
            "history": [record], "pareto_front": ["k3e3-k3e3"], "latency_metric": "latency_ms@cpu"}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(good))
    assert read_results(path) == good
    for bad, message in (([good], "is not the results.json of a search"),
                         ({k: v for k, v in good.items() if k != "history"}, "is not the results.json of a search"),
                         ({**good, "winners": []}, "is a malformed search results.json"),
                         ({**good, "pareto_front": "a"}, "is a malformed search results.json"),
                         ({**good, "pareto_front": ["k7e6"]}, "k7e6.* is not in its history"),
                         ({**good, "winners": {"cpu:10": {**winner, "measured_latency_ms": 0}}},
                          r"winners\['cpu:10'\].measured_latency_ms must be a positive"),
                         ({**good, "history": [{**record, "metrics": {"val_top1": 0.5}}]},
                          r"history\[0\].metrics lacks the latency metric")):
        path.write_text(json.dumps(bad))
        with pytest.raises(UserError, match=message):
            read_results(path)
    path.write_text(json.dumps(good)[:20])
    with pytest.raises(UserError, match="is not valid JSON"):
        read_results(path)
