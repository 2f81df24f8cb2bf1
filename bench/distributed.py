"""Data-parallel training speed-up on this CPU: 2 processes of 1 thread vs 1 process of 2 threads, in one run.

    python bench/distributed.py [--steps 30] [--batch-size 128] [--data /usr/share/datasets/fashion-mnist]

Both arms run the real CLI (``python -m supernet.train``; ``torchrun --nproc-per-node 2`` for the second) on
the real data at the same global batch, so they take the same steps on the same images. Each arm is timed
twice, stopping after ``--warmup`` and after ``--warmup + --steps`` steps; the difference in wall time over
``--steps`` cancels start-up, data loading and the first, slow steps. Ratio = steps/s of 2 processes / steps/s
of 1 (> 1: data-parallel is faster). Needs an otherwise idle machine to mean anything.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from supernet.data import DEFAULT_DATA  # noqa: E402


def wall_seconds(processes: int, module_args: list[str], threads: int) -> float:
    """Wall time of ``python -m MODULE_ARGS`` in one process, or under torchrun in ``processes``, with ``threads``
    threads in all however many processes."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] if processes > 1 else []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads // processes)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *launcher, "-m", *module_args], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def compare(unit: str, count: int, warmup: int, threads: int, seconds: Callable[[int, int], float]) -> None:
    """Print ``unit``/s of 1 and of 2 processes and their ratio; ``seconds(processes, n)`` times a fresh run of
    ``n`` units, and a run of ``warmup`` is subtracted from one of ``warmup + count`` to cancel start-up."""
    print(f"{'arm':32s} {unit + '/s':>8s} {'ratio':>6s}")
    rates = {}
    for processes in (1, 2):
        rates[processes] = count / (seconds(processes, warmup + count) - seconds(processes, warmup))
        label = f"{processes} process(es) x {threads // processes} thread(s)"
        print(f"{label:32s} {rates[processes]:8.3f} {rates[processes] / rates[1]:6.2f}")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


def train_seconds(processes: int, steps: int, args: argparse.Namespace) -> float:
    """Wall time of a fresh training run of ``steps`` steps."""
    with tempfile.TemporaryDirectory() as out:
        return wall_seconds(processes, ["supernet.train", "--data", args.data, "--out", out, "--batch-size",
                                        str(args.batch_size), "--stop-after", str(steps), "--checkpoint-every",
                                        "100000"], args.threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per arm")
    parser.add_argument("--warmup", type=int, default=3, help="steps of the shorter run subtracted from the longer")
    parser.add_argument("--threads", type=int, default=2, help="threads in all, split among the processes")
    args = parser.parse_args()
    print(f"global batch {args.batch_size}, {args.steps} timed steps, {args.threads} threads in all, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    compare("steps", args.steps, args.warmup, args.threads, lambda n, steps: train_seconds(n, steps, args))


if __name__ == "__main__":
    main()
