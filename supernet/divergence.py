"""Guard a training loop against non-finite losses: skip the bad step, stop when they keep coming.

A step whose loss or gradients hold an inf or a NaN would write garbage into the weights, the optimizer's
momentum and (through the forward pass) the batch-norm running statistics. :class:`StepGuard` takes a copy of
the buffers before each step; after the backward pass it checks the loss and every gradient, and on a bad
step restores the buffers and drops the gradients, so the optimizer never sees it: the model is as it was
before the batch. ``limit`` bad steps in a row raise :class:`~supernet.errors.Diverged` before anything more is
written, so the last checkpoint on disk is the last good state.

Under ``torchrun`` the guard runs after the all-reduce, on the same loss and gradients on every rank, so all
ranks take the same decision.
"""
from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from supernet.errors import Diverged


def grads_finite(model: nn.Module) -> bool:
    """Whether every gradient of ``model`` is finite (parameters without a gradient are skipped).

    One flag per gradient, reduced on the device, then read once: a single host sync per step, not one per
    parameter (this runs after every training step).
    """
    flags = [p.grad.isfinite().all() for p in model.parameters() if p.grad is not None]
    return bool(torch.stack(flags).all()) if flags else True


class StepGuard:
    """Skips non-finite steps of ``model`` and counts them; ``limit`` in a row raise :class:`Diverged`.

    ``checkpoint`` names the file that holds the last good state, for the message. ``state_dict`` /
    ``load_state_dict`` carry the counts through a checkpoint, so a resumed run stops where an uninterrupted
    one would.
    """

    def __init__(self, model: nn.Module, limit: int, checkpoint: str, *, verbose: bool = True):
        self.model = model
        self.limit = limit
        self.checkpoint = checkpoint
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
                           f"(steps {step + 2 - self.in_a_row}-{step + 1}); {self.checkpoint} holds the last good "
                           "state: lower --lr and start again")
        if self.verbose:
            tqdm.write(f"warning: step {step + 1}: {what}; step skipped ({self.in_a_row} in a row, training stops "
                       f"at {self.limit})", file=sys.stderr)
        return False

    @property
    def streak(self) -> bool:
        """Whether the last step was skipped (checkpoints wait for a good step)."""
        return self.in_a_row > 0

    def state_dict(self) -> dict[str, Any]:
        return {"in_a_row": self.in_a_row, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.in_a_row = int(state.get("in_a_row", 0))
        self.skipped = int(state.get("skipped", 0))
