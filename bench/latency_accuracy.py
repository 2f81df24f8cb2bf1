"""Latency-table accuracy bench: build a table and validate it on 100 random subnets, per batch size.

    python bench/latency_accuracy.py                       # this CPU, batch 1 and 4, eager
    python bench/latency_accuracy.py --device cuda:0       # a GPU
    python bench/latency_accuracy.py --runtime torchscript --batch-sizes 4

Target (issue 4): at least 95% of subnets within +-10% of their measured latency and Kendall tau >= 0.9,
at batch 1 and at the default batch size. Prints, per setting, the corrected table, the plain sum of unit
medians and FLOPs (affine fit, the baseline), and whether the target holds. Tables and validation files go
under ``--out``; a rerun reuses finished tables and measurements.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.accuracy import format_row  # noqa: E402
from search.latency import (DEFAULT_BATCH_SIZE, build_table, load_table, parse_device,  # noqa: E402
                            validate)
from search.timing import RUNTIMES, TimingSettings  # noqa: E402
from supernet.errors import UserError  # noqa: E402
from supernet.space import get_space  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--space", default="mbv3")
    parser.add_argument("--batch-sizes", default=f"1,{DEFAULT_BATCH_SIZE}")
    parser.add_argument("--runtime", choices=RUNTIMES, default="eager")
    parser.add_argument("--subnets", type=int, default=100)
    parser.add_argument("--out", default="runs/bench-latency")
    args = parser.parse_args()
    device = parse_device(args.device)
    space = get_space(args.space)
    verdicts = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        name = f"{args.space}-{device.type}{device.index or ''}-b{batch}-{args.runtime}"
        path = Path(args.out) / f"{name}.json"
        start = time.perf_counter()
        rebuilt = False
        try:
            table = load_table(path, device=device)
        except UserError:  # missing, or not usable here: (re)built, and its old validation is stale
            table = build_table(space.config, device, batch_size=batch, settings=TimingSettings(runtime=args.runtime),
                                out=path, overwrite=True)
            rebuilt = True
        built = time.perf_counter() - start
        result = validate(table, device, subnets=args.subnets, out=Path(args.out) / name, overwrite=rebuilt)
        print(f"\n{name}: table {built:.0f} s, validation {time.perf_counter() - start - built:.0f} s, "
              f"probe {table.probe_ms:.3f} ms, correction {table.scale:.4f} * sum + {table.offset_ms:.3f} ms")
        for label, figures in result["figures"].items():
            print(format_row(label, figures))
        main_figures = next(iter(result["figures"].values()))
        ok = main_figures["within_10_pct"] >= 95 and main_figures["kendall_tau"] >= 0.9
        verdicts.append(ok)
        print(f"target (>= 95% within 10%, tau >= 0.9): {'met' if ok else 'NOT met'}")
    sys.exit(0 if all(verdicts) else 1)


if __name__ == "__main__":
    main()
