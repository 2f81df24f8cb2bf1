"""Predictor-guided search: the accuracy predictor stands in for the supernet, which checks the best at the end.

A search with a predictor (:mod:`search.predictor`; by default the one fitted beside the checkpoint) runs in
three steps per scenario:

1. **Screen.** :func:`screen` draws ``--screen`` architectures uniformly within the latency budget with the
   C++ sampler (:func:`supernet.sampler.sample`), scores their FLOPs and parameters in one
   :func:`supernet.sampler.score` call, and predicts their accuracy in one batched call; the best seed the
   algorithm's first population (:class:`Seeded`), the rest of its random draws come from the window sampler.
2. **Search.** The algorithm (evolution, NSGA-II, BO, random) ranks by ``predicted_top1``: each evaluation is a
   predictor call (batched as the algorithm batches its candidates), so hundreds cost a second or less, and
   none is journalled (the predictor is deterministic: a rerun repeats them).
3. **Verify.** The ``--verify`` best candidates by predicted accuracy are evaluated with the supernet
   (``val_top1``, as a direct search scores), then timed end to end from the most accurate by the supernet
   down until one meets the budget: that one wins, the most accurate by the supernet whose measured latency
   meets the budget, and the less accurate are not timed (``scored`` in the results). Both are journalled.

The results say which figure is which (``figures``): ``predicted_top1`` comes from the predictor, ``val_top1``
from the supernet, ``latency_ms@DEVICE`` from the table, ``measured_latency_ms`` from the clock.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from search.predictor import Predictor, default_out, load_predictor
from search.problem import Bound, Metrics
from search.space import Arch
from supernet.errors import UserError
from supernet.sampler import MetricTable, decode, sample, score

PREDICTED = "predicted_top1"
DEFAULT_SCREEN = 20_000
AUTO, NONE = "auto", "none"


def predictor_choice(choice: str, checkpoint: str) -> str:
    """``--predictor`` resolved: ``auto`` becomes the file ``python -m search.predictor fit`` writes beside
    ``checkpoint`` if it exists, else ``none``; anything else is kept."""
    if choice != AUTO:
        return choice
    beside = default_out(checkpoint)
    return beside if Path(beside).is_file() else NONE


def resolve_predictor(choice: str, checkpoint: str, space: Any) -> Predictor | None:
    """The predictor a search uses (``choice`` as :func:`predictor_choice` resolves it), or None for ``none``;
    one fitted for another space or checkpoint is refused in one line."""
    choice = predictor_choice(choice, checkpoint)
    return None if choice == NONE else load_predictor(choice, space=space, checkpoint=checkpoint)


def describe(predictor: Predictor) -> str:
    """One line naming the predictor and how well it ranks held-out subnets."""
    figures = predictor.figures
    tau = figures["models"][figures["chosen"]]["kendall_tau"]
    return (f"{predictor.path} ({figures['chosen']}, fitted on {figures['fitted_on']} supernet evaluations, "
            f"held-out Kendall tau {'n/a' if tau is None else f'{tau:.3f}'})")


def predictor_evaluator(predictor: Predictor) -> Callable[[list[Arch]], list[Metrics]]:
    """The batched evaluator of a guided search (``Problem.evaluate_many``): predicted validation top-1."""
    def evaluate_many(archs: list[Arch]) -> list[Metrics]:
        return [{PREDICTED: float(p)} for p in predictor.predict(archs).tolist()]
    return evaluate_many


def screen(space: Any, predictor: Predictor, latency: MetricTable, counts: MetricTable, budget_ms: float,
           fixed: Sequence[Bound], *, count: int, keep: int, seed: int) -> list[Arch]:
    """The ``keep`` architectures of highest predicted accuracy among ``count`` drawn uniformly within
    ``budget_ms`` (quantised, as :class:`supernet.sampler.WindowDraws` draws) that meet the ``fixed`` bounds
    (``flops``, ``params``), best first, no two naming one network. Empty if ``count`` is 0."""
    if count <= 0 or keep <= 0:
        return []
    codes = sample(space, count, seed=seed, latency=latency, window=(0.0, budget_ms))
    metrics = score(space, codes, counts)
    ok = torch.ones(len(codes), dtype=torch.bool)
    for bound in fixed:
        column = metrics[:, counts.names.index(bound.metric)]
        if bound.upper is not None:
            ok &= column <= bound.upper
        if bound.lower is not None:
            ok &= column >= bound.lower
    codes = codes[ok]
    order = torch.argsort(predictor.predict(codes), descending=True, stable=True)
    best: dict[str, Arch] = {}
    for start in range(0, len(order), 4 * keep):  # decode only as far down the ranking as needed
        for arch in decode(space, codes[order[start:start + 4 * keep]]):
            best.setdefault(space.to_string(arch), arch)
        if len(best) >= keep:
            break
    return list(best.values())[:keep]


@dataclass
class Seeded:
    """A sampler that returns ``first`` in order, then draws from ``then`` (a window sampler, or a space's
    ``sample``): the screened best become the algorithm's first random candidates."""

    first: list[Arch]
    then: Callable[[random.Random], Arch]
    _given: int = field(default=0, init=False)

    def __call__(self, rng: random.Random) -> Arch:
        if self._given < len(self.first):
            self._given += 1
            return dict(self.first[self._given - 1])
        return self.then(rng)
