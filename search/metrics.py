"""Classification metrics of a trained subnet: top-1, macro precision / recall / F1 and the confusion matrix.

Macro averages weigh every class equally, so a model that neglects one class shows it even when top-1 looks
fine. A class that is never predicted has precision 0 (and one absent from the labels has recall 0), as
scikit-learn's ``zero_division=0`` counts them.
"""
from __future__ import annotations

import textwrap
from typing import Any, Sequence

import torch


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[true class, predicted class]`` counts as int64."""
    index = labels.long() * num_classes + predicted.long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_report(logits: torch.Tensor, labels: torch.Tensor,
                          classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Top-1, macro precision, recall and F1, per-class figures and the confusion matrix of ``logits``."""
    num_classes = logits.shape[1]
    matrix = confusion_matrix(logits.argmax(1), labels, num_classes).double()
    hits = matrix.diag()
    predicted, actual = matrix.sum(0), matrix.sum(1)
    precision = torch.where(predicted > 0, hits / predicted.clamp(min=1), torch.zeros_like(hits))
    recall = torch.where(actual > 0, hits / actual.clamp(min=1), torch.zeros_like(hits))
    both = precision + recall
    f1 = torch.where(both > 0, 2 * precision * recall / both.clamp(min=1e-12), torch.zeros_like(hits))
    names = list(classes) if classes else [str(c) for c in range(num_classes)]
    return {
        "images": int(matrix.sum().item()),
        "top1": (hits.sum() / matrix.sum()).item(),
        "macro_precision": precision.mean().item(),
        "macro_recall": recall.mean().item(),
        "macro_f1": f1.mean().item(),
        "per_class": {name: {"precision": p, "recall": r, "f1": f, "support": int(s)}
                      for name, p, r, f, s in zip(names, precision.tolist(), recall.tolist(), f1.tolist(),
                                                  actual.tolist())},
        "classes": names,
        "confusion": matrix.long().tolist(),
    }


def confusion_png(report: dict[str, Any], path: str, title: str) -> str:
    """The confusion matrix of :func:`classification_report` as a PNG heat map, counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from search.plot import save_png

    matrix = torch.tensor(report["confusion"], dtype=torch.float64)
    names = report["classes"]
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=120)
    ax.imshow(matrix.numpy(), cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max().item() / 2
    for (i, j), count in zip(((i, j) for i in range(len(names)) for j in range(len(names))), matrix.flatten()):
        ax.text(j, i, int(count), ha="center", va="center", fontsize=6,
                color="white" if count > threshold else "black")
    ax.set_title(textwrap.fill(title, 100), fontsize=8)  # long architecture strings (nb201's) span lines
    return str(save_png(fig, path))
