"""Pictures for people: search results (accuracy against latency, budget and winner marked) and latency-table
validation (predicted against measured latency)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from supernet.io import atomic_write


def plot_search(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Every evaluated architecture (predicted latency, validation accuracy) coloured by generation (with a
    colour bar; behind them in grey, what a guided search's predictor scored, at its predicted accuracy), the
    Pareto front, and each scenario's budget and winner (see :func:`_each_scenario`; beyond
    :data:`FEW_SCENARIOS`, a sweep, :func:`_many_scenarios`), every mark in the legend or on a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history, metric = results["history"], results["latency_metric"]
    by_key = {r["arch_string"]: r for r in history}
    fig, ax = plt.subplots(figsize=(7.4, 4.8), dpi=120)
    guessed = results.get("predicted") or []  # a guided search: what the predictor scored, behind the rest
    if guessed:
        ax.scatter([r["metrics"][metric] for r in guessed], [100 * r["metrics"]["predicted_top1"] for r in guessed],
                   s=5, color="tab:gray", alpha=0.35, label="scored by the predictor (predicted top-1)")
    few = len(results["scenarios"]) <= FEW_SCENARIOS  # else the colour bar is the budgets'
    points = ax.scatter([r["metrics"][metric] for r in history], [100 * r["metrics"]["val_top1"] for r in history],
                        s=12, c=[r["generation"] for r in history] if few else "tab:blue", cmap="viridis" if few else None,
                        label="evaluated by the supernet" if guessed else "evaluated")
    if len({r["generation"] for r in history}) > 1 and few:
        fig.colorbar(points, ax=ax, pad=0.01).set_label("generation (epoch for differentiable search)")
    front = [by_key[k] for k in results["pareto_front"] if k in by_key]
    front.sort(key=lambda r: r["metrics"][metric])
    ax.step([r["metrics"][metric] for r in front], [100 * r["metrics"]["val_top1"] for r in front], where="post",
            color="tab:gray", linewidth=1, label="Pareto front")
    scenarios = results["scenarios"]
    if len(scenarios) <= FEW_SCENARIOS:
        _each_scenario(ax, plt, results)
    else:
        _many_scenarios(fig, ax, plt, results, xmax=max(r["metrics"][metric] for r in history + guessed))
    ax.set_xlabel(f"latency (ms), {metric.split('@')[-1]}: predicted by the table unless marked measured")
    ax.set_ylabel("validation top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6 if len(scenarios) > 3 else 7, loc="best", ncol=2 if 3 < len(scenarios) and few else 1)
    return save_png(fig, path)


FEW_SCENARIOS = 6  # up to this many, each scenario's budget and winner has its own legend entries


def _each_scenario(ax: Any, plt: Any, results: dict[str, Any]) -> None:
    """Each scenario's budget (a dashed line) and winner (a star at its predicted latency, a cross at its
    measured one, joined), in its own colour and legend entries; stars shrink scenario by scenario."""
    colours = plt.get_cmap("tab10")
    scenarios = results["scenarios"]
    for i, scenario in enumerate(scenarios):
        w = results["winners"][scenario["name"]]
        colour = colours(i % 10)
        y = 100 * w["metrics"]["val_top1"]
        ax.axvline(scenario["latency_ms"], color=colour, linestyle="--", linewidth=1,
                   label=f"{scenario['name']} budget")
        ax.plot([w["predicted_latency_ms"], w["measured_latency_ms"]], [y, y], color=colour, linewidth=0.8, zorder=3)
        ax.scatter([w["predicted_latency_ms"]], [y], marker="*", s=max(60, 260 - 200 * i / max(1, len(scenarios))),
                   color=colour, edgecolor="black", zorder=4 + i, label=f"{scenario['name']} winner, predicted")
        ax.scatter([w["measured_latency_ms"]], [y], marker="x", s=60, color=colour, zorder=4 + i,
                   label=f"{scenario['name']} winner, measured")


def _many_scenarios(fig: Any, ax: Any, plt: Any, results: dict[str, Any], xmax: float) -> None:
    """Many scenarios (a sweep of budgets): every winner coloured by its budget on one colour bar, two legend
    entries for all, and the budgets as dotted lines where they fall among the points (one past them all
    would only squash the picture)."""
    from matplotlib.colors import Normalize

    scenarios = results["scenarios"]
    budgets = [s["latency_ms"] for s in scenarios]
    winners = [results["winners"][s["name"]] for s in scenarios]
    cmap, norm = plt.get_cmap("plasma"), Normalize(min(budgets), max(budgets))
    ys = [100 * w["metrics"]["val_top1"] for w in winners]
    for budget, w, y in zip(budgets, winners, ys):
        if budget <= xmax * 1.05:
            ax.axvline(budget, color=cmap(norm(budget)), linestyle=":", linewidth=0.6, alpha=0.6)
        ax.plot([w["predicted_latency_ms"], w["measured_latency_ms"]], [y, y], color=cmap(norm(budget)),
                linewidth=0.6, zorder=3)
    stars = ax.scatter([w["predicted_latency_ms"] for w in winners], ys, marker="*", s=110, c=budgets, cmap=cmap,
                       norm=norm, edgecolor="black", linewidth=0.4, zorder=4,
                       label=f"winners of {len(scenarios)} budgets, predicted latency (budgets dotted)")
    ax.scatter([w["measured_latency_ms"] for w in winners], ys, marker="x", s=36, c=budgets, cmap=cmap, norm=norm,
               zorder=4, label="winners, measured latency")
    fig.colorbar(stars, ax=ax, pad=0.01).set_label(f"budget (ms), {scenarios[0]['name'].rsplit(':', 1)[0]}")


def save_png(fig: Any, path: str | os.PathLike, rect: tuple[float, float, float, float] | None = None) -> Path:
    """Write ``fig`` as a PNG atomically and release it; ``rect``: the part of the figure the axes may fill
    (room for a figure-level legend)."""
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=rect)
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def scatter_png(path: str | os.PathLike, measured: Sequence[float], predictors: Mapping[str, Sequence[float]],
                title: str, quantity: str = "latency (ms)", band: float | None = 0.10) -> Path:
    """Predicted against measured ``quantity`` for each predictor, with the +-``band`` band around the
    diagonal (None: none; a relative band means nothing for, say, an accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(measured, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(5.6, 5.2), dpi=120)
    if band is None:  # frame the points themselves, 5% of their span around them
        low = min([float(m.min())] + [float(np.min(v)) for v in predictors.values()])
        high = max([float(m.max())] + [float(np.max(v)) for v in predictors.values()])
        pad = 0.05 * (high - low) or 1.0
        lo, hi = low - pad, high + pad
    else:
        lo, hi = float(m.min()) * 0.85, float(m.max()) * 1.15
        for values in predictors.values():
            lo, hi = min(lo, float(np.min(values)) * 0.95), max(hi, float(np.max(values)) * 1.05)
    line = np.array([lo, hi])
    if band is not None:
        ax.fill_between(line, line * (1 - band), line * (1 + band), color="tab:green", alpha=0.12,
                        label=f"within {100 * band:g}%")
    ax.plot(line, line, color="black", linewidth=0.8)
    for (name, values), marker in zip(predictors.items(), "o^sx"):
        ax.scatter(m, values, s=12, marker=marker, alpha=0.75, label=name)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"measured {quantity}")
    ax.set_ylabel(f"predicted {quantity}")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return save_png(fig, path)
