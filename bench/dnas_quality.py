"""Differentiable search on NAS-Bench-201 / CIFAR-10: does the remedy avoid DARTS' collapse, and do its cells
beat random search? Target: beta-DARTS' derived cells above the mean best-of-100 of random search.

    python bench/dnas_quality.py --data ../shared/data/cifar10 --out runs/bench-dnas
    python bench/dnas_quality.py --data ../shared/data/cifar10 --epochs 1 --subset 512 --seeds 0 --out /tmp/dq
        # a quick check (a minute or two)

Each ``--methods`` x ``--seeds`` pair runs ``search.dnas`` (the library call, same settings, a budget above
the largest cell, so the search is for accuracy alone) and scores its derived cell by the published
stand-alone CIFAR-10 accuracy of its function class (``bench/ranking.py``'s table: the mean over the raw cells
of the class of AnalogNAS-Bench's 200-epoch training; ``pip install analog-nasbench``). A cell is *collapsed*
when at least 4 of its 6 edges hold parameter-free ops (none, skip, pool). Random search: the best published
accuracy among 100 distinct functions drawn uniformly, averaged over 1,000 draws. With ``--evolve-checkpoint``
(a SPOS supernet of the same space), ``search.evolve`` runs per seed with as many evaluations as fit the
mean wall time of one differentiable search (the supernet's own training not counted, as DNAS's is).

Runs are kept in ``OUT/<method>-s<seed>/`` and a rerun skips finished ones (an interrupted one resumes);
``OUT/dnas_quality.json`` and ``OUT/dnas_quality.png`` hold the figures.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.ranking import published_by_function  # noqa: E402
from search.dnas import METHODS, DnasConfig, search  # noqa: E402
from search.latency import build_table, load_table  # noqa: E402
from search.timing import TimingSettings  # noqa: E402
from supernet.family import get_space  # noqa: E402
from supernet.nb201 import KEYS  # noqa: E402

PARAMETER_FREE = ("none", "skip_connect", "avg_pool_3x3")


def random_best_of(published: dict[str, tuple[float, int]], picks: int = 100, trials: int = 1000,
                   seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of the best published accuracy among ``picks`` distinct functions."""
    rng = random.Random(seed)
    values = [accuracy for accuracy, _ in published.values()]
    bests = [max(rng.sample(values, picks)) for _ in range(trials)]
    return statistics.fmean(bests), statistics.stdev(bests)


def parameter_free(arch: dict[str, str]) -> int:
    return sum(arch[key] in PARAMETER_FREE for key in KEYS)


def run_dnas(args: argparse.Namespace, method: str, seed: int, table: Path, budget: float) -> dict[str, Any]:
    out = args.out / f"{method}-s{seed}"
    if (out / "results.json").is_file():
        return json.loads((out / "results.json").read_text())
    config = DnasConfig(latency_ms=budget, space=args.space, method=method, data=str(args.data), table=str(table),
                        epochs=args.epochs, warmup_epochs=args.warmup_epochs, batch_size=args.batch_size,
                        val_size=args.val_size, subset=args.subset, crop_padding=4, seed=seed,
                        beta_lambda=args.beta_lambda, arch_lr=args.arch_lr, out=str(out))
    start = time.time()
    resume = (out / "last.pt").is_file()
    out.mkdir(parents=True, exist_ok=True)
    result = search(config, resume=resume, command=["python", "bench/dnas_quality.py"])
    result["bench_seconds"] = round(time.time() - start, 1)
    (out / "results.json").write_text(json.dumps(result))
    return result


def seconds_per_evaluation(checkpoint: Path, count: int = 4) -> float:
    """What one evolve evaluation of ``checkpoint`` costs here: extract, recalibrate, score, as its evaluator does
    (the mean over ``count`` random cells, after one untimed)."""
    from search.evaluate import SupernetEvaluator
    from supernet.checkpoint import load_supernet, trained_data
    from supernet.data import load_splits

    supernet, meta = load_supernet(checkpoint)
    space = supernet.space
    splits = load_splits(trained_data(meta), channels=3, size=space.config.input_size,
                         val_size=meta.get("train_config", {}).get("val_size", 5000), num_classes=10)
    evaluator = SupernetEvaluator(supernet, splits)
    archs = [space.sample(random.Random(f"timing-{i}")) for i in range(count + 1)]
    evaluator(archs[0])
    start = time.time()
    for arch in archs[1:]:
        evaluator(arch)
    return (time.time() - start) / count


def run_evolve(args: argparse.Namespace, seed: int, table: Path, budget: float, seconds: float) -> dict[str, Any]:
    """search.evolve on ``--evolve-checkpoint`` with the evaluations that fit ``seconds``."""
    from search.evolve import main as evolve

    out = args.out / f"evolve-s{seed}"
    if (out / "results.json").is_file():
        return json.loads((out / "results.json").read_text())
    per_evaluation = args.evolve_seconds_per_evaluation or seconds_per_evaluation(args.evolve_checkpoint)
    evaluations = max(12, int(seconds / per_evaluation))
    start = time.time()
    result = evolve(["--checkpoint", str(args.evolve_checkpoint), "--table", str(table), "--latency-ms", f"{budget:g}",
                     "--evaluations", str(evaluations), "--seed", str(seed), "--verify", "1", "--out", str(out)])
    result["bench_seconds"] = round(time.time() - start, 1)
    (out / "results.json").write_text(json.dumps(result))
    return result


def plot(path: Path, rows: list[dict[str, Any]], random_mean: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from search.plot import save_png

    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=120)
    for i, method in enumerate(methods):
        ys = [100 * r["published_top1"] for r in rows if r["method"] == method]
        ax.scatter([i] * len(ys), ys, s=40, label=f"{method} (one dot per seed)")
    ax.axhline(100 * random_mean, color="gray", linestyle="--", label="random search, mean best of 100")
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel("published CIFAR-10 top-1 of the derived cell (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    save_png(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python bench/dnas_quality.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10 ImageFolder")
    parser.add_argument("--space", default="nb201-cpu")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--warmup-epochs", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--val-size", type=int, default=10000)
    parser.add_argument("--subset", type=int, default=10000, help="training images (0: all not held out)")
    parser.add_argument("--beta-lambda", type=float, default=DnasConfig.beta_lambda)
    parser.add_argument("--arch-lr", type=float, default=3e-3,
                        help="Adam lr of the logits (DARTS' 3e-4 is for 50 epochs of 25k images; a short bench "
                             "run needs a larger step to move them as far)")
    parser.add_argument("--evolve-checkpoint", type=Path, default=None, help="SPOS supernet for search.evolve")
    parser.add_argument("--evolve-seeds", default=None, help="seeds of the evolve runs (default: --seeds)")
    parser.add_argument("--evolve-seconds-per-evaluation", type=float, default=0.0,
                        help="what one evolve evaluation costs here (0: time a few first)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-dnas"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    space = get_space(args.space)
    published = published_by_function(space)
    table = args.out / "table.json"
    if not table.is_file():
        build_table(space.config, torch.device("cpu"), settings=TimingSettings(), out=table, progress=False)
    budget = round(load_table(table).predict(space.largest()) * 1.5, 3)
    rows = []
    for method in args.methods.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            result = run_dnas(args, method, seed, table, budget)
            winner = next(iter(result["winners"].values()))
            arch = space.parse(winner["arch_string"])
            rows.append({"method": method, "seed": seed, "arch": winner["arch_string"],
                         "raw_cell": space.arch_string(arch), "parameter_free_edges": parameter_free(arch),
                         "published_top1": published[winner["arch_string"]][0],
                         "seconds": result.get("bench_seconds")})
            print(f"{method:>10} seed {seed}: published {100 * rows[-1]['published_top1']:.2f} %  "
                  f"parameter-free edges {rows[-1]['parameter_free_edges']}/6  {rows[-1]['seconds']} s  "
                  f"{rows[-1]['raw_cell']}", flush=True)
    mean_seconds = statistics.fmean(r["seconds"] or 0 for r in rows)
    if args.evolve_checkpoint:
        for seed in (int(s) for s in (args.evolve_seeds or args.seeds).split(",")):
            result = run_evolve(args, seed, table, budget, mean_seconds)
            winner = next(iter(result["winners"].values()))
            arch = space.parse(winner["arch_string"])
            rows.append({"method": "evolve", "seed": seed, "arch": winner["arch_string"],
                         "raw_cell": space.arch_string(arch), "parameter_free_edges": parameter_free(arch),
                         "published_top1": published[winner["arch_string"]][0],
                         "seconds": result.get("bench_seconds"), "evaluations": result["evaluations"]})
            print(f"    evolve seed {seed}: published {100 * rows[-1]['published_top1']:.2f} %  "
                  f"{result['evaluations']} evaluations  {rows[-1]['seconds']} s", flush=True)
    random_mean, random_std = random_best_of(published)
    summary = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        summary[method] = {"mean_published_top1": statistics.fmean(r["published_top1"] for r in mine),
                           "collapsed": sum(r["parameter_free_edges"] >= 4 for r in mine), "runs": len(mine),
                           "mean_seconds": statistics.fmean(r["seconds"] or 0 for r in mine)}
    verdict = summary.get("beta-darts", {}).get("mean_published_top1", 0) > random_mean
    report = {"settings": {k: str(v) for k, v in vars(args).items()}, "budget_ms": budget, "rows": rows,
              "random_best_of_100": {"mean": random_mean, "std": random_std}, "summary": summary,
              "target_met": verdict}
    (args.out / "dnas_quality.json").write_text(json.dumps(report, indent=1))
    plot(args.out / "dnas_quality.png", rows, random_mean)
    print(f"random search, best of 100 distinct cells: {100 * random_mean:.2f} % (std {100 * random_std:.2f})")
    for method, s in summary.items():
        print(f"{method:>10}: mean published {100 * s['mean_published_top1']:.2f} %  collapsed {s['collapsed']}/"
              f"{s['runs']}  mean {s['mean_seconds']:.0f} s per search")
    print(f"target (beta-darts above random best-of-100): {'met' if verdict else 'NOT met'}")
    print(f"wrote {args.out / 'dnas_quality.json'} and {args.out / 'dnas_quality.png'}")


if __name__ == "__main__":
    main()
