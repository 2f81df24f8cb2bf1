"""Differentiable, latency-aware architecture search: ``python -m search.dnas --space nb201-cpu --latency-ms 3``.

Every choice of the space (nb201: each edge's op; mbv3: each stage's depth, each block's kernel and expansion)
gets a vector of architecture logits. The supernet runs *relaxed* (``forward_mixed``): every choice mixes its
candidates by their weights. Bilevel optimisation, first order: each step updates the network weights on a
training batch (SGD, Nesterov, cosine) and then the logits on a validation batch (Adam), as DARTS does.

``--method``:

- ``darts``: softmax weights (first-order DARTS). On NAS-Bench-201 it is known to collapse to parameter-free
  ops (skip connections, pooling), since those make the relaxed network easiest to fit early on.
- ``beta-darts`` (the default): DARTS plus beta-decay regularisation (Ye et al., CVPR 2022): the logits' loss
  adds ``lambda * mean over choices of logsumexp(logits)``, ``lambda`` rising linearly to ``--beta-lambda``.
  Its gradient is the softmax itself, so the largest weights are pulled down hardest: no candidate runs away
  with a choice on the strength of an early advantage, which is what the collapse is. It costs nothing per
  step (unlike perturbation-based selection, which retrains between decisions) and was shown to remove the
  collapse on this very space.
- ``gdas``: Gumbel-softmax with hard sampling (GDAS / FBNet): each forward draws one candidate per choice
  (straight-through one-hot weights), so only the sampled op runs; the temperature falls from ``--tau-max``
  to ``--tau-min``.

Latency: the expected latency is ``sum over choices of p(candidate) x its entry`` in this device's latency
table (``--table`` or the cached one, its correction included), differentiable in the logits; the logits'
loss adds ``--latency-weight x max(0, expected / budget - 1)``. At the end of each epoch the architecture is
derived (the most likely candidate of every choice; if the table predicts it over the budget, the choices
that save the most latency for the least probability are changed until it fits), scored with inherited
weights (batch norm recalibrated) and timed end to end as the table's entries were; the last epoch's is the
winner, printed with its predicted and measured latency.

Results, as ``search.evolve`` writes them so that retrain, ensemble, export and report read them unchanged:
``OUT/results.json`` (winner, the derived architecture of every epoch with its measured latency, the
architecture weights of every epoch), ``OUT/supernet.pt`` (the searched weights), ``OUT/search.png`` and
``OUT/alphas.png`` (every choice's weights over the epochs). ``OUT/last.pt`` holds weights, logits and both
optimisers' states, written atomically every ``--checkpoint-every`` steps and at each epoch's end; rerun
with ``--resume`` to continue an interrupted search to the result an uninterrupted one reaches.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from search.evaluate import DEFAULT_CALIBRATION, SupernetEvaluator
from search.latency import BATCH_SIZE, THREADS, LatencyTable, parse_device, table_for
from search.plot import plot_search, save_png
from search.problem import Record
from search.timing import RUNTIMES
from supernet.checkpoint import FORMAT, load_resumable, load_supernet, restore, save_checkpoint, trained_data
from supernet.data import DEFAULT_DATA, ImageSet, batches, load_splits
from supernet.errors import (ArgumentParser, Number, UserError, check_ranges, float_range, int_range,
                             non_negative_float, positive_float, random_seed, run_cli)
from supernet.family import build_supernet, data_format, get_space
from supernet.io import write_json
from supernet.outdir import budget_label, claim_folder, run_folder
from supernet.sampler import flops_params_table, score_python
from supernet.train import epoch_batches, make_optimizer
from supernet.schema import ANYTHING, COUNT, Each, Optional, config_schema

METHODS = ("darts", "beta-darts", "gdas")


@dataclass
class DnasConfig:
    """Everything that decides a differentiable search; saved with its checkpoints and results."""

    latency_ms: float = 0.0  # the budget (required on the command line)
    space: str = "nb201-cpu"
    method: str = "beta-darts"
    device: str = "cpu"  # the device whose latency table the budget is for
    data: str = ""  # "": the --checkpoint's training data, else Fashion-MNIST
    checkpoint: str = ""  # start from these supernet weights (e.g. a SPOS run); "": fresh weights
    table: str = ""  # latency table file; "": this device's cached table (built if missing)
    allow_foreign_table: bool = False
    latency_batch_size: int | None = None  # the table's setting, when none is given
    threads: int | None = None
    runtime: str | None = None
    epochs: int = 10
    warmup_epochs: int = 0  # epochs of weight steps only (logits frozen at uniform), before the search
    batch_size: int = 64
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 3e-4
    arch_weight_decay: float = 1e-3
    beta_lambda: float = 1.0
    tau_max: float = 10.0
    tau_min: float = 0.1
    latency_weight: float = 2.0
    crop_padding: int = 0
    flip: bool = True
    val_size: int = 5000
    subset: int = 0  # train on the first N training images only (0: all)
    calibration_size: int = DEFAULT_CALIBRATION
    verify: int = 3  # refits of the derived architecture when it measures over the budget
    seed: int = 0
    checkpoint_every: int = 200
    stop_after: int = 0  # stop after N steps in this run (then --resume); 0: run to the end
    out: str = ""  # "": runs/dnas/SPACE-METHOD-DEVICE-BUDGETms-seedN (see default_out)

    def validate(self) -> "DnasConfig":
        check_ranges(self, RANGES)
        if self.method not in METHODS:
            raise UserError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.warmup_epochs >= self.epochs:
            raise UserError(f"--warmup-epochs {self.warmup_epochs} leaves no search epoch of --epochs "
                            f"{self.epochs}; lower it or raise --epochs")
        if self.tau_min > self.tau_max:
            raise UserError(f"--tau-min {self.tau_min:g} is above --tau-max {self.tau_max:g}")
        if self.runtime is not None and self.runtime not in RUNTIMES:
            raise UserError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        get_space(self.space)
        return self


RANGES: dict[str, Number] = {
    "latency_ms": positive_float, "epochs": int_range(), "warmup_epochs": int_range(0), "batch_size": int_range(),
    "lr": positive_float, "lr_min": non_negative_float, "momentum": float_range(0.0, 1.0, below=True),
    "weight_decay": non_negative_float, "grad_clip": positive_float, "arch_lr": positive_float,
    "arch_weight_decay": non_negative_float, "beta_lambda": non_negative_float, "tau_max": positive_float,
    "tau_min": positive_float, "latency_weight": non_negative_float, "crop_padding": int_range(0, 64),
    "val_size": int_range(), "subset": int_range(0), "calibration_size": int_range(), "verify": int_range(0), "seed": random_seed,
    "checkpoint_every": int_range(), "stop_after": int_range(0)}

RUN_FILES = ("last.pt", "supernet.pt", "results.json", "search.png", "alphas.png")
RESUMABLE = {"dnas_config": config_schema(DnasConfig), "logits": Each(ANYTHING),
             "optimizer": Each(ANYTHING), "arch_optimizer": Each(ANYTHING),
             "progress": {"step": COUNT, "history": [Each(ANYTHING)], "alphas": [Each(ANYTHING)],
                          "measurements": Each(ANYTHING)}}


# ---- architecture weights -------------------------------------------------------------------------
class ArchWeights:
    """One logit vector per choice of a space (in ``space.choices`` order), and what they make of it."""

    def __init__(self, choices: Mapping[str, Sequence[Any]], seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.choices = {key: list(options) for key, options in choices.items()}
        self.logits = {key: (1e-3 * torch.randn(len(options), generator=generator)).requires_grad_()
                       for key, options in self.choices.items()}

    def parameters(self) -> list[torch.Tensor]:
        return list(self.logits.values())

    def probs(self) -> dict[str, torch.Tensor]:
        """Softmax of every choice's logits (differentiable)."""
        return {key: logits.softmax(0) for key, logits in self.logits.items()}

    def uniform(self) -> dict[str, torch.Tensor]:
        """Equal weights for every candidate (warm-up)."""
        return {key: torch.full_like(logits, 1.0 / len(logits)) for key, logits in self.logits.items()}

    def gumbel(self, tau: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """A hard Gumbel-softmax draw per choice: one-hot in value, the tempered softmax's gradient (GDAS)."""
        out = {}
        for key, logits in self.logits.items():
            noise = -torch.empty_like(logits).exponential_(generator=generator).log()
            soft = ((logits + noise) / tau).softmax(0)
            hard = F.one_hot(soft.argmax(), len(logits)).to(soft.dtype)
            out[key] = hard + (soft - soft.detach())  # exactly one-hot in value
        return out

    def beta_decay(self) -> torch.Tensor:
        """Mean over choices of ``logsumexp(logits)``: beta-DARTS' regulariser."""
        return torch.stack([logits.logsumexp(0) for logits in self.logits.values()]).mean()

    def most_likely(self) -> dict[str, Any]:
        return {key: self.choices[key][int(logits.argmax())] for key, logits in self.logits.items()}

    def snapshot(self) -> dict[str, list[float]]:
        """Every choice's probabilities, as plain lists (the alpha trajectory)."""
        with torch.no_grad():
            return {key: [round(float(p), 6) for p in probs] for key, probs in self.probs().items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {key: logits.detach().clone() for key, logits in self.logits.items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if set(state) != set(self.logits) or any(state[k].shape != v.shape for k, v in self.logits.items()):
            raise ValueError("architecture logits of another space")
        with torch.no_grad():
            for key, logits in self.logits.items():
                logits.copy_(state[key])


def expected_latency(supernet: Any, weights: Mapping[str, torch.Tensor], table: LatencyTable) -> torch.Tensor:
    """``sum over slots and choices of weight x table entry`` plus the base, corrected as the table predicts:
    the architecture distribution's mean latency, differentiable in ``weights``."""
    metric = table.metric_table()
    slot_weights = supernet.slot_weights(weights)
    blocks = metric.blocks[..., 0].to(slot_weights.dtype)
    return (slot_weights * blocks).sum() + float(metric.base[0])


def fit_budget(space: Any, table: LatencyTable, probs: Mapping[str, Sequence[float]], arch: Mapping[str, Any],
               budget: float) -> dict[str, Any]:
    """``arch`` changed, one choice at a time, until the table predicts it within ``budget``: each change is the
    one losing the least log-probability per millisecond saved. Unchanged when it already fits."""
    arch = space.validate(arch)
    choices = space.choices
    while (now := table.predict(arch)) > budget:
        best, best_ratio = None, math.inf
        for key, options in choices.items():
            current = math.log(max(probs[key][options.index(arch[key])], 1e-12)) if arch.get(key) in options else 0.0
            for i, option in enumerate(options):
                if option == arch.get(key):
                    continue
                candidate = space.validate({**arch, key: option})
                saved = now - table.predict(candidate)
                if saved > 0:
                    ratio = (current - math.log(max(probs[key][i], 1e-12))) / saved
                    if ratio < best_ratio:
                        best, best_ratio = candidate, ratio
        if best is None:
            raise UserError(f"--latency-ms {budget:g}: no architecture of the space fits it on this table "
                            f"(lowest {table.lowest_ms():.2f} ms); raise the budget")
        arch = best
    return arch


# ---- data -----------------------------------------------------------------------------------------
def val_batches(images: ImageSet, config: DnasConfig, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Validation batches for the logits' steps, from step ``start`` of the epoch on, cycling through the
    validation split in a new seeded order each pass (it is smaller than the training split)."""
    per_pass = max(1, len(images) // config.batch_size)  # full batches only
    number = start
    while True:
        cycle, position = divmod(number, per_pass)
        seed = 1_000_000_007 + config.seed * 100_003 + epoch * 1009 + cycle
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:per_pass * config.batch_size]
        for batch in batches(images, config.batch_size, order=order, start=position):
            yield batch
            number += 1


# ---- the search -----------------------------------------------------------------------------------
def _lr(config: DnasConfig, step: int, total: int) -> float:
    return config.lr_min + 0.5 * (config.lr - config.lr_min) * (1 + math.cos(math.pi * step / total))


def _tau(config: DnasConfig, epoch: int) -> float:
    searched = max(1, config.epochs - config.warmup_epochs - 1)
    progress = min(1.0, max(0, epoch - config.warmup_epochs) / searched)
    return config.tau_max - (config.tau_max - config.tau_min) * progress


def _beta(config: DnasConfig, step: int, total: int) -> float:
    return config.beta_lambda * step / total if config.method == "beta-darts" else 0.0


def _optimizers(model: Any, alphas: ArchWeights, config: DnasConfig) -> tuple[torch.optim.SGD, torch.optim.Adam]:
    """The weights' optimiser, as supernet.train makes it, and Adam for the logits (DARTS' betas)."""
    arch = torch.optim.Adam(alphas.parameters(), lr=config.arch_lr, betas=(0.5, 0.999),
                            weight_decay=config.arch_weight_decay)
    return make_optimizer(model, config), arch


def _relaxed(alphas: ArchWeights, config: DnasConfig, searching: bool, generator: torch.Generator,
             epoch: int) -> tuple[dict[str, torch.Tensor], bool]:
    """The weights a forward mixes by, and whether they are hard samples."""
    if not searching:
        return alphas.uniform(), False
    if config.method == "gdas":
        return alphas.gumbel(_tau(config, epoch), generator), True
    return alphas.probs(), False


def _measure(table: LatencyTable, supernet: Any, arch: Mapping[str, Any], device: torch.device,
             cache: dict[str, Any], key: str) -> dict[str, float]:
    if key not in cache:
        cache[key] = table.measure(supernet.extract(arch), device)
    return cache[key]


def search(config: DnasConfig, resume: bool = False, command: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume) a differentiable search; write and return its results."""
    out = Path(config.out)
    last = out / "last.pt"
    state = None
    if resume:
        state = load_resumable(last, FORMAT, RESUMABLE)
        try:
            config = dataclasses.replace(DnasConfig(**state["dnas_config"]), stop_after=config.stop_after)
        except TypeError as err:
            raise UserError(f"--resume: {last} has a search config this version cannot read ({err})") from None
        print(f"resuming {last} at step {state['progress']['step']}", file=sys.stderr)
        command = state.get("command") or command
    config.validate()
    command = command or sys.argv
    space = get_space(config.space)
    meta: dict[str, Any] = {}
    if config.checkpoint:
        model, meta = load_supernet(config.checkpoint, space=config.space)
    else:
        torch.manual_seed(config.seed)
        model = build_supernet(space.config)
    if not hasattr(model, "forward_mixed"):
        raise UserError(f"space {space.name!r} has no relaxed supernet for differentiable search (spaces with one: "
                        "mbv3 and nb201 families); search it with search.evolve or search.bo")
    config = dataclasses.replace(config, data=trained_data(meta, config.data) if config.checkpoint
                                 else (config.data or DEFAULT_DATA))
    device = parse_device(config.device)
    table = table_for(space.config, device, batch_size=config.latency_batch_size, threads=config.threads,
                      runtime=config.runtime, path=config.table or None, allow_foreign=config.allow_foreign_table)
    config = dataclasses.replace(config, latency_batch_size=table.batch_size, threads=table.settings.threads,
                                 runtime=table.settings.runtime)
    lowest = table.lowest_ms()
    if lowest > config.latency_ms:
        raise UserError(f"--latency-ms {config.latency_ms:g} is below the lowest latency the table predicts for "
                        f"any subnet ({lowest:.2f} ms on {device}): raise it")
    splits = load_splits(config.data, **data_format(space.config), val_size=config.val_size, seed=config.seed,
                         num_classes=space.config.num_classes)
    if config.subset > len(splits.train):
        raise UserError(f"--subset {config.subset} is more than the {len(splits.train)} training images; lower it")
    train_set = splits.train.subset(torch.arange(config.subset)) if config.subset else splits.train
    if config.batch_size > min(len(train_set), len(splits.val)):
        raise UserError(f"--batch-size {config.batch_size} is more than the {min(len(train_set), len(splits.val))} "
                        "images of the smaller split (training or --val-size); lower it")

    alphas = ArchWeights(space.choices, config.seed)
    optimizer, arch_optimizer = _optimizers(model, alphas, config)
    step, history, trajectory, measurements = 0, [], [], {}
    if state is not None:
        restore(model, state["state_dict"], last, "weights")
        restore(alphas, state["logits"], last, "architecture logits")
        restore(optimizer, state["optimizer"], last, "optimizer state")
        restore(arch_optimizer, state["arch_optimizer"], last, "architecture optimizer state")
        progress = state["progress"]
        step, history, trajectory, measurements = (progress["step"], progress["history"], progress["alphas"],
                                                   progress["measurements"])
    per_epoch = math.ceil(len(train_set) / config.batch_size)
    total = config.epochs * per_epoch
    model.train()
    counts = flops_params_table(space.config)
    metric = f"latency_ms@{device}"

    def save(path: Path) -> None:
        save_checkpoint(path, model, dnas_config=dataclasses.asdict(config), logits=alphas.state_dict(),
                        optimizer=optimizer.state_dict(), arch_optimizer=arch_optimizer.state_dict(),
                        command=command, progress={"step": step, "total_steps": total, "history": history,
                                                   "alphas": trajectory, "measurements": measurements})

    def derive(epoch: int, budget: float) -> dict[str, Any]:
        """The epoch's architecture fitted to ``budget`` on the table, scored, predicted and measured (a
        history record)."""
        arch = fit_budget(space, table, alphas.snapshot(), alphas.most_likely(), budget)
        key = space.to_string(arch)
        accuracy = SupernetEvaluator(model, splits, calibration_size=config.calibration_size)(arch)["val_top1"]
        flops, params = score_python(space, arch, counts)
        timing = _measure(table, model, arch, device, measurements, key)
        model.train()
        metrics = {"val_top1": accuracy, metric: table.predict(arch), "flops": flops, "params": params,
                   "measured_latency_ms": timing["median_ms"], "measured_spread_ms": timing["spread_ms"]}
        return {**Record(space.parse(key), key, metrics, epoch).to_dict(), "fitted_to_ms": budget}

    start_time = time.time()
    end = min(total, step + config.stop_after) if config.stop_after else total
    with tqdm(total=total, initial=step, desc=f"dnas {config.method}", unit="step", dynamic_ncols=True) as bar:
        while step < end:
            epoch, first = divmod(step, per_epoch)
            searching = epoch >= config.warmup_epochs
            val = val_batches(splits.val, config, epoch, first)
            for x, y in epoch_batches(train_set, config, epoch, start=first):
                generator = torch.Generator().manual_seed(config.seed * 7_919 + step)
                for group in optimizer.param_groups:
                    group["lr"] = _lr(config, step, total)
                weights, hard = _relaxed(alphas, config, searching, generator, epoch)
                optimizer.zero_grad(set_to_none=True)
                logits = model.forward_mixed(x, {k: w.detach() for k, w in weights.items()}, hard=hard)
                loss = F.cross_entropy(logits, y)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                expected = float("nan")
                if searching:
                    xv, yv = next(val)
                    weights, hard = _relaxed(alphas, config, True, generator, epoch)
                    arch_optimizer.zero_grad(set_to_none=True)
                    latency = expected_latency(model, alphas.probs(), table)
                    arch_loss = (F.cross_entropy(model.forward_mixed(xv, weights, hard=hard), yv)
                                 + config.latency_weight * F.relu(latency / config.latency_ms - 1)
                                 + _beta(config, step, total) * alphas.beta_decay())
                    model.zero_grad(set_to_none=True)
                    arch_loss.backward()
                    arch_optimizer.step()
                    model.zero_grad(set_to_none=True)
                    expected = latency.item()
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}",
                                acc=f"{(logits.argmax(1) == y).float().mean().item():.3f}",
                                lat=f"{expected:.2f}ms")
                if step % per_epoch == 0:
                    trajectory.append({"epoch": epoch, **alphas.snapshot()})
                    history.append(derive(epoch, config.latency_ms))
                    bar.write(f"epoch {epoch + 1}: {history[-1]['arch_string']}  val top1 "
                              f"{history[-1]['metrics']['val_top1']:.4f}  predicted {history[-1]['metrics'][metric]:.2f}"
                              f" ms  measured {history[-1]['metrics']['measured_latency_ms']:.2f} ms")
                if step % config.checkpoint_every == 0 or step % per_epoch == 0:
                    save(last)
                if step == end:
                    break
    save(last)
    if step < total:
        print(f"stopped at step {step} of {total}; continue with --resume --out {out}")
        return {"step": step, "total_steps": total}
    target = config.latency_ms
    for _ in range(config.verify):  # measured over budget: refit to a budget scaled by measured / predicted
        m = history[-1]["metrics"]
        if m["measured_latency_ms"] <= config.latency_ms:
            break
        target = min(target, config.latency_ms * m[metric] / m["measured_latency_ms"]) * 0.98
        if target < table.lowest_ms():
            break
        print(f"derived architecture measured {m['measured_latency_ms']:.2f} ms, over the budget: refitting it to "
              f"{target:.2f} ms predicted", file=sys.stderr)
        history.append(derive(config.epochs - 1, target))
    return _finish(config, model, space, table, history, trajectory, out, command, list(splits.classes),
                   time.time() - start_time)


def _finish(config: DnasConfig, model: Any, space: Any, table: LatencyTable, history: list[dict[str, Any]],
            trajectory: list[dict[str, Any]], out: Path, command: list[str], classes: list[str],
            seconds: float) -> dict[str, Any]:
    """Write the searched supernet, results.json and the pictures; print the winner."""
    device = str(parse_device(config.device))
    metric = f"latency_ms@{device}"
    name = f"{device}:{config.latency_ms:g}"
    checkpoint = out / "supernet.pt"
    train_config = {"space": config.space, "data": config.data, "val_size": config.val_size, "seed": config.seed,
                    "crop_padding": config.crop_padding, "flip": config.flip, "method": config.method,
                    "from_checkpoint": config.checkpoint or None}
    save_checkpoint(checkpoint, model.eval(), train_config=train_config, dnas_config=dataclasses.asdict(config),
                    command=command, classes=classes, metrics={"search_seconds_this_run": round(seconds, 1)})
    def verified(r: dict[str, Any]) -> dict[str, Any]:
        return {**r, "predicted_latency_ms": r["metrics"][metric], "measured_latency_ms": r["metrics"]["measured_latency_ms"],
                "measured_spread_ms": r["metrics"]["measured_spread_ms"],
                "meets_budget": r["metrics"]["measured_latency_ms"] <= config.latency_ms}

    final = [verified(r) for r in history if r["generation"] == history[-1]["generation"]]
    winner = next((v for v in final if v["meets_budget"]), final[-1])
    distinct = list({r["arch_string"]: r for r in history}.values())
    front = sorted(distinct, key=lambda r: (r["metrics"][metric], -r["metrics"]["val_top1"]))
    pareto, best = [], -1.0
    for r in front:
        if r["metrics"]["val_top1"] > best:
            pareto.append(r["arch_string"])
            best = r["metrics"]["val_top1"]
    result = {
        "scenarios": [{"device": device, "latency_ms": config.latency_ms, "name": name}],
        "winners": {name: {**winner, "budget_ms": config.latency_ms, "device": device, "verified": final}},
        "pareto_front": pareto,
        "latency_metric": metric,
        "checkpoint": {"path": str(checkpoint), "command": command},
        "tables": {device: {"path": str(table.path), "fingerprint": table.fingerprint}},
        "evaluations": len(distinct),
        "history": distinct,
        "derived": [{"epoch": r["generation"], "arch_string": r["arch_string"], "fitted_to_ms": r["fitted_to_ms"]}
                    for r in history],  # every epoch's, then any refit of the last to a tighter budget
        "alphas": trajectory,
        "config": {**dataclasses.asdict(config), "algorithm": f"dnas-{config.method}", "checkpoint": str(checkpoint),
                   "initial_checkpoint": config.checkpoint or None},
        "command": command,
    }
    write_json(out / "results.json", result)
    plot_search(result, out / "search.png")
    plot_alphas(trajectory, out / "alphas.png", space.choices)
    if not winner["meets_budget"]:
        print(f"warning: the derived architecture measured over the budget after {len(final) - 1} refits; raise "
              "--latency-ms or rebuild the latency table (python -m search.latency build) while the machine is idle",
              file=sys.stderr)
    verdict = "meets" if winner["meets_budget"] else "DOES NOT meet"
    print(f"{name:>12}  {winner['arch_string']}  val top1 {winner['metrics']['val_top1']:.4f}  predicted "
          f"{winner['predicted_latency_ms']:.2f} ms  measured {winner['measured_latency_ms']:.2f} ms ({verdict} the "
          "budget when measured)")
    print(f"wrote {out / 'results.json'}, {out / 'supernet.pt'}, {out / 'search.png'} and {out / 'alphas.png'}")
    return result


def plot_alphas(trajectory: list[dict[str, Any]], path: Path, choices: Mapping[str, Sequence[Any]]) -> Path:
    """One panel per choice: each candidate's weight over the epochs, candidates named in a legend (one for all
    panels where every choice has the same candidates, as nb201's edges do)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in trajectory[0] if k != "epoch"]
    shared = len({tuple(choices[k]) for k in keys}) == 1
    cols = min(len(keys), 3 if len(keys) <= 9 else 6)
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows + (0.5 if shared else 0)), dpi=100,
                             squeeze=False)
    epochs = [t["epoch"] + 1 for t in trajectory]
    for ax, key in zip(axes.flat, keys):
        for i, option in enumerate(choices[key]):
            ax.plot(epochs, [t[key][i] for t in trajectory], marker=".", label=str(option))
        ax.set_title(key, fontsize=8)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        if not shared:
            ax.legend(fontsize=6, loc="upper left")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("weight")
    axes.flat[-1].set_xlabel("epoch")
    if shared:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    return save_png(fig, path, rect=(0, 0.07, 1, 1) if shared else None)


# ---- command line ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> tuple[DnasConfig, bool, bool]:
    defaults = DnasConfig()
    parser = ArgumentParser(prog="python -m search.dnas", description=__doc__.splitlines()[0])
    helps = {"latency_ms": "latency budget in milliseconds on --device (required)",
             "method": f"relaxation and remedy: {', '.join(METHODS)}",
             "space": "registered search space", "device": "the device the budget and latency table are for",
             "allow_foreign_table": "accept a table measured on another device, with a warning",
             "epochs": "passes over the training images", "batch_size": "images per step (both steps)",
             "lr": "peak learning rate of the network weights (SGD, Nesterov, cosine)",
             "lr_min": "learning rate at the end of the cosine", "momentum": "SGD momentum",
             "weight_decay": "weight decay of the network's convolution and linear weights",
             "grad_clip": "clip the weights' gradient norm to this", "arch_lr": "Adam learning rate of the logits",
             "arch_weight_decay": "weight decay of the logits", "tau_max": "gdas: Gumbel temperature at the start",
             "tau_min": "gdas: Gumbel temperature at the end",
             "crop_padding": "random crops zero-padded by this many pixels (CIFAR-10: 4); 0: none",
             "flip": "random horizontal flips of images (audio clips are never flipped)",
             "subset": "train on the first N training images only (0: all)",
             "calibration_size": "training images that recalibrate batch norm when a derived cell is scored",
             "seed": "logits init, weights init, data order, Gumbel draws",
             "checkpoint_every": "steps between writes of OUT/last.pt",
             "stop_after": "stop after N steps in this run, for --resume later (0: run to the end)",
             "checkpoint": "start from this supernet's weights (default: fresh weights)",
             "data": "dataset folder (default: the --checkpoint's, else Fashion-MNIST)",
             "table": "latency table file (default: this device's cached table)",
             "latency_batch_size": "latency batch size (default: the table's)",
             "threads": "torch threads while timing (default: the table's)",
             "runtime": "latency runtime (default: the table's)",
             "warmup_epochs": "epochs training weights only, candidates mixed equally",
             "beta_lambda": "beta-darts: final weight of the beta-decay regulariser",
             "latency_weight": "weight of the latency penalty max(0, expected/budget - 1)",
             "val_size": "training images held out for the architecture steps",
             "verify": "refits of the derived architecture to a tighter budget when it measures over it",
             "out": "output folder (default: runs/dnas/SPACE-METHOD-DEVICE-BUDGETms-seedN, plus a short hash when "
                    "other flags that change the search differ from their defaults)"}
    types = {**RANGES, "latency_batch_size": BATCH_SIZE, "threads": THREADS}
    for field in dataclasses.fields(DnasConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        text = helps.get(field.name, "") + ("" if field.name in ("latency_ms", "out") else f" (default: {default})")
        if field.name == "allow_foreign_table":
            parser.add_argument(flag, action="store_true", help=helps[field.name])
        elif field.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        elif field.name in ("method", "runtime"):
            parser.add_argument(flag, choices=METHODS if field.name == "method" else RUNTIMES, default=default,
                                help=text)
        else:
            parser.add_argument(flag, type=types.get(field.name, str if default is None else type(default)),
                                default=default, required=field.name == "latency_ms", help=text.strip(),
                                metavar=field.name.upper())
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--overwrite", action="store_true",
                        help=f"start over in an --out that holds a search (removes its {', '.join(RUN_FILES)})")
    args = vars(parser.parse_args(argv))
    resume, overwrite = args.pop("resume"), args.pop("overwrite")
    config = DnasConfig(**args)
    return dataclasses.replace(config, out=config.out or default_out(config)), resume, overwrite


# Settings a default --out names, or that do not change what a search finds: left out of its hash.
NAMED = ("space", "method", "device", "latency_ms", "seed", "out", "verify", "checkpoint_every", "stop_after")


def default_out(config: DnasConfig) -> str:
    """``runs/dnas/nb201-cpu-beta-darts-cpu-3ms-seed0`` and the like (:func:`supernet.outdir.run_folder`)."""
    label = f"{config.space}-{config.method}-{budget_label([(config.device, config.latency_ms)])}"
    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in NAMED}
    defaults = DnasConfig()
    return run_folder("runs/dnas", label, config.seed, settings, {k: getattr(defaults, k) for k in settings})


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config, resume, overwrite = parse_args(argv)
    with claim_folder(config.out, what="a differentiable search", run_files=RUN_FILES, resume=resume,
                      overwrite=overwrite, resumable=True):
        return search(config, resume, ["python", "-m", "search.dnas", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    run_cli(main)
