"""How well a predictor matches measurements: the figures ``search.latency validate`` prints.

Error figures are relative to the measurement: MAPE, the share of predictions within +-5% and +-10%, and
Kendall's tau-b between predicted and measured rank orders (what a search needs: is A faster than B?), and
Spearman's rho for the supernet ranking bench.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b: (concordant - discordant) pairs, normalised with ties in either list accounted for."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("kendall_tau needs two 1-d sequences of the same length")
    i, j = np.triu_indices(len(x), k=1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    denominator = np.sqrt(np.count_nonzero(dx) * np.count_nonzero(dy))
    return float(np.sum(dx * dy) / denominator) if denominator else float("nan")


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``values``; tied values share the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, group, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(group, weights=ranks) / counts)[group]


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the (tie-averaged) ranks."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("spearman_rho needs two 1-d sequences of the same length")
    rx, ry = _ranks(x) - (len(x) - 1) / 2, _ranks(y) - (len(y) - 1) / 2
    denominator = np.sqrt(np.sum(rx * rx) * np.sum(ry * ry))
    return float(np.sum(rx * ry) / denominator) if denominator else float("nan")


def agreement(predicted: Sequence[float], measured: Sequence[float], worst: int = 5) -> dict[str, Any]:
    """MAPE (%), shares within +-5% and +-10% (%), Kendall tau and the ``worst`` cases' indices and errors."""
    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    if p.shape != m.shape or len(m) == 0 or np.any(m <= 0):
        raise ValueError("agreement needs equally many predictions and positive measurements")
    error = (p - m) / m
    order = np.argsort(-np.abs(error))[:worst]
    return {"count": len(m), "mape_pct": float(100 * np.mean(np.abs(error))),
            "within_5_pct": float(100 * np.mean(np.abs(error) <= 0.05)),
            "within_10_pct": float(100 * np.mean(np.abs(error) <= 0.10)),
            "kendall_tau": kendall_tau(p, m),
            "worst": [{"index": int(k), "error_pct": float(100 * error[k])} for k in order]}


def fit_affine(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """``(scale, offset)`` minimising the squared *relative* error of ``scale * x + offset`` against ``y``.

    With fewer than two points, or no spread in ``x``, only a scale is fitted (the median ratio).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) == 0:
        return 1.0, 0.0
    ratio_only = (float(np.median(y / x)), 0.0)
    if len(x) < 2 or np.ptp(x) <= 1e-9 * np.max(np.abs(x)):
        return ratio_only
    design = np.stack([x / y, 1 / y], axis=1)
    (scale, offset), *_ = np.linalg.lstsq(design, np.ones_like(y), rcond=None)
    return (float(scale), float(offset)) if scale > 0 else ratio_only


def format_row(name: str, figures: Mapping[str, Any]) -> str:
    return (f"{name:<34} MAPE {figures['mape_pct']:5.2f}%   within 5%: {figures['within_5_pct']:5.1f}%   "
            f"within 10%: {figures['within_10_pct']:5.1f}%   Kendall tau {figures['kendall_tau']:.3f}")
