"""Scoring a subnet with batch norm folded into its convolutions vs as extracted, in one run.

    python bench/fold_batch_norm.py

For each space with batch norm, one random subnet (seeded) in eval mode, channels-last: the forward over a
batch of the size ``supernet.evaluate.predict`` scores with (250; 32 for spoken digits' 8,000-sample
waveforms) as extracted and after :func:`supernet.evaluate.fold_batch_norm`, timed alternately (medians), and
how long folding itself takes. Ratio = extracted / folded (how many times faster scoring got).
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.supernet_vs_static import paired_ms  # noqa: E402
from supernet import family  # noqa: E402
from supernet.evaluate import CHANNELS_LAST, fold_batch_norm  # noqa: E402

BATCHES = {"mbv3": 250, "nb201-cpu": 250, "mbv3-fsdd": 32}


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'space':10s} {'batch':>5s} {'fold ms':>8s} {'extracted ms':>13s} {'folded ms':>10s} {'ratio':>6s}")
    for name, batch in BATCHES.items():
        space = family.get_space(name)
        torch.manual_seed(0)
        subnet = family.build_supernet(space.config).extract(space.sample(random.Random(1)))
        subnet = subnet.to(memory_format=CHANNELS_LAST).eval()
        x = family.example_input(space.config, batch, 0)
        x = x.contiguous(memory_format=CHANNELS_LAST) if x.dim() == 4 else x
        start = time.perf_counter()
        folded = fold_batch_norm(subnet)
        fold_ms = (time.perf_counter() - start) * 1000
        with torch.no_grad():
            extracted_ms, folded_ms = paired_ms(((lambda: subnet(x)), (lambda: folded(x))), 2, 10)
        print(f"{name:10s} {batch:5d} {fold_ms:8.1f} {extracted_ms:13.1f} {folded_ms:10.1f} "
              f"{extracted_ms / folded_ms:5.2f}x")


if __name__ == "__main__":
    main()
