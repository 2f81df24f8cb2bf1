"""bench/ranking.py end to end on tiny checkpoints: nb201 on a real CIFAR-10 slice, mbv3 on the fake data.

The nb201 supernet is trained here for a few steps with ``python -m supernet.train --space nb201-cpu`` on an
ImageFolder of symlinks to the shared CIFAR-10 (skipped when it is absent); the published-figure cases skip
without the bench-only package analog-nasbench.
"""
from __future__ import annotations

import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bench import ranking
from search.accuracy import kendall_tau
from supernet.errors import UserError
from supernet.family import get_space
from tests.conftest import CIFAR, NO_CIFAR, ROOT, make_cifar_slice, run_module

needs_cifar = pytest.mark.skipif(not (CIFAR / "train").is_dir(), reason=NO_CIFAR)
needs_published = pytest.mark.skipif(importlib.util.find_spec("analognasbench") is None,
                                     reason="analog-nasbench (bench-only: pip install analog-nasbench) is missing")
TINY = ["--epochs", "1", "--train-images", "48", "--batch-size", "24"]


@pytest.fixture(scope="module")
def nb201_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, data): an nb201-cpu supernet trained for 4 steps on 10 real images per class."""
    if not (CIFAR / "train").is_dir():
        pytest.skip(NO_CIFAR)
    base = tmp_path_factory.mktemp("nb201-ranking")
    data = make_cifar_slice(base / "cifar", 10)
    run_module("supernet.train", "--space", "nb201-cpu", "--data", str(data), "--epochs", "1", "--batch-size", "15",
               "--val-size", "40", "--calib-size", "40", "--warmup-steps", "1", "--crop-padding", "4",
               "--out", str(base / "run"))
    return base / "run" / "final.pt", data


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    """``python bench/ranking.py ARGS`` as a user runs it; fails the test on a non-zero exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "ranking.py"), *args], env=env, text=True,
                            capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def class_mean(space, key: str) -> float:
    """The published figure of ``key``'s function class, recomputed from the raw table."""
    from bench.nb201_published import all_published

    table = all_published()
    return statistics.fmean(table[space.arch_string(c)] for c in space.cells() if space.to_string(c) == key) / 100


def test_uniform_draws_are_distinct_networks_from_one_stream() -> None:
    nb201, mbv3 = get_space("nb201-cpu"), get_space("mbv3")
    draws = ranking.uniform_cells(nb201, 300, seed=3)
    keys = [nb201.to_string(a) for a in draws]
    assert len(set(keys)) == 300 and all(nb201.to_string(nb201.parse(k)) == k for k in keys)
    assert ranking.uniform_cells(nb201, 40, seed=3) == draws[:40] != ranking.uniform_cells(nb201, 40, seed=4)
    # mbv3 is too large to list: its draws stay what they were before this bench knew other spaces
    rng = random.Random(0)
    assert ranking.uniform_cells(mbv3, 3, seed=0) == [mbv3.sample(rng) for _ in range(3)]
    with pytest.raises(UserError, match="6466 distinct networks"):
        ranking.uniform_cells(nb201, 6467, seed=0)


@needs_published
@pytest.mark.slow
def test_quantile_pick_spreads_over_the_published_range() -> None:
    space = get_space("nb201-cpu")
    published = ranking.published_by_function(space)
    picked = [published[space.to_string(a)][0] for a in ranking.quantile_cells(space, 6, published)]
    above_chance = [v for v, _ in published.values() if v > 0.1 + 1e-9]
    assert picked == sorted(set(picked)) and picked[0] == min(above_chance) and picked[-1] == max(above_chance)
    assert sum(v < picked[3] for v in set(above_chance)) == pytest.approx(0.6 * (len(set(above_chance)) - 1), abs=1)
    lively = [key for key in published if published[key][0] > 0.1 + 1e-9]
    largest = max(lively, key=lambda key: published[key][1])  # many raw cells of unequal figures: their mean
    assert published[largest][1] >= 25 and published[largest][0] == pytest.approx(class_mean(space, largest))


@needs_cifar
@pytest.mark.slow
def test_nb201_trained_ranking_end_to_end_resumes_and_extends(nb201_run: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, data = nb201_run
    out = tmp_path / "rank"
    first = bench("--checkpoint", str(checkpoint), "--subnets", "3", *TINY, "--crop-padding", "4", "--out", str(out))
    results = json.loads((out / "ranking.json").read_text())
    assert results["settings"]["data"] == str(data) and results["settings"]["crop_padding"] == 4
    rows = results["subnets"]
    space = get_space("nb201-cpu")
    assert [r["arch"] for r in rows] == [space.to_string(a) for a in ranking.uniform_cells(space, 3, 0)]
    assert all(0 <= r["inherited_top1"] <= 1 and 0 <= r["standalone_top1"] <= 1 and r["train_seconds"] >= 0
               for r in rows)
    summary = results["summary"]
    assert summary["kendall_tau"] == pytest.approx(kendall_tau([r["inherited_top1"] for r in rows],
                                                               [r["standalone_top1"] for r in rows]), nan_ok=True)
    assert "Kendall tau (inherited vs trained stand-alone)" in first.stdout
    assert (out / "ranking.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if importlib.util.find_spec("analognasbench") is not None:
        assert rows[0]["published_top1"] == pytest.approx(class_mean(space, rows[0]["arch"]))
        assert "trained_vs_published" in summary and "trained vs published" in first.stdout
        assert (out / "ranking-published.png").is_file()

    again = bench("--checkpoint", str(checkpoint), "--subnets", "4", *TINY, "--crop-padding", "4", "--out", str(out))
    assert "3 already in" in again.stdout
    extended = json.loads((out / "ranking.json").read_text())["subnets"]
    assert extended[:3] == rows and len(extended) == 4
    with pytest.raises(UserError, match="other settings"):
        ranking.main(["--checkpoint", str(checkpoint), "--subnets", "4", *TINY, "--out", str(out)])  # no crops


@needs_cifar
@needs_published
@pytest.mark.slow
def test_nb201_against_published_figures(nb201_run: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint, _ = nb201_run
    out = tmp_path / "published"
    ranking.main(["--checkpoint", str(checkpoint), "--standalone", "published", "--pick", "quantiles",
                  "--subnets", "4", "--out", str(out)])
    results = json.loads((out / "ranking.json").read_text())
    rows, space = results["subnets"], get_space("nb201-cpu")
    assert "epochs" not in results["settings"] and "class" in results["published_source"]
    assert all(r["standalone_top1"] == r["published_top1"] and "train_seconds" not in r for r in rows)
    assert [r["standalone_top1"] for r in rows] == sorted(r["standalone_top1"] for r in rows)
    assert rows[-1]["published_top1"] == pytest.approx(class_mean(space, rows[-1]["arch"]))
    assert "inherited vs published" in capsys.readouterr().out


@pytest.mark.slow
def test_mbv3_runs_as_before_and_refuses_published(tiny_run: Path, fake_data: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = str(tiny_run / "final.pt")
    ranking.main(["--checkpoint", checkpoint, "--subnets", "2", *TINY, "--out", str(tmp_path / "mbv3")])
    results = json.loads((tmp_path / "mbv3" / "ranking.json").read_text())
    assert results["settings"]["data"] == str(fake_data)  # the checkpoint's dataset by default
    space = get_space("mbv3")
    assert [r["arch"] for r in results["subnets"]] == [space.to_string(a) for a in ranking.uniform_cells(space, 2, 0)]
    assert "published_top1" not in results["subnets"][0] and "trained_vs_published" not in results["summary"]
    # a file written before the recipe flags existed resumes as made with their defaults (no cell is redone)
    results["settings"] = {k: v for k, v in results["settings"].items() if ranking.LEGACY_SETTINGS.get(k) != v}
    assert "lr" not in results["settings"] and "standalone" not in results["settings"]
    (tmp_path / "mbv3" / "ranking.json").write_text(json.dumps(results))
    monkeypatch.setattr(ranking, "train_standalone", lambda *a: pytest.fail("a finished cell was trained again"))
    ranking.main(["--checkpoint", checkpoint, "--subnets", "2", *TINY, "--out", str(tmp_path / "mbv3")])
    for flag in (["--standalone", "published"], ["--pick", "quantiles"]):
        with pytest.raises(UserError, match="not an nb201 space"):
            ranking.main(["--checkpoint", checkpoint, *flag, "--out", str(tmp_path / "refused")])
