"""What the checks and caches of issues 15 and 16 cost or save when something is loaded, as ratios in one run.

- Search core import: ``import search.strategies`` (and space, problem, gp) in a fresh process, against the
  same process also importing torch, as the search core did before it took a process-group protocol.
- Checkpoint load: :func:`supernet.checkpoint.load_checkpoint` of the shipped supernet (CRC-32 of every zip
  member, non-finite tensors, metadata shape) against a plain ``torch.load(weights_only=True)`` of it.
- ImageFolder load: ``load_splits`` of CIFAR-10 (``../shared/data/cifar10``, 60,000 JPEGs) decoding every
  image into an empty cache, against the same call served from that cache.

    python bench/load_costs.py              # add --no-images to skip CIFAR-10
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CIFAR = ROOT.parent / "shared" / "data" / "cifar10"
CORE = "import search.strategies, search.space, search.problem, search.gp"


def import_seconds(code: str, repeats: int) -> float:
    """Median wall time of a fresh ``python -c code`` over ``repeats`` runs (interpreter start included)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_ms(load, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        load()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def row(measure: str, value: float, baseline: float, unit: str) -> None:
    print(f"| {measure} ({unit}) | {value:.3g} | {baseline:.3g} | {value / baseline:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-images", action="store_true", help="skip the CIFAR-10 cache figure")
    args = parser.parse_args()
    print("| measure | value | baseline | ratio |\n| --- | ---: | ---: | ---: |")
    row("import the search core vs the same with torch", import_seconds(CORE, args.repeats),
        import_seconds(f"import torch; {CORE}", args.repeats), "s")

    import torch

    from supernet.checkpoint import PRETRAINED, load_checkpoint
    torch.set_num_threads(1)
    checked = load_ms(lambda: load_checkpoint(PRETRAINED), 10 * args.repeats)
    plain = load_ms(lambda: torch.load(PRETRAINED, weights_only=True), 10 * args.repeats)
    row("load the shipped checkpoint, checked vs plain torch.load", checked, plain, "ms")

    if args.no_images or not CIFAR.is_dir():
        print(f"(CIFAR-10 figure skipped: {'--no-images' if args.no_images else f'{CIFAR} is absent'})")
        return
    from supernet.data import load_splits
    with tempfile.TemporaryDirectory() as cache:
        os.environ["ONESHOT_CACHE"] = cache
        start = time.perf_counter()
        load_splits(CIFAR, channels=3, size=32)
        first = time.perf_counter() - start
        start = time.perf_counter()
        load_splits(CIFAR, channels=3, size=32)
        cached = time.perf_counter() - start
    row("load CIFAR-10 (60,000 JPEGs): from the cache vs decoding into it", cached, first, "s")


if __name__ == "__main__":
    main()
