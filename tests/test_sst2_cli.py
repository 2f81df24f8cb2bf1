"""Every command line on the text space ``tfm-sst2``, through ``python -m``, on a slice of the real SST-2.

Train the elastic transformer (sandwich rule, AdamW), build its latency table (embedding, layer and head units
per embedding width), search by evolution and by BO for two scenarios, retrain the winner, export TorchScript
and ONNX that take token ids and give the supernet's logits in a process without this project (the vocabulary
in their metadata), and write the report. tests/test_text.py checks the data and the model in depth.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from search.export import read_metadata
from search.latency import load_table
from supernet.checkpoint import load_supernet
from supernet.text import encode_sentences, read_tsv
from tests.conftest import (BENCH, NO_SST2, SST2, check_markdown, check_search_results, logits_without_the_project,
                            make_sst2_slice, retrain_winner, run_module, run_script, train_table_and_search)

pytestmark = [pytest.mark.skipif(not SST2.is_dir(), reason=NO_SST2), pytest.mark.slow]

TRAIN, TEST = 200, 40  # sentences of train.tsv (20 of them the validation split) and of dev.tsv


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A trained ``tfm-sst2`` supernet, its latency table and a search by evolution, with what they printed."""
    root = tmp_path_factory.mktemp("sst2-cli")
    return train_table_and_search(root, "tfm-sst2", make_sst2_slice(root / "sst2", TRAIN, TEST),
                                  ["--batch-size", "20", "--random-subnets", "1", "--lr", "0"], evaluations=6)


def test_train_on_text_records_the_optimizer_and_the_units(run: dict[str, Any]) -> None:
    supernet, meta = load_supernet(run["checkpoint"])
    assert supernet.space.name == "tfm-sst2" and meta["classes"] == ["0", "1"]
    assert meta["train_config"]["optimizer"] == "adamw" and meta["train_config"]["lr"] == 1e-3
    assert "largest " in run["printed"]["train"] and "test " in run["printed"]["train"]
    entries = load_table(run["table"]).data["entries"]
    assert {"embed.e64", "head.e128", "layer.e96.h4.f512"} <= set(entries) and len(entries) == 3 * (2 + 9)


def test_evolution_and_bo_find_subnets_under_the_budgets(run: dict[str, Any]) -> None:
    results = check_search_results(run)
    assert len({r["arch_string"].split("|")[0] for r in results["history"]}) > 1  # several embedding widths tried


def test_differentiable_search_is_refused_in_one_line(run: dict[str, Any]) -> None:
    result = run_module("search.dnas", "--space", "tfm-sst2", "--checkpoint", str(run["checkpoint"]),
                        "--latency-ms", "50", "--table", str(run["table"]), check=False)
    assert result.returncode != 0 and "no relaxed supernet for differentiable search" in result.stderr
    assert "Traceback" not in result.stderr


def test_retrain_export_and_report(run: dict[str, Any], tmp_path: Path) -> None:
    space = run["space"]
    winner, result = retrain_winner(run, batch_size=20)
    assert result["metrics"]["test"]["images"] == TEST

    out = tmp_path / "winner.pt"
    run_module("search.export", "--arch", winner["arch_string"], "--checkpoint", str(run["checkpoint"]),
               "--table", str(run["table"]), "--format", "both", "--out", str(out))
    supernet, _ = load_supernet(run["checkpoint"])
    supernet.set_active(space.parse(winner["arch_string"]))
    for path in (out, out.with_suffix(".onnx")):
        metadata = read_metadata(path)
        assert metadata["input"]["kind"] == "text" and metadata["input"]["shape"] == ["N", 1, 1, 64]
        vocabulary = metadata["input"]["vocabulary"]
        assert vocabulary[:2] == ["the", ","]  # SST-2's most frequent words, ids 2 and 3
        x = encode_sentences(["a gripping , moving film", "the plot is a mess ."], vocabulary, 64).float()
        with torch.no_grad():
            expected = supernet.eval()(x)
        torch.testing.assert_close(logits_without_the_project(path, x, tmp_path), expected, atol=1e-4, rtol=1e-4)

    # the file alone, fed the raw dev sentences, classifies as many right as the supernet's subnet
    lines = read_tsv(run["data"] / "dev.tsv")
    ids = encode_sentences([" ".join(words) for _, words in lines], read_metadata(out)["input"]["vocabulary"], 64)
    with torch.no_grad():
        right = int((supernet(ids.float()).argmax(1) == torch.tensor([int(label) for label, _ in lines])).sum())
    scored = run_script(BENCH / "deployed_accuracy.py", str(out), "--data", str(run["data"]))
    assert f": {right} of {TEST} test sentences right" in scored.stdout

    report = run["results"].parent / "report.md"
    run_module("search.report", str(run["results"]), "--out", str(report))
    text = report.read_text()
    assert winner["arch_string"].replace("|", "\\|") in text or winner["arch_string"] in text
    check_markdown(text, report.parent)
