"""Predictor-guided search against direct supernet search, and the predictor's tau as its training grows.

    python bench/guided_quality.py [--seeds 5] [--fractions 0.3,0.6] [--sizes 100,300,1000]

1. **Search quality at equal wall time.** For each budget (fractions of this machine's table range) and seed:
   the guided search (``search.evolve`` with the checkpoint's predictor, default settings) is timed; then a
   direct search (``--predictor none``, every candidate evaluated by the supernet) is given as many
   evaluations as fit in that wall time (at the per-evaluation cost measured in its own first run), and,
   as the yardstick of before, the old default of 48 evaluations. Each arm's figure is the winner's
   validation top-1 *by the supernet* (a guided winner's is measured, never predicted). Printed per budget:
   mean and range over the seeds, and the wall times.
2. **Tau against the number of evaluations.** From the predictor's fit journal (the checkpoint's
   ``NAME.predictor.journal.json``), a fixed fifth is held out; every kind of :mod:`search.regressors` is
   fitted on the first N of the rest for each ``--sizes`` N that the journal holds, and its held-out Kendall
   tau printed. Sizes the journal cannot serve are said, not skipped silently.

Runs in one process against one latency table (the cached one of this CPU, built first if missing), so the
arms compare the searches, not imports or table builds.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search import evolve  # noqa: E402
from search.accuracy import kendall_tau  # noqa: E402
from search.features import features  # noqa: E402
from search.predictor import default_out, output_paths  # noqa: E402
from search.latency import table_for  # noqa: E402
from search.regressors import KINDS  # noqa: E402
from supernet.checkpoint import PRETRAINED, load_supernet  # noqa: E402


def run_search(argv: list[str]) -> tuple[float, dict]:
    """Wall seconds and results of ``search.evolve`` with ``argv`` (its printing kept quiet)."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        results = evolve.main(argv)
    return time.perf_counter() - start, results


def winner_top1(results: dict) -> float:
    return next(iter(results["winners"].values()))["metrics"]["val_top1"]


def search_quality(checkpoint: str, seeds: int, fractions: list[float], scratch: Path) -> None:
    space = load_supernet(checkpoint)[0].space
    table = table_for(space.config, torch.device("cpu"))
    low, high = table.lowest_ms(), table.highest_ms()
    print(f"table {table.path}: {low:.2f} to {high:.2f} ms")
    for fraction in fractions:
        budget = round(low + fraction * (high - low), 2)
        arms: dict[str, list[tuple[float, float, int]]] = {"guided": [], "direct, equal time": [], "direct, 48": []}
        per_eval = None
        for seed in range(seeds):
            common = ["--latency-ms", f"{budget}", "--checkpoint", checkpoint, "--seed", str(seed)]
            wall, results = run_search([*common, "--out", str(scratch / f"g{budget}-{seed}")])
            arms["guided"].append((winner_top1(results), wall, results["supernet_evaluations"]))
            wall48, direct = run_search([*common, "--predictor", "none", "--evaluations", "48",
                                         "--out", str(scratch / f"d48-{budget}-{seed}")])
            arms["direct, 48"].append((winner_top1(direct), wall48, 48))
            per_eval = per_eval or wall48 / 48  # the direct arm's cost per evaluation, from its first run
            count = max(2, int(wall / per_eval))
            walld, direct = run_search([*common, "--predictor", "none", "--evaluations", str(count),
                                        "--out", str(scratch / f"de-{budget}-{seed}")])
            arms["direct, equal time"].append((winner_top1(direct), walld, count))
            print(f"  budget {budget} ms seed {seed}: guided {arms['guided'][-1][0]:.4f} ({wall:.0f} s), direct "
                  f"with {count} evaluations {arms['direct, equal time'][-1][0]:.4f} ({walld:.0f} s), direct with 48 "
                  f"{arms['direct, 48'][-1][0]:.4f} ({arms['direct, 48'][-1][1]:.0f} s)", flush=True)
        print(f"budget {budget} ms ({fraction:.0%} of the range), {seeds} seeds: winner val top-1 by the supernet")
        for name, rows in arms.items():
            tops = [r[0] for r in rows]
            print(f"  {name:<20} mean {100 * statistics.mean(tops):.2f} %  range {100 * min(tops):.2f} to "
                  f"{100 * max(tops):.2f} %  wall {statistics.mean(r[1] for r in rows):.0f} s  supernet "
                  f"evaluations {statistics.mean(r[2] for r in rows):.0f}")


def tau_by_size(checkpoint: str, sizes: list[int]) -> None:
    journal_path = output_paths(default_out(checkpoint))["journal"]
    if not journal_path.is_file():
        print(f"tau by size: no fit journal at {journal_path}; run `python -m search.predictor fit` first")
        return
    data = json.loads(journal_path.read_text())
    space = load_supernet(checkpoint)[0].space
    keys = list(data["entries"])
    y = torch.tensor([float(data["entries"][k]["val_top1"]) for k in keys], dtype=torch.float64)
    x = features(space, [space.parse(k) for k in keys])
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(0))
    held, rest = order[:len(keys) // 5], order[len(keys) // 5:]
    print(f"tau by size: {len(keys)} journalled evaluations, {len(held)} held out")
    for size in sizes:
        if size > len(rest):
            print(f"  {size:>5} evaluations: the journal holds only {len(rest)} beside the held-out ones; fit with "
                  f"--evaluations {size + len(held) + 1} to measure it")
            continue
        taus = {}
        for kind in KINDS:
            model = kind.fit(x[rest[:size]], y[rest[:size]], 0)
            taus[kind.kind] = kendall_tau(model.predict(x[held]).double(), y[held])
        print(f"  {size:>5} evaluations: " + "  ".join(f"{k} tau {v:.3f}" for k, v in taus.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(PRETRAINED))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--fractions", default="0.3,0.6", help="budgets as fractions of the table's range")
    parser.add_argument("--sizes", default="100,300,1000", help="training evaluations for the tau curve")
    parser.add_argument("--skip-search", action="store_true", help="only the tau curve")
    args = parser.parse_args()
    if not Path(default_out(args.checkpoint)).is_file():
        raise SystemExit(f"no predictor beside {args.checkpoint}: fit one with `python -m search.predictor fit`")
    tau_by_size(args.checkpoint, [int(s) for s in args.sizes.split(",")])
    if not args.skip_search:
        with tempfile.TemporaryDirectory() as scratch:
            search_quality(args.checkpoint, args.seeds, [float(f) for f in args.fractions.split(",")], Path(scratch))


if __name__ == "__main__":
    main()
