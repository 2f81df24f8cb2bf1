"""Fine-tune or retrain a searched subnet and report it on the test split: ``python -m search.retrain``.

``--mode`` says what trains and from which weights:

- ``finetune``: every layer, from the inherited weights (batch norm recalibrated as the search scored it);
- ``head``: only the head and classifier, the rest frozen (weights and batch-norm statistics);
- ``last-stages``: the last ``--stages`` stages, the head and the classifier;
- ``scratch``: every layer from fresh weights (``supernet.model.init_weights``), as a stand-alone network.

Training is plain cross-entropy with label smoothing, SGD with Nesterov momentum, a short warm-up then cosine
learning rate, flips, padded random crops with ``--crop-padding`` (as ``supernet.train``; CIFAR-10: 4) and
channels-last, on the training images outside the search's validation split (the same split
``search.evolve`` scored on). ``OUT/last.pt`` (with the optimizer state) is written atomically
every ``--checkpoint-every`` steps and at each epoch's end; ``--resume`` continues from it and ends with the
same weights as an uninterrupted run. An ``--out`` that already holds a run is refused unless ``--resume`` or
``--overwrite`` (start over), and so is one another process is writing (see :mod:`supernet.outdir`).

At the end: validation top-1 (before and after), top-1, macro precision / recall / F1 and the confusion
matrix on the test split, FLOPs and params, and latency predicted by the device's table and measured end to
end as the table was. Written: ``OUT/model.pt`` (a subnet checkpoint with these figures: export it with
``python -m search.export --subnet OUT/model.pt``), ``OUT/retrain.json`` and ``OUT/confusion.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from search.evaluate import DEFAULT_CALIBRATION, checkpoint_splits
from search.export import winner_of
from search.latency import parse_device, table_for
from search.metrics import classification_report, confusion_png
from search.run import read_results
from supernet.checkpoint import (PRETRAINED, SUBNET_FORMAT, load_resumable, load_supernet, restore, trained_data,
                                 save_subnet_checkpoint)
from supernet.data import Splits
from supernet.divergence import StepGuard
from supernet.errors import (ArgumentParser, Number, UserError, check_ranges, int_range, non_negative_float,
                             run_cli)
from supernet.evaluate import accuracy, predict, recalibrate_bn
from supernet.io import write_json
from supernet.family import Space, build_subnet, config_from_dict, family_of
from supernet.model import init_weights
from supernet.outdir import claim_folder
from supernet.sampler import flops_params_table, score_python
from supernet.schema import ANYTHING, COUNT, INTEGER, NUMBER, TEXT, Each, Nullable, Optional, config_schema
from supernet.train import HELP as TRAIN_HELP
from supernet.train import (OPTIMIZERS, TRAIN_RANGES, TrainConfig, epoch_batches, make_optimizer, set_lr,
                            training_images)

MODES = ("finetune", "head", "last-stages", "scratch")
RUN_FILES = ("last.pt", "model.pt", "retrain.json", "confusion.png")  # what makes OUT a retraining run


@dataclass
class RetrainConfig:
    """Everything that decides a retraining run; saved in its checkpoints and results."""

    arch: str
    mode: str = "finetune"
    stages: int = 1  # with mode last-stages: how many of the last stages train
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.0  # 0: the optimizer's supernet rate for scratch (SGD 0.1, AdamW 0.001), a tenth otherwise
    optimizer: str = ""  # sgd or adamw; "": the one the space's family trains with
    momentum: float = 0.9
    weight_decay: float = 3e-5
    label_smoothing: float = 0.1
    warmup_steps: int = -1  # -1: 5% of the steps
    flip: bool = True
    crop_padding: int = 0  # random crops zero-padded by this many pixels, as supernet.train (CIFAR-10: 4)
    seed: int = 0
    subset: int = 0  # train on the first N training images only (0: all)
    channels_last: bool = True
    checkpoint: str = str(PRETRAINED)
    data: str = ""  # "": the dataset the supernet was trained on
    calibration_size: int = DEFAULT_CALIBRATION
    checkpoint_every: int = 100
    stop_after: int = 0  # stop after N steps in this run, leaving OUT/last.pt to --resume (0: run to the end)
    nonfinite_limit: int = 5  # stop after this many steps in a row with a non-finite loss (each is skipped)
    device: str = "cpu"  # where latency is measured
    table: str | None = None
    allow_foreign_table: bool = False
    results: str | None = None  # provenance: the search results and scenario the architecture came from
    scenario: str | None = None
    out: str = "runs/retrain"

    def validate(self) -> "RetrainConfig":
        if self.mode not in MODES:
            raise UserError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        check_ranges(self, RETRAIN_RANGES)
        parse_device(self.device)
        return self

    def schedule(self, steps: int, default_optimizer: str = "sgd") -> TrainConfig:
        """The optimizer and schedule settings as ``supernet.train`` takes them, defaults resolved
        (``default_optimizer``: the space family's)."""
        optimizer = self.optimizer or default_optimizer
        if optimizer not in OPTIMIZERS:
            raise UserError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        lr = self.lr or OPTIMIZERS[optimizer] * (1.0 if self.mode == "scratch" else 0.1)
        warmup = self.warmup_steps if self.warmup_steps >= 0 else math.ceil(0.05 * steps)
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=lr, optimizer=optimizer, momentum=self.momentum,
                           weight_decay=self.weight_decay, label_smoothing=self.label_smoothing,
                           warmup_steps=warmup, flip=self.flip, crop_padding=self.crop_padding, seed=self.seed)


RETRAIN_RANGES: dict[str, Number] = {  # every numeric field's range: the flag's type= and validate()'s check
    **{name: TRAIN_RANGES[name] for name in ("epochs", "batch_size", "momentum", "weight_decay", "label_smoothing",
                                             "crop_padding", "seed", "subset", "checkpoint_every", "stop_after",
                                             "nonfinite_limit")},
    "lr": non_negative_float, "warmup_steps": int_range(-1), "stages": int_range(), "calibration_size": int_range(0)}


def trainable_parts(model: nn.Module, mode: str, stages: int) -> list[nn.Module]:
    """The modules that ``mode`` trains; the rest of ``model`` stays frozen."""
    if mode in ("finetune", "scratch"):
        return [model]
    tail = list(model.stages[len(model.stages) - stages:]) if mode == "last-stages" else []
    return [*tail, model.head, model.classifier]


def set_training(model: nn.Module, parts: list[nn.Module]) -> None:
    """Train mode for ``parts`` only: frozen layers keep their batch-norm statistics."""
    model.eval()
    for part in parts:
        part.train()


def starting_model(config: RetrainConfig, supernet: Any, splits: Splits) -> tuple[nn.Module, float | None]:
    """The subnet to train and, when inherited, its validation top-1 as the search scored it."""
    space = supernet.space
    arch = space.parse(config.arch)
    if config.mode == "scratch":
        torch.manual_seed(config.seed)
        return init_weights(build_subnet(space.config, arch)), None
    model = supernet.extract(arch)
    if config.calibration_size:
        calibration = splits.train.subset(torch.arange(min(config.calibration_size, len(splits.train))))
        model = recalibrate_bn(model, calibration)
    return model, accuracy(model, splits.val)


def score(model: nn.Module, space: Space, splits: Splits, config: RetrainConfig) -> dict[str, Any]:
    """Test-split report, validation top-1, FLOPs, params and latency (predicted and measured) of ``model``."""
    model = model.eval()
    val_top1 = accuracy(model, splits.val)
    test = classification_report(predict(model, splits.test), splits.test.labels, splits.classes)
    arch = space.parse(model.arch)
    flops, params = score_python(space, arch, flops_params_table(space.config))
    device = parse_device(config.device)
    table = table_for(space.config, device, path=config.table, allow_foreign=config.allow_foreign_table)
    timing = table.measure(model, device)
    latency = {"predicted_ms": table.predict(arch), "median_ms": timing["median_ms"], "spread_ms": timing["spread_ms"],
               "device": str(device), "fingerprint": table.fingerprint, "batch_size": table.batch_size,
               "runtime": table.settings.runtime}
    return {"val_top1": val_top1, "test": test, "flops": flops, "params": params, "latency": latency}


def resolve_arch(config: RetrainConfig, space: Space) -> str:
    """The canonical string of ``config.arch``, or of the winner of ``config.results`` / ``config.scenario``."""
    if config.results and not config.arch:
        results = read_results(config.results)
        return space.to_string(winner_of(results, config.scenario, config.results, space))
    return space.to_string(space.parse(config.arch))


# The shape of OUT/retrain.json as far as its readers (search.report) use it.
RESULTS_SCHEMA = {"arch": TEXT, "mode": TEXT, "config": {"epochs": INTEGER}, "flops": NUMBER, "params": NUMBER,
                  "metrics": {"val_top1_before": Optional(Nullable(NUMBER)), "val_top1": NUMBER,
                              "test": {"top1": NUMBER, "macro_precision": NUMBER, "macro_recall": NUMBER,
                                       "macro_f1": NUMBER}},
                  "latency": {"median_ms": NUMBER, "device": TEXT}, "files": Optional({"confusion": Optional(TEXT)})}

# What retrain() reads from OUT/last.pt to resume (besides the space and state dict every checkpoint has).
RESUMABLE = {"retrain_config": config_schema(RetrainConfig), "arch": TEXT,
             "optimizer": {"state": Each(ANYTHING), "param_groups": [Each(ANYTHING)]},
             "progress": {"step": COUNT, "val_top1_before": Nullable(NUMBER),
                          "history": [{"epoch": COUNT, "step": COUNT, "val_top1": NUMBER}],
                          "nonfinite": Optional({"in_a_row": Optional(COUNT), "skipped": Optional(COUNT)})},
             "command": Optional(Nullable([TEXT]))}


HELP = {**TRAIN_HELP,  # what each flag is for; the defaults are added by supernet.errors.ArgumentParser
        "stages": "with --mode last-stages: how many of the last stages train",
        "lr": "peak learning rate (0: the optimizer's supernet rate for scratch, SGD 0.1 and AdamW 0.001; a tenth "
              "of it otherwise)",
        "optimizer": "sgd (Nesterov momentum) or adamw; default: the one the space's family trains with",
        "warmup_steps": "linear warm-up steps before the cosine (-1: 5%% of the steps)",
        "data": "dataset folder (default: the one the supernet was trained on)",
        "calibration_size": "training images that recalibrate batch norm of the inherited subnet",
        "device": "where latency is measured", "table": "latency table file (default: this device's cached one)",
        "allow_foreign_table": "accept a table measured on another device, with a warning",
        "out": "output folder (model.pt, retrain.json, confusion.png)"}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, bool]:
    defaults = RetrainConfig(arch="")
    parser = ArgumentParser(prog="python -m search.retrain", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--arch", help="architecture: its space's string (as results.json spells it) or JSON object")
    which.add_argument("--results", help="results.json of a search: retrains its winner")
    parser.add_argument("--scenario", default=None, help="with --results: whose winner (default: the first)")
    parser.add_argument("--mode", choices=MODES, default=defaults.mode, help="what trains, from which weights")
    for field in dataclasses.fields(RetrainConfig):
        if field.name in ("arch", "results", "scenario", "mode"):
            continue
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if field.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=HELP[field.name])
        elif field.name == "checkpoint":
            parser.add_argument(flag, default=None, metavar="CHECKPOINT",
                                help="supernet checkpoint (default: the --results' search's, else the shipped one)")
        else:
            kind = str if field.type == "str | None" else RETRAIN_RANGES.get(field.name, type(default))
            parser.add_argument(flag, type=kind, default=default, metavar=field.name.upper(), help=HELP[field.name])
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--overwrite", action="store_true",
                        help=f"start over in an --out that holds a run (removes its {', '.join(RUN_FILES)})")
    args = parser.parse_args(argv)
    if not args.resume and not (args.arch or args.results):
        parser.error("one of --arch or --results is required (or --resume)")
    return args, args.resume


def check_resumed(state: dict[str, Any], config: RetrainConfig, space: Space, last: Path) -> None:
    """A resumed ``last.pt`` is a subnet of this supernet's space with the architecture its config names."""
    if config_from_dict(state["space"], str(last)) != space.config:
        raise UserError(f"--resume: {last} holds a subnet of another space than the supernet {config.checkpoint}; "
                        "start a new run without --resume")
    try:
        arch = space.to_string(space.parse(state["arch"]))
    except UserError as err:
        raise UserError(f"--resume: {last} holds no architecture of space {space.name!r} ({err})") from None
    if arch != config.arch:
        raise UserError(f"--resume: {last} holds architecture {arch}, but its retraining config names "
                        f"{config.arch}; start a new run without --resume")


def retrain(config: RetrainConfig, resume: bool = False, command: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume) a retraining run; return its results (also written to ``OUT/retrain.json``)."""
    out = Path(config.out)
    last = out / "last.pt"
    state: dict[str, Any] | None = None
    if resume:
        state = load_resumable(last, SUBNET_FORMAT, RESUMABLE)
        try:
            config = dataclasses.replace(RetrainConfig(**state["retrain_config"]), stop_after=config.stop_after)
        except TypeError as err:
            raise UserError(f"checkpoint {last} has a retraining config this version cannot read ({err})") from None
        command = state.get("command") or command
        print(f"resuming {last} at step {state['progress']['step']}", file=sys.stderr)
    config.validate()
    command = command or sys.argv
    supernet, meta = load_supernet(config.checkpoint)
    config = dataclasses.replace(config, arch=resolve_arch(config, supernet.space), data=trained_data(meta, config.data))
    space = supernet.space
    if state is not None:
        check_resumed(state, config, space, last)
    if config.mode == "last-stages" and config.stages > space.num_stages:
        raise UserError(f"--stages {config.stages} exceeds the space's {space.num_stages} stages")
    splits = checkpoint_splits(config.data, meta, space.config, config.checkpoint)
    train_set = training_images(splits, config.subset)
    if state is None:
        model, val_before = starting_model(config, supernet, splits)
    else:
        model = build_subnet(space.config, space.parse(config.arch))
        restore(model, state["state_dict"], last, "weights")
        val_before = state["progress"]["val_top1_before"]
    parts = trainable_parts(model, config.mode, config.stages)
    model.requires_grad_(False)
    for part in parts:
        part.requires_grad_(True)
    per_epoch = math.ceil(len(train_set) / config.batch_size)
    total = config.epochs * per_epoch
    schedule = config.schedule(total, family_of(space.config).default_optimizer)
    optimizer = make_optimizer(nn.ModuleList(parts), schedule)
    step, history = 0, []
    guard = StepGuard(model, config.nonfinite_limit, str(last), saved=state["progress"]["step"] if state else None)
    if state is not None:
        restore(optimizer, state["optimizer"], last, "optimizer state")
        step, history = state["progress"]["step"], state["progress"]["history"]
        guard.load_state_dict(state["progress"].get("nonfinite", {}))
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)

    def checkpoint(path: Path, **extra: Any) -> None:
        guard.check_state(step, state_dict=model.state_dict(), optimizer=extra.get("optimizer"))
        progress = {"step": step, "total_steps": total, "val_top1_before": val_before, "history": history,
                    "nonfinite": guard.state_dict()}
        save_subnet_checkpoint(path, model, space.config, retrain_config=dataclasses.asdict(config), command=command,
                               progress=progress, classes=list(splits.classes), **extra)

    end = min(total, step + config.stop_after) if config.stop_after else total
    with tqdm(total=total, initial=step, desc=f"retrain ({config.mode})", unit="step", dynamic_ncols=True) as bar:
        while step < end:
            epoch, first = divmod(step, per_epoch)
            set_training(model, parts)
            for x, y in epoch_batches(train_set, schedule, epoch, start=first):
                set_lr(optimizer, schedule, step, total)
                optimizer.zero_grad(set_to_none=True)
                guard.before()
                loss = F.cross_entropy(model(x.contiguous(memory_format=memory_format)), y,
                                       label_smoothing=schedule.label_smoothing)
                loss.backward()
                if guard.check(loss.item(), step):  # raises Diverged after too many bad steps in a row
                    optimizer.step()
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
                if step % per_epoch == 0:
                    history.append({"epoch": epoch + 1, "step": step, "val_top1": accuracy(model, splits.val)})
                    model = model.to(memory_format=memory_format)
                    set_training(model, parts)
                if (step % config.checkpoint_every == 0 or step % per_epoch == 0 or step == end) and not guard.streak:
                    checkpoint(last, optimizer=optimizer.state_dict())  # never in a run of bad steps
                if step == end:
                    break
    if step < total:
        print(f"stopped at step {step} of {total}; continue with python -m search.retrain --resume --out {out}")
        return {"step": step, "total_steps": total}
    scored = score(model, space, splits, config)
    metrics = {"val_top1_before": val_before, "val_top1": scored["val_top1"], "test": scored["test"]}
    checkpoint(out / "model.pt", metrics=metrics, latency=scored["latency"], flops=scored["flops"],
               params=scored["params"])
    result = {"arch": model.arch, "arch_dict": space.parse(model.arch), "mode": config.mode, "metrics": metrics,
              "latency": scored["latency"], "flops": scored["flops"], "params": scored["params"], "history": history,
              "files": {"model": str(out / "model.pt"), "confusion": str(out / "confusion.png")},
              "config": dataclasses.asdict(config), "command": command}
    write_json(out / "retrain.json", result)
    confusion_png(scored["test"], str(out / "confusion.png"),
                  f"{model.arch} ({config.mode}): test top-1 {scored['test']['top1']:.4f}")
    report(result, out)
    return result


def report(result: dict[str, Any], out: Path) -> None:
    """Print the figures of a finished run."""
    m, latency = result["metrics"], result["latency"]
    test = m["test"]
    before = f"{m['val_top1_before']:.4f} -> " if m["val_top1_before"] is not None else ""
    epochs = result["config"]["epochs"]
    print(f"arch      {result['arch']} ({result['mode']}, {epochs} epoch{'' if epochs == 1 else 's'})")
    print(f"val top1  {before}{m['val_top1']:.4f}")
    print(f"test      top1 {test['top1']:.4f}  macro precision {test['macro_precision']:.4f}  "
          f"recall {test['macro_recall']:.4f}  F1 {test['macro_f1']:.4f}  ({test['images']} images)")
    print(f"latency   predicted {latency['predicted_ms']:.2f} ms  measured {latency['median_ms']:.2f} ms on "
          f"{latency['device']}")
    print(f"size      {result['flops'] / 1e6:.1f} MFLOPs (multiply-adds)  {result['params'] / 1e6:.3f} M params")
    print(f"wrote {out / 'model.pt'}, {out / 'retrain.json'} and {out / 'confusion.png'}; "
          f"export with python -m search.export --subnet {out / 'model.pt'}")


def main(argv: list[str] | None = None) -> None:
    args, resume = parse_args(argv)
    if args.checkpoint is None:  # the supernet the search searched (search.dnas trains its own)
        searched = read_results(args.results).get("checkpoint", {}) if args.results and not resume else {}
        args.checkpoint = searched.get("path") or str(PRETRAINED)
    common = {f.name for f in dataclasses.fields(RetrainConfig)} - {"arch"}
    config = RetrainConfig(arch=args.arch or "", **{k: v for k, v in vars(args).items() if k in common})
    with claim_folder(config.out, what="a retraining run", run_files=RUN_FILES, resume=resume, overwrite=args.overwrite,
                      resumable=True):
        retrain(config, resume, command=["python", "-m", "search.retrain", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    run_cli(main)
