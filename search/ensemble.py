"""Ensembles of Pareto-front subnets under one latency budget: ``python -m search.ensemble RESULTS --latency-ms 20``.

Subnets that share a supernet still make different mistakes, so the mean of a few subnets' logits can beat
the best single subnet that fits the same budget. The candidates are the Pareto front (accuracy against
predicted latency on ``--device``) of a search's ``results.json``. Each is extracted with inherited weights,
its batch norm recalibrated on the same training images the search used, and its logits computed once on the
validation split (what :func:`select` picks on) and the test split (reported only, never selected on).
Members run one after another on the device, so an ensemble's predicted latency is the sum of its members'
predictions; it is also measured end to end, as one module, with the latency table's timer.

Writes ``OUT/ensemble.json`` (members, the ensemble and its best single member at the same budget, the gain
in test top-1, the resolved config) and, with ``--export``, ``OUT/ensemble.pt`` (TorchScript, written by
:func:`search.export.export`; load it with ``torch.jit.load``). An ``--out`` that already holds an ensemble is
refused unless ``--overwrite``, and so is one another process is writing (see :mod:`supernet.outdir`).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from tqdm import tqdm

from search.evaluate import DEFAULT_CALIBRATION, checkpoint_splits
from search.export import export
from search.latency import load_table, parse_device
from search.problem import Record
from search.run import read_results
from search.strategies import pareto_front
from supernet.checkpoint import PRETRAINED, load_supernet
from supernet.data import DEFAULT_DATA
from supernet.errors import ArgumentParser, UserError, int_range, positive_float, run_cli
from supernet.evaluate import predict, recalibrate_bn
from supernet.io import write_json
from supernet.outdir import claim_folder
from supernet.schema import NUMBER, TEXT, Nullable, Optional
from supernet.family import Space, input_description, input_shape

# Scoring one combination costs about 1 ms on 5,000 validation images on one busy core; beyond this many
# combinations select() switches from exhaustive search to greedy forward selection (about 20 s at most).
MAX_COMBINATIONS = 20_000

Combo = tuple[int, ...]  # indices of an ensemble's members among the candidates, ascending


# ---- the ensemble --------------------------------------------------------------------------------
def average(logits: list[torch.Tensor]) -> torch.Tensor:
    """The ensemble's output: the mean of its members' logits (one definition for selection and the module)."""
    return torch.stack(logits).mean(0)


class Ensemble(nn.Module):
    """Runs every member on the same input and returns the mean of their logits; scriptable, so it exports."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: list[torch.Tensor] = []
        for member in self.members:
            logits.append(member(x))
        return average(logits)


def top1(logits: list[torch.Tensor], labels: torch.Tensor) -> float:
    """Top-1 accuracy of the averaged ``logits``, in [0, 1]."""
    return (average(logits).argmax(1) == labels).float().mean().item()


# ---- selection -----------------------------------------------------------------------------------
def select(val_logits: Mapping[str, torch.Tensor], labels: torch.Tensor, latency: Mapping[str, float], *,
           budget_ms: float, max_members: int) -> list[str]:
    """The keys of the most accurate ensemble of at most ``max_members`` whose summed latency fits ``budget_ms``.

    Accuracy is that of the averaged logits on ``labels``. Every combination is scored while there are at
    most :data:`MAX_COMBINATIONS` of them (logits are precomputed and a front is small); beyond that, greedy
    forward selection adds, one member at a time, the one that makes the most accurate ensemble that still
    fits, and the best ensemble it passed through is returned (no longer guaranteed optimal). Ties go to
    fewer members, then lower summed latency, then the earliest keys in ``val_logits``'s order; the keys
    come back in that order. A single member is a candidate, so the result is never less accurate on
    ``labels`` than the best single member within the budget.
    """
    keys = _checked_keys(val_logits, labels, latency, budget_ms, max_members)
    fits = [k for k in keys if latency[k] <= budget_ms]
    if not fits:
        fastest = min(keys, key=lambda k: latency[k])
        raise UserError(f"no candidate fits the budget of {budget_ms:g} ms: the fastest, {fastest}, takes "
                        f"{latency[fastest]:.2f} ms; raise the budget")
    logits = [val_logits[k] for k in fits]
    cost = [float(latency[k]) for k in fits]
    size = min(max_members, len(fits))
    scores: dict[Combo, tuple] = {}

    def rank(combo: Combo) -> tuple:
        """Sort key of a combination of indices into ``fits`` (ascending): best first."""
        if combo not in scores:
            correct = int((average([logits[i] for i in combo]).argmax(1) == labels).sum())
            scores[combo] = (-correct, len(combo), sum(cost[i] for i in combo), combo)
        return scores[combo]

    def fits_budget(combo: Combo) -> bool:
        return sum(cost[i] for i in combo) <= budget_ms

    count = sum(math.comb(len(fits), r) for r in range(1, size + 1))
    search = _exhaustive if count <= MAX_COMBINATIONS else _greedy
    return [fits[i] for i in search(len(fits), size, fits_budget, rank)]


def _exhaustive(n: int, size: int, fits_budget: Callable[[Combo], bool], rank: Callable[[Combo], tuple]) -> Combo:
    combos = (c for r in range(1, size + 1) for c in itertools.combinations(range(n), r) if fits_budget(c))
    return min(combos, key=rank)


def _greedy(n: int, size: int, fits_budget: Callable[[Combo], bool], rank: Callable[[Combo], tuple]) -> Combo:
    chosen: Combo = ()
    passed: list[Combo] = []
    while len(chosen) < size:
        options = [c for c in (tuple(sorted((*chosen, i))) for i in range(n) if i not in chosen) if fits_budget(c)]
        if not options:
            break
        chosen = min(options, key=rank)
        passed.append(chosen)
    return min(passed, key=rank)


def _checked_keys(val_logits: Mapping[str, torch.Tensor], labels: torch.Tensor, latency: Mapping[str, float],
                  budget_ms: float, max_members: int) -> list[str]:
    """The candidate keys, after refusing nonsense arguments of :func:`select` with a one-line error."""
    if isinstance(budget_ms, bool) or not isinstance(budget_ms, (int, float)) or not 0 < budget_ms < math.inf:
        raise UserError(f"budget_ms must be a positive number of milliseconds, got {budget_ms!r}")
    if isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1:
        raise UserError(f"max_members must be a whole number of at least 1, got {max_members!r}")
    keys = list(val_logits)
    if not keys:
        raise UserError("no candidates to select from: val_logits is empty")
    if labels.dim() != 1:
        raise UserError(f"labels must be one label per image (1-D), got shape {tuple(labels.shape)}")
    shape = val_logits[keys[0]].shape
    for key in keys:
        if val_logits[key].dim() != 2 or val_logits[key].shape != shape or shape[0] != len(labels):
            raise UserError(f"logits of {key} have shape {tuple(val_logits[key].shape)}; every candidate needs "
                            f"[{len(labels)} images, classes], the same for all")
        value = latency.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise UserError(f"latency of {key} must be a non-negative number of milliseconds, got {value!r}")
    return keys


# ---- the command line ----------------------------------------------------------------------------
@dataclass
class EnsembleConfig:
    """The resolved settings of an ensemble selection; saved with its results."""

    results: str
    latency_ms: float
    device: str = "cpu"
    max_members: int = 3
    checkpoint: str = str(PRETRAINED)
    data: str = DEFAULT_DATA
    calibration_size: int = DEFAULT_CALIBRATION
    table: str = ""
    allow_foreign_table: bool = False
    out: str = "runs/ensemble"
    export: bool = False


RUN_FILES = ("ensemble.json", "ensemble.pt")  # what makes OUT an ensemble's folder; --overwrite removes them


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m search.ensemble", description=__doc__.splitlines()[0])
    parser.add_argument("results", help="results.json of a search (python -m search.evolve or search.bo)")
    parser.add_argument("--latency-ms", type=positive_float, required=True,
                        help="total latency budget of the ensemble in milliseconds on --device")
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda:N: whose predicted latency and timer (default cpu)")
    parser.add_argument("--max-members", type=int_range(), default=3, help="most subnets in the ensemble (default 3)")
    parser.add_argument("--checkpoint", default=None, help="supernet checkpoint (default: the search's)")
    parser.add_argument("--data", default=None, help="dataset folder (default: the search's)")
    parser.add_argument("--calibration-size", type=int_range(), default=None,
                        help="training images to recalibrate batch norm on (default: the search's)")
    parser.add_argument("--table", default=None, help="latency table whose timer measures (default: the search's)")
    parser.add_argument("--allow-foreign-table", action="store_true",
                        help="accept a table measured on another device, with a warning")
    parser.add_argument("--out", default="runs/ensemble", help="output folder")
    parser.add_argument("--export", action="store_true", help="also write OUT/ensemble.pt (TorchScript)")
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace the ensemble an --out already holds (removes its {', '.join(RUN_FILES)})")
    return parser.parse_args(argv)


def resolve(args: argparse.Namespace, results: dict[str, Any]) -> EnsembleConfig:
    """Checked :class:`EnsembleConfig`: flags left out take the search's own settings from ``results``."""
    device = str(parse_device(args.device))
    searched = results.get("config") if isinstance(results.get("config"), dict) else {}
    tables = results.get("tables") if isinstance(results.get("tables"), dict) else {}
    table = args.table or (tables.get(device) or {}).get("path")
    if not table:
        raise UserError(f"{args.results} names no latency table for {device}: pass --table")
    return EnsembleConfig(
        results=args.results, latency_ms=args.latency_ms, device=device, max_members=args.max_members,
        checkpoint=args.checkpoint or searched.get("checkpoint", str(PRETRAINED)),
        data=args.data or searched.get("data", DEFAULT_DATA),
        calibration_size=args.calibration_size or searched.get("calibration_size", DEFAULT_CALIBRATION),
        table=table, allow_foreign_table=args.allow_foreign_table, out=args.out, export=args.export)


# The shape of OUT/ensemble.json as far as its readers (search.report) use it.
_SCORES = {"val_top1": NUMBER, "test_top1": NUMBER, "measured_latency_ms": Optional(Nullable(NUMBER))}
RESULTS_SCHEMA = {"budget_ms": NUMBER, "members": [{"arch": TEXT}], "ensemble": _SCORES, "best_member": _SCORES,
                  "gain_test_top1": NUMBER}


def front_of(results: dict[str, Any], metric: str, space: Space, path: str) -> dict[str, dict[str, Any]]:
    """The Pareto-front records of a search's results, by canonical string, in the front's order.

    The stored front was computed against the first scenario's latency metric; for another device it is
    recomputed from the history on ``metric``.
    """
    try:
        history = {space.to_string(r["arch"]): r for r in results["history"]}
    except (KeyError, TypeError):
        raise UserError(f"{path}: a history record has no architecture; the file is corrupt") from None
    except UserError as err:
        raise UserError(f"{path}: a history record is not an architecture of this supernet ({err})") from None
    front = results["pareto_front"]
    if not history or any(not isinstance(r.get("metrics"), dict) or metric not in r["metrics"]
                          for r in history.values()):
        known = sorted({m for r in history.values() for m in r.get("metrics") or {} if m.startswith("latency_ms@")})
        raise UserError(f"{path} has no {metric} predictions (it has {', '.join(known) or 'none'}): pass that "
                        "--device, or search with a scenario on this device")
    if results.get("latency_metric") != metric:
        records = [Record(r["arch"], k, r["metrics"], r.get("generation", 0)) for k, r in history.items()]
        front = [r.key for r in pareto_front(records, [("val_top1", True), (metric, False)])]
    missing = [k for k in front if k not in history]
    if missing:
        raise UserError(f"{path}: Pareto-front member {missing[0]} is not in its history; the file is corrupt")
    return {key: history[key] for key in front}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with claim_folder(args.out, what="an ensemble", run_files=RUN_FILES, overwrite=args.overwrite):
        return run(args, argv)


def run(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """Pick, score, time and write the ensemble the parsed flags ``args`` ask for; return its report."""
    results = read_results(args.results)
    config = resolve(args, results)
    device, metric, budget = parse_device(config.device), f"latency_ms@{config.device}", config.latency_ms
    supernet, meta = load_supernet(config.checkpoint)
    space = supernet.space
    front = front_of(results, metric, space, config.results)
    latency = {key: float(r["metrics"][metric]) for key, r in front.items() if r["metrics"][metric] <= budget}
    if not latency:
        fastest = min(r["metrics"][metric] for r in front.values())
        raise UserError(f"--latency-ms {budget:g} is below every Pareto-front member's predicted latency (the "
                        f"fastest takes {fastest:.2f} ms on {config.device}): raise it")
    table = load_table(config.table, device=device, space=space.config, allow_foreign=config.allow_foreign_table)
    splits = checkpoint_splits(config.data, meta, space.config, config.checkpoint)
    calibration = splits.train.subset(torch.arange(min(config.calibration_size, len(splits.train))))

    subnets, val, test = {}, {}, {}
    for key in tqdm(latency, desc="front members", unit="subnet", dynamic_ncols=True):
        subnets[key] = recalibrate_bn(supernet.extract(space.parse(key)), calibration)  # what the search scored
        val[key], test[key] = predict(subnets[key], splits.val), predict(subnets[key], splits.test)
        here, searched = top1([val[key]], splits.val.labels), front[key]["metrics"].get("val_top1")
        if searched is not None and abs(here - searched) > 1e-6:
            print(f"warning: {key} scores val top-1 {here:.4f} here but {searched:.4f} in the search: another "
                  "checkpoint, dataset or --calibration-size?", file=sys.stderr)
    chosen = select(val, splits.val.labels, latency, budget_ms=budget, max_members=config.max_members)
    (best,) = select(val, splits.val.labels, latency, budget_ms=budget, max_members=1)

    def scores(keys: list[str]) -> dict[str, float]:
        return {"val_top1": top1([val[k] for k in keys], splits.val.labels),
                "test_top1": top1([test[k] for k in keys], splits.test.labels),
                "predicted_latency_ms": sum(latency[k] for k in keys)}

    timer = table.timer(device)
    ensemble = Ensemble([subnets[k] for k in chosen])
    report = {
        "budget_ms": budget, "device": config.device, "max_members": config.max_members,
        "members": [{"arch": k, **scores([k])} for k in chosen],
        "ensemble": {**scores(chosen), "measured_latency_ms": table.measure(ensemble, device, timer)["median_ms"]},
        "best_member": {"arch": best, **scores([best]),
                        "measured_latency_ms": table.measure(subnets[best], device, timer)["median_ms"]},
    }
    report["gain_test_top1"] = report["ensemble"]["test_top1"] - report["best_member"]["test_top1"]
    report |= {"results": config.results, "config": dataclasses.asdict(config),
               "command": ["python", "-m", "search.ensemble", *(sys.argv[1:] if argv is None else argv)]}
    out = Path(config.out)
    write_json(out / "ensemble.json", report)
    if config.export:
        _export(ensemble.cpu(), report, config, space.config, out / "ensemble.pt")
    _print(report)
    if report["ensemble"]["measured_latency_ms"] > budget:
        print(f"warning: the ensemble's measured latency exceeds the {budget:g} ms budget although its predicted "
              "latency meets it; lower --latency-ms or rebuild the latency table", file=sys.stderr)
    print(f"wrote {out / 'ensemble.json'}" + (f" and {out / 'ensemble.pt'}" if config.export else ""))
    return report


def _export(ensemble: Ensemble, report: dict[str, Any], config: EnsembleConfig, space: Any,
            path: Path) -> Path:
    """Write ``ensemble`` as TorchScript, with its members, accuracy and latency in its metadata."""
    e = report["ensemble"]
    metadata = {"kind": "ensemble", "members": [m["arch"] for m in report["members"]],
                "val_top1": e["val_top1"], "test_top1": e["test_top1"],
                "latency": {"device": config.device, "budget_ms": config.latency_ms,
                            "predicted_ms": e["predicted_latency_ms"], "measured_ms": e["measured_latency_ms"]},
                "space": space.name, "checkpoint": config.checkpoint,
                "input": input_description(space)}
    example = torch.rand(2, *input_shape(space))
    return export(ensemble, path, metadata, example)


def _print(report: dict[str, Any]) -> None:
    """The comparison, as a small table."""
    print(f"budget {report['budget_ms']:g} ms on {report['device']}, at most {report['max_members']} members")
    print(f"{'':<16}{'val top1':>9}{'test top1':>11}{'predicted ms':>14}{'measured ms':>13}")
    for name, row in (("ensemble", report["ensemble"]), ("best member", report["best_member"])):
        print(f"{name:<16}{row['val_top1']:>9.4f}{row['test_top1']:>11.4f}{row['predicted_latency_ms']:>14.2f}"
              f"{row['measured_latency_ms']:>13.2f}")
    print(f"gain in test top1: {report['gain_test_top1']:+.4f}")
    for member in report["members"]:
        print(f"member  {member['arch']}  val top1 {member['val_top1']:.4f}  predicted "
              f"{member['predicted_latency_ms']:.2f} ms")


if __name__ == "__main__":
    run_cli(main)
