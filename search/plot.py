"""Pictures of search results, for people: accuracy against latency with the budget and the winner marked."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from supernet.io import atomic_write


def plot_search(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Scatter every evaluated architecture (predicted latency, validation accuracy) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = results["history"]
    winner = results["winner"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    ax.scatter([r["metrics"]["predicted_latency_ms"] for r in history],
               [100 * r["metrics"]["val_top1"] for r in history],
               s=14, c=[r["generation"] for r in history], cmap="viridis", label="evaluated (colour: generation)")
    ax.axvline(results["budget_ms"], color="tab:red", linestyle="--", label=f"budget {results['budget_ms']:g} ms")
    m = winner["metrics"]
    ax.scatter([m["predicted_latency_ms"]], [100 * m["val_top1"]], marker="*", s=220, color="tab:orange",
               edgecolor="black", zorder=3, label="winner (predicted)")
    if "measured_latency_ms" in m:
        ax.scatter([m["measured_latency_ms"]], [100 * m["val_top1"]], marker="x", s=80, color="black",
                   zorder=3, label="winner (measured)")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(f"{winner['arch_string']}", fontsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
