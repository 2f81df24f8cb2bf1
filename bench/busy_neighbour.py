"""The main job alone and beside a CPU-heavy neighbour, in one run: the ratio of their wall times.

    python bench/busy_neighbour.py [--evaluations 48]

Runs ``python -m search.evolve --latency-ms 10`` three times against one latency table built first (so the
three compare the search, not the table build): alone; beside a neighbour (a process multiplying matrices on
two threads, as a training would); and beside it again with ``OMP_NUM_THREADS=2``, the fixed thread count
every search used before threads followed the load (``supernet.cpuload``). Prints each wall time and the
ratios to the run alone. Target (issue 18): beside a neighbour under 2x the time alone.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NEIGHBOUR = ("import torch\ntorch.set_num_threads(2)\na = torch.randn(768, 768)\n"
             "while True:\n    a = torch.tanh(a @ a)\n")


def timed(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=48, help="evaluations of each search")
    parser.add_argument("--latency-ms", type=float, default=10.0, help="the budget")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ONESHOT_CACHE": str(Path(scratch) / "cache")}
        env.pop("OMP_NUM_THREADS", None)
        table = Path(scratch) / "table.json"
        timed(["search.latency", "build", "--keep-busy", "--out", str(table)], env)
        search = ["search.evolve", "--latency-ms", f"{args.latency_ms:g}", "--evaluations", str(args.evaluations),
                  "--table", str(table)]
        alone, _ = timed([*search, "--out", str(Path(scratch) / "alone")], env)
        print(f"alone:                              {alone:7.1f} s", flush=True)
        neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR])
        try:
            time.sleep(2)
            beside, log = timed([*search, "--out", str(Path(scratch) / "beside")], env)
            fixed, _ = timed([*search, "--out", str(Path(scratch) / "fixed")], {**env, "OMP_NUM_THREADS": "2"})
        finally:
            neighbour.kill()
    said = [line[line.index("other processes keep"):] for line in log.replace("\r", "\n").splitlines()
            if "other processes keep" in line]  # tqdm's bar shares the line
    print(f"beside a neighbour, threads adapt:  {beside:7.1f} s  ({beside / alone:.2f}x alone)")
    print(f"beside a neighbour, 2 threads:      {fixed:7.1f} s  ({fixed / alone:.2f}x alone)")
    print(f"the search said: {said[0] if said else '(nothing: threads unchanged)'}")


if __name__ == "__main__":
    main()
