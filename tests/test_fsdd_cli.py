"""Every command line on the audio space ``mbv3-fsdd``, through ``python -m``, on a slice of the real FSDD.

Spoken digits (symlinks to ``PER_DIGIT`` recordings of each digit by two speakers and split): train the
supernet, build its latency table (the log-mel front end timed as part of the stem), search by evolution,
retrain the winner, export TorchScript and ONNX that take raw 8 kHz audio and give the supernet's logits in a
process without this project, and write the report. tests/test_audio.py checks the front end in depth.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from search.export import read_metadata
from search.latency import load_table
from supernet.audio import load_audio
from supernet.checkpoint import load_supernet
from supernet.family import audio_frontend
from tests.conftest import (BENCH, FSDD, NO_FSDD, check_markdown, check_search_results, logits_without_the_project,
                            make_fsdd_slice, retrain_winner, run_module, run_script, train_table_and_search)

pytestmark = [pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=NO_FSDD), pytest.mark.slow]

PER_DIGIT = 3  # 2 speakers: 60 training recordings (20 of them the validation split), 60 test recordings


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A trained ``mbv3-fsdd`` supernet, its latency table and a search by evolution, with what they printed."""
    root = tmp_path_factory.mktemp("fsdd-cli")
    return train_table_and_search(root, "mbv3-fsdd", make_fsdd_slice(root / "fsdd", PER_DIGIT),
                                  ["--batch-size", "20", "--random-subnets", "0"], evaluations=6)


def test_train_on_audio_records_the_front_end(run: dict[str, Any]) -> None:
    supernet, meta = load_supernet(run["checkpoint"])
    assert supernet.space.name == "mbv3-fsdd" and supernet.config.frontend.sample_rate == 8000
    assert meta["classes"] == [str(d) for d in range(10)]
    assert "largest " in run["printed"]["train"] and "test " in run["printed"]["train"]
    table = load_table(run["table"])
    assert table.space.config == supernet.config and "stem" in table.data["entries"]


def test_evolution_and_bo_find_subnets_under_the_budgets(run: dict[str, Any]) -> None:
    results = check_search_results(run)
    (winner,) = results["winners"].values()
    assert winner["arch_string"] in run["printed"]["evolve"]
    assert results["config"]["data"] == str(run["data"])


def test_retrain_export_and_report(run: dict[str, Any], tmp_path: Path) -> None:
    space = run["space"]
    winner, result = retrain_winner(run, batch_size=20)
    assert result["metrics"]["test"]["images"] == 10 * 2 * PER_DIGIT

    # --calibration-size 0 keeps the supernet's statistics: the files must give the supernet's logits on raw audio
    out = tmp_path / "winner.pt"
    run_module("search.export", "--arch", winner["arch_string"], "--checkpoint", str(run["checkpoint"]),
               "--calibration-size", "0", "--table", str(run["table"]), "--format", "both", "--out", str(out))
    x = torch.rand(3, 1, 1, 8000, generator=torch.Generator().manual_seed(0)) * 2 - 1
    supernet, _ = load_supernet(run["checkpoint"])
    supernet.set_active(space.parse(winner["arch_string"]))
    with torch.no_grad():
        expected = supernet.eval()(x)
    for path in (out, out.with_suffix(".onnx")):
        metadata = read_metadata(path)
        assert metadata["input"]["kind"] == "audio" and metadata["input"]["sample_rate"] == 8000
        assert metadata["input"]["shape"] == ["N", 1, 1, 8000]
        torch.testing.assert_close(logits_without_the_project(path, x, tmp_path), expected, atol=1e-4, rtol=1e-4)

    # the file alone, fed the raw test recordings, classifies as many right as the supernet's subnet
    _, (clips, labels), _ = load_audio(run["data"], audio_frontend(space.config))
    with torch.no_grad():
        right = int((supernet(clips.float() / 32768.0).argmax(1) == labels).sum())
    scored = run_script(BENCH / "deployed_accuracy.py", str(out), "--data", str(run["data"]))
    assert f": {right} of {len(labels)} test recordings right" in scored.stdout

    report = run["results"].parent / "report.md"
    run_module("search.report", str(run["results"]), "--out", str(report))
    text = report.read_text()
    assert winner["arch_string"] in text and "finetune, 1 ep" in text
    check_markdown(text, report.parent)
