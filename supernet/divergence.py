"""Guard a training loop against non-finite losses: skip the bad step, stop when they keep coming.

A step whose loss or gradients hold an inf or a NaN would write garbage into the weights, the optimizer's
momentum and (through the forward pass) the batch-norm running statistics. :class:`StepGuard` takes a copy of
the buffers before each step; after the backward pass it checks the loss and every gradient, and on a bad
step restores the buffers and drops the gradients, so the optimizer never sees it: the model is as it was
before the batch. ``limit`` bad steps in a row raise :class:`~supernet.errors.Diverged` before anything more is
written, so the last checkpoint on disk is the last good state.

A step can also have a finite loss and gradients and still leave non-finite weights (a huge learning rate
overflows them). So before each checkpoint :meth:`StepGuard.check_state` looks at every tensor about to be
written (weights, statistics, optimizer momentum) and refuses a non-finite state with :class:`Diverged`:
what the message calls the last good state is always finite, or it says that none was saved.

Under ``torchrun`` the guard runs after the all-reduce, on the same loss and gradients on every rank, so all
ranks take the same decision.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from tqdm import tqdm

from supernet.errors import Diverged


def finite_flags(tensors: Sequence[torch.Tensor]) -> list[bool]:
    """Whether each of ``tensors`` is finite (no NaN, no infinity).

    A tensor is finite exactly when its largest absolute value is, and ``torch._foreach_norm`` (what
    ``clip_grad_norm_`` uses) takes those maxima for all tensors in one fused call; they are then read at
    once: a single host sync, not one per tensor (this runs after every training step and on every checkpoint
    load, where it is twice as fast as one ``isfinite().all()`` per tensor).
    """
    flags = [True] * len(tensors)  # an empty tensor is finite (and has no maximum)
    full = [i for i, t in enumerate(tensors) if t.numel()]
    if full:
        device = tensors[full[0]].device
        maxima = torch._foreach_norm([tensors[i] for i in full], math.inf)
        for i, ok in zip(full, torch.stack([m.to(device) for m in maxima]).isfinite().tolist()):
            flags[i] = ok
    return flags


def grads_finite(model: nn.Module) -> bool:
    """Whether every gradient of ``model`` is finite (parameters without a gradient are skipped)."""
    return all(finite_flags([p.grad for p in model.parameters() if p.grad is not None]))


def floating_tensors(tree: Any, name: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for every floating-point tensor in nested dicts, lists and tuples, named by its path
    (``state_dict['stem.conv.weight']``, ``optimizer['state'][3]['momentum_buffer']``)."""
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() or tree.is_complex():
            yield name, tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from floating_tensors(value, f"{name}[{key!r}]" if name else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from floating_tensors(value, f"{name}[{i}]")


def nonfinite_tensors(tree: Any) -> list[str]:
    """The names (see :func:`floating_tensors`) of the tensors in ``tree`` that hold a NaN or an infinity."""
    named = list(floating_tensors(tree))
    return [name for (name, _), ok in zip(named, finite_flags([t for _, t in named])) if not ok]


class StepGuard:
    """Skips non-finite steps of ``model`` and counts them; ``limit`` in a row raise :class:`Diverged`.

    ``checkpoint`` names the file that holds the last good state, for the message; ``saved`` is the step it
    holds when the run resumed from it (None: nothing saved yet), and :meth:`check_state` moves it on.
    ``state_dict`` / ``load_state_dict`` carry the counts through a checkpoint, so a resumed run stops where an
    uninterrupted one would.
    """

    def __init__(self, model: nn.Module, limit: int, checkpoint: str, *, saved: int | None = None,
                 verbose: bool = True):
        self.model = model
        self.limit = limit
        self.checkpoint = checkpoint
        self.saved = saved
        self.verbose = verbose
        self.in_a_row = 0
        self.skipped = 0
        self._buffers: list[torch.Tensor] = []

    def before(self) -> None:
        """Remember the buffers (batch-norm statistics) as they are before the step."""
        self._buffers = [b.detach().clone() for b in self.model.buffers()]

    def check(self, loss: float, step: int) -> bool:
        """Whether step ``step`` (0-based) may update the weights; undo its side effects if not."""
        if math.isfinite(loss) and grads_finite(self.model):
            self.in_a_row = 0
            return True
        with torch.no_grad():
            for buffer, saved in zip(self.model.buffers(), self._buffers):
                buffer.copy_(saved)
        self.model.zero_grad(set_to_none=True)
        self.in_a_row += 1
        self.skipped += 1
        what = f"non-finite loss ({loss})" if not math.isfinite(loss) else "non-finite gradients"
        if self.in_a_row >= self.limit:
            raise Diverged(f"training diverged: {self.in_a_row} steps in a row with a non-finite loss or gradients "
                           f"(steps {step + 2 - self.in_a_row}-{step + 1}); {self._last_good()}: lower --lr and "
                           "start again")
        if self.verbose:
            tqdm.write(f"warning: step {step + 1}: {what}; step skipped ({self.in_a_row} in a row, training stops "
                       f"at {self.limit})", file=sys.stderr)
        return False

    def check_state(self, step: int, **states: Any) -> None:
        """Before a checkpoint of ``states`` (state dicts by name) after ``step`` steps is written: raise
        :class:`Diverged` if any of their tensors is non-finite, so that it is not; else it becomes the last good
        state."""
        bad = nonfinite_tensors(states)
        if bad:
            raise Diverged(f"training diverged: after step {step} {len(bad)} tensors of the model or optimizer are "
                           f"non-finite (first {bad[0]}) though the losses were finite; not saved, "
                           f"{self._last_good()}: lower --lr and start again")
        self.saved = step

    def _last_good(self) -> str:
        if self.saved is None:
            return f"no good state was saved ({self.checkpoint} was not written by this run)"
        return f"{self.checkpoint} holds the last good state (step {self.saved})"

    @property
    def streak(self) -> bool:
        """Whether the last step was skipped (checkpoints wait for a good step)."""
        return self.in_a_row > 0

    def state_dict(self) -> dict[str, Any]:
        return {"in_a_row": self.in_a_row, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.in_a_row = int(state.get("in_a_row", 0))
        self.skipped = int(state.get("skipped", 0))
