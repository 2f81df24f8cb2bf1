"""Search evaluation speed-up on this CPU: 2 processes of 1 thread vs 1 process of 2 threads, in one run.

    python bench/distributed_search.py [--algorithm random] [--evaluations 40] [--table TABLE]
                                       [--data /usr/share/datasets/fashion-mnist]

Both arms run the real CLI (``python -m search.evolve``; ``torchrun --nproc-per-node 2`` for the second) on the
shipped supernet and the real validation split, with the same seed, so they evaluate the same architectures.
Each arm runs twice, with ``--warmup`` and with ``--warmup + --evaluations`` evaluations; the difference in
wall time cancels start-up, loading and the winner's timing (``--verify 1``). Ratio = evaluations/s of 2
processes / evaluations/s of 1 (> 1: sharing is faster). ``random`` (the default) evaluates in full batches;
``evolution`` batches ``--children`` per generation, so less of its time is shared. Without ``--table`` the
cached latency table of this CPU is used (built first, outside the timing, if missing). Needs an otherwise
idle machine to mean anything.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.distributed import compare, wall_seconds  # noqa: E402
from search.latency import parse_device, table_for  # noqa: E402
from supernet.checkpoint import PRETRAINED, load_supernet  # noqa: E402
from supernet.data import DEFAULT_DATA  # noqa: E402


def search_seconds(processes: int, evaluations: int, args: argparse.Namespace) -> float:
    """Wall time of a fresh search of ``evaluations`` evaluations."""
    with tempfile.TemporaryDirectory() as out:
        return wall_seconds(processes, ["search.evolve", "--latency-ms", str(args.latency_ms), "--algorithm",
                                        args.algorithm, "--evaluations", str(evaluations), "--children",
                                        str(args.children), "--data", args.data, "--verify", "1", "--out", out,
                                        *(["--table", args.table] if args.table else [])], args.threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--table", default=None, help="latency table (default: this CPU's cached one)")
    parser.add_argument("--algorithm", choices=("random", "evolution"), default="random")
    parser.add_argument("--children", type=int, default=6, help="children per generation (evolution)")
    parser.add_argument("--latency-ms", type=float, default=10.0, help="budget (10 ms splits mbv3 on this CPU)")
    parser.add_argument("--evaluations", type=int, default=40, help="timed evaluations per arm")
    parser.add_argument("--warmup", type=int, default=8, help="evaluations of the shorter run subtracted")
    parser.add_argument("--threads", type=int, default=2, help="threads in all, split among the processes")
    args = parser.parse_args()
    if args.table is None:  # load, or build now, the cached table, so that neither arm's timing includes a build
        table_for(load_supernet(PRETRAINED)[0].space.config, parse_device("cpu"))
    print(f"{args.algorithm}, {args.evaluations} timed evaluations, {args.threads} threads in all, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    compare("evals", args.evaluations, args.warmup, args.threads, lambda n, count: search_seconds(n, count, args))


if __name__ == "__main__":
    main()
