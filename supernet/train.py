"""Train a weight-sharing supernet once: ``python -m supernet.train --out runs/supernet``.

``--sampling`` picks which subnets each step trains (default: the space family's own rule):

- ``sandwich`` (mbv3's default, as in BigNAS / Once-for-All): the largest subnet learns from the labels, then
  the smallest and ``--random-subnets`` random subnets learn from the largest's predictions (in-place
  distillation).
- ``uniform`` (SPOS, nb201's default): ``--paths`` subnets drawn uniformly (one, as published) learn from the
  labels.
- ``fair`` (FairNAS' strict fairness): as many subnets as a choice has options, drawn so that every option of
  every choice is trained exactly once per step, learn from the labels; this is what raises the supernet's
  rank correlation with stand-alone training in FairNAS.

The gradients of a step's subnets add up (``uniform`` and ``fair``: their mean) into one optimizer step. The
learning rate follows a cosine schedule after a short warm-up.

``OUT/last.pt`` (resumable, with optimizer state) is written atomically every ``--checkpoint-every`` steps
and at each epoch's end; ``--resume`` continues from it and ends with the same weights as an uninterrupted
run. An ``--out`` that already holds a run is refused unless ``--resume`` or ``--overwrite`` (start over), and
so is one another process is writing (see :mod:`supernet.outdir`). At the end the largest and smallest subnets
are scored on the validation and test splits and ``OUT/final.pt`` (weights only, with the config, the command
line and these figures) is written.

``torchrun --nproc-per-node N -m supernet.train ...`` trains data-parallel (see :mod:`supernet.distributed`):
``--batch-size`` stays the global batch, so a run's steps and data order, and its checkpoints, do not depend
on the number of processes. Only rank 0 writes files and shows progress.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from supernet.checkpoint import FORMAT, load_resumable, restore, save_checkpoint
from supernet.data import DEFAULT_DATA, ImageSet, Splits, batches, load_splits
from supernet.distributed import DEVICES, Group, join
from supernet.divergence import StepGuard
from supernet.errors import (ArgumentParser, Number, UserError, check_ranges, float_range, int_range,
                             non_negative_float, random_seed, run_cli, unit_interval)
from supernet.evaluate import subnet_accuracy
from supernet.family import build_supernet, config_from_dict, data_format, family_of, get_space
from supernet.io import write_json
from supernet.outdir import claim_folder
from supernet.schema import ANYTHING, COUNT, NUMBER, TEXT, Each, Nullable, Optional, config_schema


@dataclass
class TrainConfig:
    """Everything that decides a training run; saved in every checkpoint."""

    space: str = "mbv3"
    data: str = DEFAULT_DATA
    out: str = "runs/supernet"
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.1  # 0: the optimizer's default (OPTIMIZERS: AdamW 0.001)
    optimizer: str = ""  # sgd or adamw; "": the space family's default
    momentum: float = 0.9
    weight_decay: float = 3e-5
    label_smoothing: float = 0.1
    warmup_steps: int = 100
    sampling: str = ""  # sandwich, uniform (SPOS) or fair (FairNAS); "": the space family's default
    random_subnets: int = 2  # sandwich: random subnets per step besides the largest and smallest
    paths: int = 1  # uniform: subnets per step
    flip: bool = True
    crop_padding: int = 0  # random crops of each image zero-padded by this many pixels (CIFAR-10: 4); 0: none
    seed: int = 0
    val_size: int = 5000
    calib_size: int = 2000
    subset: int = 0  # train on the first N training images only (0: all); for quick runs and tests
    checkpoint_every: int = 100
    stop_after: int = 0  # stop after N steps in this run, leaving OUT/last.pt to --resume (0: run to the end)
    channels_last: bool = True
    nonfinite_limit: int = 5  # stop after this many steps in a row with a non-finite loss (each is skipped)

    def validate(self) -> "TrainConfig":
        """Check every field; an empty ``sampling`` becomes the space family's default (saved resolved)."""
        check_ranges(self, TRAIN_RANGES)
        space = get_space(self.space)
        if not self.sampling:
            self.sampling = family_of(space.config).default_sampling
        if self.sampling not in SAMPLINGS:
            raise UserError(f"--sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")
        self.optimizer = self.optimizer or family_of(space.config).default_optimizer
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        self.lr = self.lr or OPTIMIZERS[self.optimizer]
        return self


TRAIN_RANGES: dict[str, Number] = {  # every numeric field's range: the flag's type= and validate()'s check
    "epochs": int_range(), "batch_size": int_range(), "lr": non_negative_float,
    "momentum": float_range(0.0, 1.0, below=True), "weight_decay": non_negative_float,
    "label_smoothing": unit_interval, "warmup_steps": int_range(0), "random_subnets": int_range(0),
    "paths": int_range(1, 64),
    "crop_padding": int_range(0, 64), "seed": random_seed, "val_size": int_range(), "calib_size": int_range(), "subset": int_range(0),
    "checkpoint_every": int_range(), "stop_after": int_range(0), "nonfinite_limit": int_range()}

# What train() reads from OUT/last.pt to resume (besides the space and state dict every checkpoint has).
RESUMABLE = {"train_config": config_schema(TrainConfig),
             "optimizer": {"state": Each(ANYTHING), "param_groups": [Each(ANYTHING)]},
             "progress": {"step": COUNT, "losses": Optional([Nullable(NUMBER)]),
                          "nonfinite": Optional({"in_a_row": Optional(COUNT), "skipped": Optional(COUNT)})},
             "command": Optional(Nullable([TEXT]))}

RUN_FILES = ("last.pt", "final.pt", "metrics.json")  # what makes OUT a training run; --overwrite removes them


HELP = {  # what each flag of supernet.train is for (its default is added by supernet.errors.ArgumentParser)
    "space": "registered search space to train (python -c 'from supernet.family import list_spaces; "
             "print(list_spaces())')",
    "data": "dataset folder: Fashion-MNIST IDX files or an ImageFolder with train/ and test/; for an audio space, "
            "WAV files named as FSDD's ({label}_{speaker}_{index}.wav) or in train/<class>/ and test/<class>/; for a "
            "text space, a folder with train.tsv and test.tsv (or dev.tsv) of 'label<TAB>sentence' lines",
    "out": "output folder (last.pt, final.pt, metrics.json)",
    "epochs": "passes over the training images", "batch_size": "images per step (the global batch under torchrun)",
    "lr": "peak learning rate (0: the optimizer's, SGD 0.1 and AdamW 0.001)",
    "optimizer": "sgd (Nesterov momentum) or adamw (decoupled weight decay); default: the space family's (mbv3 and "
                 "nb201: sgd; transformer: adamw)",
    "momentum": "SGD momentum (AdamW: its first beta)",
    "weight_decay": "weight decay of convolution, linear and embedding weights",
    "label_smoothing": "label smoothing of the cross-entropy", "warmup_steps": "linear warm-up steps before the cosine",
    "sampling": "which subnets each step trains: sandwich, uniform (SPOS) or fair (FairNAS); default: the family's",
    "random_subnets": "sandwich: random subnets per step besides the largest and smallest",
    "paths": "uniform: subnets per step",
    "flip": "random horizontal flips of images (audio clips are never flipped)",
    "crop_padding": "random crops zero-padded by this many pixels (CIFAR-10: 4); 0: none",
    "seed": "weight init, data order and validation split", "val_size": "training images held out for search",
    "calib_size": "images that recalibrate batch norm for the final scores",
    "subset": "train on the first N training images only (0: all)",
    "checkpoint_every": "steps between writes of OUT/last.pt",
    "stop_after": "stop after N steps in this run, for --resume later (0: run to the end)",
    "channels_last": "channels-last memory format (faster on CPU for mbv3)",
    "nonfinite_limit": "stop after this many steps in a row with a non-finite loss"}


def parse_args(argv: list[str] | None) -> tuple[TrainConfig, bool, bool, str]:
    defaults = TrainConfig()
    parser = ArgumentParser(prog="python -m supernet.train", description=__doc__.splitlines()[0])
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if field.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=HELP[field.name])
        else:
            parser.add_argument(flag, type=TRAIN_RANGES.get(field.name, type(default)), default=default,
                                metavar=field.name.upper(), help=HELP[field.name])
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--overwrite", action="store_true",
                        help=f"start over in an --out that holds a run (removes its {', '.join(RUN_FILES)})")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="train on the CPU or a GPU (under torchrun: the GPU numbered LOCAL_RANK)")
    args = vars(parser.parse_args(argv))
    resume, overwrite, device = args.pop("resume"), args.pop("overwrite"), args.pop("device")
    return TrainConfig(**args), resume, overwrite, device


def lr_at(config: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    return config.lr * warmup * 0.5 * (1 + math.cos(math.pi * step / total))


OPTIMIZERS = {"sgd": 0.1, "adamw": 1e-3}  # each optimizer's default peak learning rate


def make_optimizer(model: nn.Module, config: Any) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum, or AdamW (``config.optimizer``, default SGD); no weight decay on norm
    parameters and biases. ``config``: any config with ``lr``, ``momentum`` and ``weight_decay``
    (training, retraining, differentiable search)."""
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if (getattr(config, "optimizer", "") or "sgd") == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=(config.momentum, 0.98))
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)


def epoch_batches(train_set: ImageSet, config: Any, epoch: int,
                  start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch's batches from batch ``start``: order, flips and crops depend only on ``config.seed`` and
    ``epoch``, so a resumed run sees the batches an uninterrupted one would. ``config``: any config with
    ``seed``, ``batch_size``, ``flip`` and ``crop_padding``."""
    seed = config.seed * 1000 + epoch
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))
    return batches(train_set, config.batch_size, order=order, start=start, flip_seed=seed if config.flip else None,
                   crop_padding=config.crop_padding, crop_seed=seed)


def set_lr(optimizer: torch.optim.Optimizer, config: TrainConfig, step: int, total: int) -> float:
    """Set every parameter group's learning rate to :func:`lr_at` and return it."""
    lr = lr_at(config, step, total)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def sandwich_step(model: Any, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
                  rng: random.Random) -> float:
    """Accumulate the gradients of one sandwich step; return the largest subnet's loss."""
    space = model.space
    model.set_active(space.largest())
    logits = model(x)
    loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
    loss.backward()
    teacher = logits.detach().softmax(1)
    for arch in [space.smallest()] + [space.sample(rng) for _ in range(config.random_subnets)]:
        model.set_active(arch)
        distill = -(teacher * model(x).log_softmax(1)).sum(1).mean()
        distill.backward()
    return loss.item()


def fair_paths(space: Any, rng: random.Random) -> list[dict[str, Any]]:
    """FairNAS' strictly fair draw: ``m`` subnets (``m`` = the most options of any choice) in which every
    choice takes each of its options equally often (exactly once where it has ``m``), from one random
    permutation per choice."""
    m = max(len(options) for options in space.choices.values())
    columns = {}
    for key, options in space.choices.items():
        order = [options[i % len(options)] for i in range(m)]
        rng.shuffle(order)
        columns[key] = order
    return [{key: columns[key][i] for key in space.choices} for i in range(m)]


def path_step(model: Any, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, rng: random.Random) -> float:
    """Accumulate the mean gradient of a ``uniform`` or ``fair`` step's subnets; return their mean loss."""
    space = model.space
    archs = fair_paths(space, rng) if config.sampling == "fair" else [space.sample(rng) for _ in range(config.paths)]
    total = 0.0
    for arch in archs:
        model.set_active(arch)
        loss = F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing) / len(archs)
        loss.backward()
        total += loss.item()
    return total


SAMPLINGS = ("sandwich", "uniform", "fair")


def training_images(splits: Splits, subset: int) -> ImageSet:
    """The images a run learns from: the first ``subset`` of the training split (0: all of them).

    A subset larger than the split is refused rather than clipped: the run would not be the one asked for.
    """
    if subset > len(splits.train):
        raise UserError(f"--subset {subset} is more than the {len(splits.train)} training images (those the "
                        "validation split leaves); lower it, or leave it out to train on all")
    return splits.train.subset(torch.arange(subset)) if subset else splits.train


def final_metrics(model: Any, splits: Splits, config: TrainConfig) -> dict[str, Any]:
    """Validation and test accuracy of the largest and smallest subnets (recalibrated batch norm)."""
    calibration = splits.train.subset(torch.arange(min(config.calib_size, len(splits.train))))
    model = model.to(memory_format=torch.contiguous_format).eval()
    metrics: dict[str, Any] = {}
    for name, arch in (("largest", model.space.largest()), ("smallest", model.space.smallest())):
        metrics[name] = {"arch": model.space.to_string(arch),
                         "val_top1": subnet_accuracy(model, arch, calibration, splits.val),
                         "test_top1": subnet_accuracy(model, arch, calibration, splits.test)}
    return metrics


def train(config: TrainConfig, resume: bool = False, command: list[str] | None = None,
          group: Group = Group()) -> dict[str, Any]:
    """Run (or resume) a training run as one process of ``group``; return the final metrics (rank 0) or the
    progress (the other ranks)."""
    out = Path(config.out)
    last = out / "last.pt"
    state: dict[str, Any] | None = None
    if resume:
        state = group.from_main(lambda: load_resumable(last, FORMAT, RESUMABLE))
        stop_after = config.stop_after
        try:
            config = dataclasses.replace(TrainConfig(**state["train_config"]), stop_after=stop_after)
        except TypeError as err:
            raise UserError(f"checkpoint {last} has a training config this version cannot read ({err})") from None
        if group.is_main:
            print(f"resuming {last} at step {state['progress']['step']}", file=sys.stderr)
    config.validate()
    space = get_space(config.space)
    if state is not None and config_from_dict(state["space"], str(last)) != space.config:
        raise UserError(f"--resume: {last} holds a supernet whose space differs from the registered space "
                        f"{config.space!r}; start a new run without --resume")
    splits = load_splits(config.data, **data_format(space.config), val_size=config.val_size, seed=config.seed,
                         num_classes=space.config.num_classes)
    classes = list(splits.classes)  # recorded in every checkpoint: what its outputs mean
    train_set = training_images(splits, config.subset)
    group.check_batch_size(config.batch_size, len(train_set))
    torch.manual_seed(config.seed)
    model = build_supernet(space.config).to(group.device)
    optimizer = make_optimizer(model, config)
    step = 0
    losses: list[float | None] = []  # the global batch's loss (largest subnet) at each step; None: skipped
    guard = StepGuard(model, config.nonfinite_limit, str(last), verbose=group.is_main,
                      saved=state["progress"]["step"] if state is not None else None)
    if state is not None:
        restore(model, state["state_dict"], last, "weights")
        restore(optimizer, state["optimizer"], last, "optimizer state")
        step = state["progress"]["step"]
        losses = (list(state["progress"].get("losses", [])) + [None] * step)[:step]  # None: not recorded
        guard.load_state_dict(state["progress"].get("nonfinite", {}))
    if state is not None:
        command = state.get("command") or command  # a resumed run records the command that started it
    command = command or sys.argv
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format).train()
    per_epoch = math.ceil(len(train_set) / config.batch_size)
    total = config.epochs * per_epoch
    if group.is_main:
        write_json(out / "config.json", {"train_config": dataclasses.asdict(config), "command": command,
                                         "world_size": group.world_size, "device": group.device.type})

    def checkpoint(path: Path, **extra: Any) -> None:
        guard.check_state(step, state_dict=model.state_dict(), optimizer=extra.get("optimizer"))  # on every rank
        if group.is_main:
            save_checkpoint(path, model, train_config=dataclasses.asdict(config), command=command, classes=classes,
                            progress={"step": step, "total_steps": total, "world_size": group.world_size,
                                      "losses": losses, "nonfinite": guard.state_dict()}, **extra)

    step_rule = sandwich_step if config.sampling == "sandwich" else path_step
    start = time.time()
    end = min(total, step + config.stop_after) if config.stop_after else total
    with tqdm(total=total, initial=step, desc="supernet", unit="step", dynamic_ncols=True,
              disable=not group.is_main) as bar:
        while step < end:
            epoch, first = divmod(step, per_epoch)
            for x, y in epoch_batches(train_set, config, epoch, start=first):
                set_lr(optimizer, config, step, total)
                optimizer.zero_grad(set_to_none=True)
                x, y, share = group.shard(x, y)
                guard.before()
                loss = step_rule(model, x.to(group.device, memory_format=memory_format), y.to(group.device), config,
                                 random.Random(f"{config.seed}-{step}"))
                loss = group.reduce_step(model, loss, share)
                good = guard.check(loss, step)  # raises Diverged after too many bad steps in a row
                losses.append(loss if good else None)
                if good:
                    optimizer.step()
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.4f}")
                if (step % config.checkpoint_every == 0 or step % per_epoch == 0) and not guard.streak:
                    checkpoint(last, optimizer=optimizer.state_dict())  # never in a run of bad steps
                if step == end:
                    break
    checkpoint(last, optimizer=optimizer.state_dict())
    if not group.is_main:
        return {"step": step, "total_steps": total}
    if step < total:
        print(f"stopped at step {step} of {total}; continue with --resume --out {out}")
        return {"step": step, "total_steps": total}
    metrics = final_metrics(model.cpu(), splits, config)
    metrics["train_seconds_this_run"] = round(time.time() - start, 1)
    metrics["skipped_steps"] = guard.skipped
    checkpoint(out / "final.pt", metrics=metrics)
    write_json(out / "metrics.json", metrics)
    for name in ("largest", "smallest"):
        m = metrics[name]
        print(f"{name:8s} {m['arch']}  val {m['val_top1']:.4f}  test {m['test_top1']:.4f}")
    print(f"wrote {out / 'final.pt'}")
    return metrics


def main(argv: list[str] | None = None) -> None:
    config, resume, overwrite, device = parse_args(argv)
    claim = functools.partial(claim_folder, config.out, what="a training run", run_files=RUN_FILES, resume=resume,
                              overwrite=overwrite, resumable=True)
    with join(device) as group, group.on_main(claim):  # rank 0 alone writes OUT, so it alone claims it
        train(config, resume, command=["python", "-m", "supernet.train", *(sys.argv[1:] if argv is None else argv)],
              group=group)


if __name__ == "__main__":
    run_cli(main)
