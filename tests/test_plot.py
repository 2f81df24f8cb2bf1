"""The search picture explains itself: every mark is in the legend or on a colour bar, and winners that
coincide all stay visible."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import search.plot as plot


def results(scenarios: list[float], same_winner: bool) -> dict[str, Any]:
    history = [{"arch_string": f"a{i}", "generation": i // 3, "metrics": {"val_top1": 0.8 + 0.01 * i,
                                                                           "latency_ms@cpu": 5.0 + i}}
               for i in range(9)]
    names = [f"cpu:{b:g}" for b in scenarios]
    winners = {n: {**history[4 if same_winner else (2 + i) % 9], "predicted_latency_ms": 9.0, "measured_latency_ms": 9.4}
               for i, n in enumerate(names)}
    return {"history": history, "latency_metric": "latency_ms@cpu", "pareto_front": ["a0", "a8"],
            "scenarios": [{"name": n, "latency_ms": b} for n, b in zip(names, scenarios)], "winners": winners}


@pytest.fixture
def figure(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    caught: dict[str, Any] = {}

    def keep(fig: Any, path: Any) -> Path:
        caught["fig"] = fig
        return Path(path)

    monkeypatch.setattr(plot, "save_png", keep)
    return caught


def test_every_mark_is_explained(figure: dict[str, Any], tmp_path: Path) -> None:
    plot.plot_search(results([10, 12], same_winner=True), tmp_path / "search.png")
    fig = figure["fig"]
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    for name in ("cpu:10", "cpu:12"):
        assert f"{name} budget" in labels and f"{name} winner, measured" in labels
        assert f"{name} winner, predicted" in labels
    assert any("generation" in a.get_ylabel() for a in fig.axes[1:]), "no colour bar for the generations"
    stars = [c for c in ax.collections if c.get_label().endswith("winner, predicted")]
    sizes = [float(c.get_sizes()[0]) for c in stars]
    assert sizes[0] > sizes[1], "the second scenario's star must not hide the first's at the same place"


def test_a_sweep_of_budgets_has_one_colour_bar_not_a_legend_entry_each(figure: dict[str, Any], tmp_path: Path) -> None:
    budgets = [5 + 0.5 * i for i in range(40)]
    plot.plot_search(results(budgets, same_winner=False) | {"predicted": []}, tmp_path / "search.png")
    fig = figure["fig"]
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "winners of 40 budgets, predicted latency (budgets dotted)" in labels and "winners, measured latency" in labels
    assert len(labels) <= 6 and not any(label.startswith("cpu:") for label in labels)
    assert [a.get_ylabel() for a in fig.axes[1:]] == ["budget (ms), cpu"]  # one colour bar: the budgets
