"""Find the most accurate subnet under a latency budget: ``python -m search.evolve --latency-ms 10``.

With no other flag it searches the supernet shipped in the package, on Fashion-MNIST's validation split,
against this device's latency table (measured on first use, then cached). Candidates whose predicted latency
breaks the budget are rejected by the table before they are evaluated. At the end the best candidates are
timed end to end on the device, exactly as the table was (same runtime, batch, threads and reference probe),
and printed with their predicted latency; the winner is the most accurate one whose *measured* latency meets the
budget (if none does, the result says so plainly).

Writes ``OUT/results.json`` (winner, every evaluated architecture, the resolved config), ``OUT/search.png``
(accuracy against latency, budget and winner marked) and prints the winner.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supernet.checkpoint import PRETRAINED, load_supernet
from supernet.data import DEFAULT_DATA, load_splits
from supernet.errors import UserError, check_flags, run_cli
from supernet.io import write_json
from search.evaluate import DEFAULT_CALIBRATION, SupernetEvaluator
from search.evolution import regularized_evolution
from search.latency import DEFAULT_BATCH_SIZE, DEFAULT_THREADS, parse_device, table_for
from search.plot import plot_search
from search.timing import RUNTIMES, TimingSettings


@dataclass
class EvolveConfig:
    """The resolved settings of a search; saved with its results."""

    latency_ms: float
    checkpoint: str = str(PRETRAINED)
    data: str = DEFAULT_DATA
    device: str = "cpu"
    table: str | None = None
    allow_foreign_table: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int = DEFAULT_THREADS
    runtime: str = "eager"
    population: int = 12
    generations: int = 6
    children: int = 6
    tournament: int = 4
    mutation_prob: float = 0.15
    crossover_prob: float = 0.5
    calibration_size: int = DEFAULT_CALIBRATION
    verify: int = 5
    seed: int = 0
    out: str = "runs/evolve"


def parse_args(argv: list[str] | None) -> EvolveConfig:
    d = EvolveConfig(latency_ms=0.0)  # the defaults, kept in one place
    parser = argparse.ArgumentParser(prog="python -m search.evolve", description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, required=True, help="latency budget in milliseconds")
    parser.add_argument("--checkpoint", default=d.checkpoint, help="supernet checkpoint (default: shipped)")
    parser.add_argument("--data", default=d.data, help="dataset folder (default: Debian's Fashion-MNIST)")
    parser.add_argument("--device", default=d.device, help="cpu or cuda:N, where latency is measured")
    parser.add_argument("--table", default=None, help="latency table file (default: this device's cached one)")
    parser.add_argument("--allow-foreign-table", action="store_true",
                        help="accept a table measured on another device, with a warning")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="latency batch size")
    parser.add_argument("--threads", type=int, default=d.threads,
                        help=f"torch threads while timing (default {DEFAULT_THREADS}; 0: torch's own)")
    parser.add_argument("--runtime", choices=RUNTIMES, default=d.runtime, help="latency runtime (eager or torchscript)")
    parser.add_argument("--population", type=int, default=d.population)
    parser.add_argument("--generations", type=int, default=d.generations)
    parser.add_argument("--children", type=int, default=d.children, help="architectures bred per generation")
    parser.add_argument("--tournament", type=int, default=d.tournament)
    parser.add_argument("--mutation-prob", type=float, default=d.mutation_prob)
    parser.add_argument("--crossover-prob", type=float, default=d.crossover_prob)
    parser.add_argument("--calibration-size", type=int, default=d.calibration_size,
                        help="training images used to recalibrate batch norm")
    parser.add_argument("--verify", type=int, default=d.verify, help="best candidates timed end to end")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--out", default=d.out, help="output folder")
    config = EvolveConfig(**vars(parser.parse_args(argv)))
    if not config.latency_ms > 0:
        raise UserError(f"--latency-ms must be a positive number of milliseconds, got {config.latency_ms}")
    check_flags(config, positive=("batch_size", "calibration_size", "verify"), non_negative=("threads",))
    return config


def evolve(config: EvolveConfig, command: list[str]) -> dict[str, Any]:
    """Run the search described by ``config``; write and return the results."""
    device = parse_device(config.device)
    supernet, meta = load_supernet(config.checkpoint)
    space = supernet.space
    splits = load_splits(config.data, channels=space.config.in_channels, size=space.config.input_size,
                         val_size=meta.get("train_config", {}).get("val_size", 5000))
    table = table_for(space.config, device, batch_size=config.batch_size,
                      settings=TimingSettings(threads=config.threads, runtime=config.runtime),
                      path=config.table, allow_foreign=config.allow_foreign_table)
    smallest = table.predict(space.smallest())
    if smallest > config.latency_ms:
        raise UserError(f"--latency-ms {config.latency_ms:g} is below the smallest subnet's predicted latency "
                        f"({smallest:.2f} ms on this device): raise the budget")
    out = Path(config.out)
    evaluator = SupernetEvaluator(supernet, splits, calibration_size=config.calibration_size)
    history = regularized_evolution(
        space, evaluator, objective="val_top1", feasible=lambda a: table.predict(a) <= config.latency_ms,
        population=config.population, generations=config.generations, children=config.children,
        tournament=config.tournament, mutation_prob=config.mutation_prob, crossover_prob=config.crossover_prob,
        seed=config.seed)
    for record in history:
        record.metrics["predicted_latency_ms"] = table.predict(record.arch)

    ranked = sorted(history, key=lambda r: -r.metrics["val_top1"])
    winner, verified, timer = None, [], table.timer(device)
    for record in ranked[:config.verify]:
        timing = table.measure(supernet.extract(record.arch), device, timer)
        record.metrics["measured_latency_ms"] = timing["median_ms"]
        record.metrics["measured_spread_ms"] = timing["spread_ms"]
        verified.append({"arch": record.key, "val_top1": record.metrics["val_top1"],
                         "predicted_latency_ms": record.metrics["predicted_latency_ms"],
                         "measured_latency_ms": timing["median_ms"],
                         "meets_budget": timing["median_ms"] <= config.latency_ms})
        print(f"verify   predicted {record.metrics['predicted_latency_ms']:6.2f} ms   measured {timing['median_ms']:6.2f} ms"
              f"   {'within' if verified[-1]['meets_budget'] else 'OVER'} budget   val top1 "
              f"{record.metrics['val_top1']:.4f}   {record.key}")
        if verified[-1]["meets_budget"]:
            winner = record
            break
    meets = winner is not None
    winner = winner or ranked[0]
    result = {
        "budget_ms": config.latency_ms,
        "winner": {**winner.to_dict(), "meets_budget": meets},
        "checkpoint": {"path": config.checkpoint, "command": meta.get("command")},
        "table": {"path": str(table.path), "fingerprint": table.fingerprint},
        "verified": verified,
        "evaluations": len(history),
        "history": [r.to_dict() for r in history],
        "config": dataclasses.asdict(config),
        "command": command,
    }
    write_json(out / "results.json", result)
    plot_search(result, out / "search.png")
    write_json(out / "config.json", {"config": dataclasses.asdict(config), "command": command})
    m = winner.metrics
    verdict = "meets" if meets else "DOES NOT meet"
    print(f"winner   {winner.key}")
    print(f"val top1 {m['val_top1']:.4f}   predicted {m['predicted_latency_ms']:.2f} ms   measured "
          f"{m['measured_latency_ms']:.2f} ms (budget {config.latency_ms:g} ms: {verdict} it when measured)")
    print(f"wrote {out / 'results.json'} and {out / 'search.png'}")
    if not meets:
        print(f"warning: none of the {config.verify} best candidates met the budget when measured; raise "
              "--verify or rebuild the latency table", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    evolve(config, ["python", "-m", "search.evolve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    run_cli(main)
