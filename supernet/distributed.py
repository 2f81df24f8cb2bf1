"""Data-parallel training under ``torchrun``: ``torchrun --nproc-per-node N -m supernet.train ...``.

:func:`join` reads the environment torchrun sets (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``), joins the process group (gloo on CPU, NCCL on GPUs, one GPU per process chosen by
``LOCAL_RANK``) and yields this process's :class:`Group`; without torchrun it yields a group of one, and
training runs exactly as it always did.

How the work is split (what a ``DistributedSampler`` would do, without one):

- ``--batch-size`` is the *global* batch. Every rank draws the same seeded order of the same batches and
  keeps its contiguous share of each (:meth:`Group.shard`), so the data order, the number of steps and hence
  ``--resume`` do not depend on the world size: a checkpoint written by 4 processes resumes under 1 or 8.
- Every rank activates the same subnets at each step (they are drawn from ``random.Random(f"{seed}-{step}")``)
  and starts from the same weights (same seed).
- After the sandwich step's forward/backward passes, one all-reduce (:meth:`Group.reduce_step`) sums every
  rank's gradients, batch-norm running statistics and loss, each weighted by its share of the global batch:
  every rank then holds the gradient of the global batch's mean loss, takes the same optimizer step and keeps
  the same weights. Only batch norm's batch statistics stay per rank (no SyncBatchNorm), so N processes are
  close to, not bit-identical with, one process on the same global batch.

Why not ``DistributedDataParallel``: it all-reduces in hooks during one backward over a fixed set of used
parameters, while a sandwich step runs several backward passes (largest, smallest, random subnets), each
through different slices of the shared weights. Making it fit takes ``no_sync`` for all passes but the last,
``find_unused_parameters`` (a graph walk per forward) and it would broadcast rank 0's batch-norm statistics
over the others'; its gain, overlapping communication with the backward, would only cover the last pass. One
flat all-reduce per optimizer step is exact and simple, and sends what DDP would (the gradients) plus the
batch-norm statistics (under 2% more on ``mbv3``).

Searches use the same group (``torchrun ... -m search.evolve``): :meth:`Group.map` shares a batch of
evaluations round-robin over the ranks.

Only rank 0 reads and writes files (:meth:`Group.from_main` hands what it read to the others), so nobody reads
a half-written file and a run on several nodes needs ``--out`` on rank 0's node only; the data must be on
every node.
"""
from __future__ import annotations

import os
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from supernet.errors import UserError

T = TypeVar("T")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Group:
    """This process's place in a data-parallel run: its rank, how many processes, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, results and the progress bar."""
        return self.rank == 0

    def check_batch_size(self, batch_size: int, train_images: int) -> None:
        """Refuse a global batch that the ranks cannot share evenly, or an epoch whose last batch leaves a rank
        with no image (its batch norm would have nothing to normalise)."""
        if batch_size % self.world_size:
            raise UserError(f"--batch-size {batch_size} is the global batch and must be divisible by the "
                            f"{self.world_size} processes")
        if 0 < train_images % batch_size < self.world_size:
            raise UserError(f"the last batch of each epoch has {train_images % batch_size} image(s), fewer than the "
                            f"{self.world_size} processes; change --batch-size or --subset")

    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """This rank's contiguous part of a global batch, and its share of the batch's images."""
        if self.world_size == 1:
            return x, y, 1.0
        index = torch.tensor_split(torch.arange(len(y)), self.world_size)[self.rank]
        return x[index], y[index], len(index) / len(y)

    def reduce_step(self, model: nn.Module, loss: float, share: float) -> float:
        """Give every rank the global batch's gradients, batch-norm running statistics and loss.

        Each rank's values are for its shard (its loss is the shard's mean); weighted by ``share`` and summed
        over ranks they are the global batch's: exactly for gradients, loss and running means, to within the
        spread between shards for running variances. Gradients are those of the parameters that have one:
        the same set on every rank, since every rank ran the same subnets. Returns the global loss.
        """
        if self.world_size == 1:
            return loss
        tensors = [p.grad for p in model.parameters() if p.grad is not None]
        tensors += [b for b in model.buffers() if b.is_floating_point()]
        flat = torch.cat([t.reshape(-1) for t in tensors] + [torch.tensor([loss], device=self.device)])
        flat.mul_(share)
        dist.all_reduce(flat)
        for tensor, values in zip(tensors, flat[:-1].split([t.numel() for t in tensors])):
            tensor.copy_(values.view(tensor.shape))
        return flat[-1].item()

    def map(self, function: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``[function(item) for item in items]``, the items shared round-robin over the ranks.

        Rank r computes items r, r + N, r + 2N, ...; one ``all_gather_object`` then gives every rank every
        result, in the order of ``items``. What this is for: each rank runs the same seeded algorithm, so all
        know the same items, and only the expensive calls are split (a search's evaluations). A
        :class:`UserError` on any rank is raised on every rank, so none waits for a result that never comes.
        """
        if self.world_size == 1:
            return [function(item) for item in items]
        mine: dict[int, T] = {}
        error = None
        try:
            for index in range(self.rank, len(items), self.world_size):
                mine[index] = function(items[index])
        except UserError as err:
            error = str(err)
        gathered = self.gather((mine, error))
        errors = [e for _, e in gathered if e is not None]
        if errors:
            raise UserError(errors[0])
        merged = {index: result for part, _ in gathered for index, result in part.items()}
        return [merged[index] for index in range(len(items))]

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, by rank, on every rank (picklable values)."""
        if self.world_size == 1:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def from_main(self, read: Callable[[], T]) -> T:
        """``read()`` on rank 0 only; every rank gets its result, or raises its :class:`UserError`."""
        if self.world_size == 1:
            return read()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box = [(True, read())]
            except UserError as err:
                box = [(False, str(err))]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        ok, value = box[0]
        if not ok:
            raise UserError(value)
        return value

    @contextmanager
    def on_main(self, enter: Callable[[], AbstractContextManager[Any]]) -> Iterator[None]:
        """Hold the context ``enter()`` on rank 0 only, for the ``with`` block; its refusal stops every rank.

        For claiming the output (:mod:`supernet.outdir`): rank 0 alone writes it, so rank 0 alone locks it,
        and a refusal there is the same one-line :class:`UserError` on every rank.
        """
        with ExitStack() as stack:
            self.from_main(lambda: stack.enter_context(enter()) and None)
            yield


def torchrun_ranks() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment; ``(0, 1, 0)`` when not launched by it."""
    if "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    try:
        rank, world, local = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except (KeyError, ValueError):
        raise UserError("WORLD_SIZE is set but RANK and LOCAL_RANK are not both integers; launch data-parallel "
                        "training with `torchrun --nproc-per-node N -m supernet.train ...`") from None
    if not 0 <= rank < world:
        raise UserError(f"RANK {rank} is outside WORLD_SIZE {world}")
    return rank, world, local


def pick_device(name: str, local_rank: int) -> torch.device:
    """The CPU, or the GPU numbered ``local_rank`` on this node for ``cuda``."""
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda":
        raise UserError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}")
    if not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA GPU here")
    if local_rank >= torch.cuda.device_count():
        raise UserError(f"local rank {local_rank} has no GPU: torch sees {torch.cuda.device_count()}; start at "
                        "most one process per GPU (--nproc-per-node)")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


@contextmanager
def join(device: str = "cpu") -> Iterator[Group]:
    """Join torchrun's process group for the duration of the ``with`` block (a group of one without torchrun)."""
    rank, world, local = torchrun_ranks()
    group = Group(rank, world, pick_device(device, local))
    if world == 1:
        yield group
        return
    cuda = group.device.type == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world,
                            device_id=group.device if cuda else None)
    try:
        yield group
        dist.barrier()  # tear down together (NCCL's teardown is collective): the others wait for rank 0's results
    finally:
        dist.destroy_process_group()
