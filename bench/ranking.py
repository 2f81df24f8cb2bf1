"""Ranking bench: does the supernet order subnets as training each one alone would? Target Kendall tau >= 0.7.

    python bench/ranking.py                      # mbv3: 30 subnets, 25-40 min on the 2-core VM
    python bench/ranking.py --subnets 3 --train-images 512 --out /tmp/rank-test   # a quick check (< 1 min)
    python bench/ranking.py --epochs 2 --train-seed 1 --reference runs/bench-ranking-e2 --out runs/bench-ranking-e2-s1
        # the same subnets trained with another seed: tau between the two stand-alone runs is the ceiling
    python bench/ranking.py --checkpoint runs/nb201/final.pt --standalone published --subnets 200
        # nb201: against the published accuracies, no training (a few seconds per cell)

Search trusts the supernet's inherited-weight accuracy as a stand-in for what a subnet would reach if trained
on its own; this measures how far that holds, as rank agreement (one-shot supernets are usually reported at
tau 0.5-0.7), for the space of any supernet checkpoint (``supernet.family``).

Which cells: ``--subnets`` of them, from one seeded stream, so that a larger ``--subnets`` extends the same
list. A space that can list its distinct networks cheaply (``size() <= 10**6`` and an ``enumerate``; nb201's
6,466 functions) is shuffled once and the first N taken: N distinct networks, uniform, without replacement.
Any other space (mbv3) draws N with ``space.sample`` as before. ``--pick quantiles`` (nb201 only) takes instead
the networks at N evenly spaced quantiles of the published accuracy (below), one per distinct figure and none
at chance level (a network whose output ignores its input), for the small stand-alone check where N uniform
cells would be near ties; it does not depend on ``--seed`` and a larger N is another list.

For each cell (in its canonical form ``space.parse(space.to_string(arch))``, the network search evaluates):

1. inherited: validation top-1 with the supernet's weights, batch norm recalibrated on the first 1000 training
   images, on the validation split search uses: what ``search.evaluate.SupernetEvaluator`` computes in
   ``search.evolve``;
2. stand-alone, ``--standalone train`` (default): the network trained from scratch (the family's plain subnet,
   ``supernet.model.init_weights``, same seed for every cell) for ``--epochs`` on the first ``--train-images``
   training images as ``supernet.train`` trains (SGD with Nesterov momentum, short warm-up then cosine lr,
   ``--lr``, ``--weight-decay``, ``--batch-size``, ``--label-smoothing``, flips, ``--crop-padding``,
   channels-last), then batch norm recalibrated and scored on the same images as (1);
   ``--standalone published`` (nb201 only): the *mean* of the published CIFAR-10 test top-1
   (``bench/nb201_published.py``: AnalogNAS-Bench's own 200-epoch training of every raw cell, one seed each)
   over all raw cells of the cell's function class, which is less noisy than one seed of one member. Those
   figures are of the benchmark's C=16, N=5 network, whatever width the checkpoint's supernet has.

With nb201 and ``--standalone train``, each cell's published figure (the same class mean) is recorded too and
tau of trained against published is reported: whether this bench's recipe orders cells as the published
figures do (needs ``pip install analog-nasbench``; without it that comparison is left out).

mbv3 default size: 1 epoch on 12,000 images (94 steps of 128), one thread: 70-76 s per subnet (51-60 s of it
training, the rest the two evaluations) with other jobs sharing the VM, so 30 subnets take about 37 min. On
a quiet VM ``--threads 2`` takes 43-48 s per subnet (about 23 min), but two threads next to another busy
process run 5-6x *slower* than one (OpenMP threads waiting on each other), hence the default of 1. The
stand-alone figure of so short a training is itself a noisy proxy: the same subnet reached 0.800 with one
thread and 0.809 with two (reduction order alone), while even the largest and smallest subnets differ by
only 1.6% with inherited weights (validation 0.905 and 0.889): this caps the tau the bench can show; raise
``--epochs`` / ``--train-images`` for a tighter measurement.

Results go to ``OUT/ranking.json`` (with the resolved settings) after every cell, atomically; a rerun with the
same settings skips the finished cells. At the end: Kendall tau, Spearman rho, the overlap of the top 10 %
by either measure, mean accuracies, the verdict on the 0.7 target and ``OUT/ranking.png`` (inherited against
stand-alone accuracy; with nb201 training also ``OUT/ranking-published.png``, trained against published).
"""
from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.accuracy import kendall_tau, spearman_rho  # noqa: E402
from search.evaluate import DEFAULT_CALIBRATION  # noqa: E402
from search.plot import save_png  # noqa: E402
from supernet.checkpoint import PRETRAINED, load_supernet  # noqa: E402
from supernet.data import DEFAULT_DATA, ImageSet, load_splits  # noqa: E402
from supernet.errors import UserError, int_range, random_seed, run_cli  # noqa: E402
from supernet.evaluate import accuracy, recalibrate_bn  # noqa: E402
from supernet.family import Arch, Space, build_subnet  # noqa: E402
from supernet.io import read_json, write_json  # noqa: E402
from supernet.model import init_weights  # noqa: E402
from supernet.train import TRAIN_RANGES, TrainConfig, epoch_batches, make_optimizer, set_lr  # noqa: E402

TARGET_TAU = 0.7
CL = torch.channels_last
EVAL_BATCH = 250  # 1.6x faster than evaluate.accuracy's default of 1000 on one thread here; same figures
ENUMERABLE = 10 ** 6  # spaces with at most this many distinct networks are drawn from their full list
TOP_SHARE = 0.1  # the "top 10 %" whose overlap the summary reports
PUBLISHED_SOURCE = ("mean over all raw cells of the function class of analog-nasbench's baseline_accuracy "
                    "(AnalogNAS-Bench's own 200-epoch training of the C=16 N=5 network, one seed per cell; "
                    "CIFAR-10 test top-1), as a fraction")
# What a results file written before these settings existed was run with (so that it still resumes).
LEGACY_SETTINGS = {"standalone": "train", "pick": "uniform", "batch_size": 128, "lr": 0.1, "weight_decay": 3e-5,
                   "label_smoothing": 0.1, "crop_padding": 0}


def train_standalone(space_config: Any, arch: Arch, train_set: ImageSet, config: TrainConfig) -> torch.nn.Module:
    """``arch`` trained from fresh weights (seeded by ``config.seed``) with plain cross-entropy, channels-last."""
    torch.manual_seed(config.seed)
    model = init_weights(build_subnet(space_config, arch)).to(memory_format=CL).train()
    optimizer = make_optimizer(model, config)
    per_epoch = math.ceil(len(train_set) / config.batch_size)
    total = config.epochs * per_epoch
    bar = tqdm(total=total, desc="stand-alone", unit="step", leave=False, dynamic_ncols=True)
    step = 0
    for epoch in range(config.epochs):
        for x, y in epoch_batches(train_set, config, epoch):
            set_lr(optimizer, config, step, total)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x.contiguous(memory_format=CL)), y, label_smoothing=config.label_smoothing)
            loss.backward()
            optimizer.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return model


# ---- published figures (nb201) ------------------------------------------------------------------------
def is_nb201(space: Space) -> bool:
    return getattr(space.config, "family", "") == "nb201"


def published_by_function(space: Space) -> dict[str, tuple[float, int]]:
    """{canonical string: (mean published top-1 as a fraction, raw cells in the class)} of every distinct
    nb201 network; raises ``bench.nb201_published.MissingPackage`` without analog-nasbench."""
    from bench.nb201_published import all_published

    table = all_published()
    members: dict[str, list[float]] = {}
    for cell in space.cells():
        members.setdefault(space.to_string(cell), []).append(table[space.arch_string(cell)])
    return {key: (statistics.fmean(values) / 100, len(values)) for key, values in members.items()}


def load_published(space: Space, needed_by: str | None) -> dict[str, tuple[float, int]] | None:
    """The published table of an nb201 space; ``None`` when it is not nb201 or the package is missing, unless
    ``needed_by`` (a flag) needs it: then a one-line error."""
    from bench.nb201_published import MissingPackage

    if not is_nb201(space):
        if needed_by:
            raise UserError(f"{needed_by} needs NAS-Bench-201 figures, but the checkpoint's space {space.name!r} "
                            "is not an nb201 space; use --standalone train --pick uniform")
        return None
    try:
        return published_by_function(space)
    except MissingPackage as err:
        if needed_by:
            raise UserError(f"{needed_by}: {err}") from None
        print(f"note: {err}; the trained-vs-published comparison is left out", file=sys.stderr)
        return None


# ---- which cells ------------------------------------------------------------------------------------------
def enumerable(space: Space) -> bool:
    """Whether the space lists its distinct networks cheaply enough to draw from the full list."""
    return hasattr(space, "enumerate") and hasattr(space, "size") and space.size() <= ENUMERABLE


def uniform_cells(space: Space, count: int, seed: int) -> list[Arch]:
    """``count`` networks from one stream seeded by ``seed``; a larger ``count`` extends the same list.

    Enumerable spaces: the distinct networks shuffled once, the first ``count`` (no repeats); others:
    ``space.sample`` draws (repeats possible, as rare as the space is large).
    """
    rng = random.Random(seed)
    if not enumerable(space):
        return [space.sample(rng) for _ in range(count)]
    pool = list(space.enumerate())
    if count > len(pool):
        raise UserError(f"--subnets {count} is more than the {len(pool)} distinct networks of space {space.name!r}")
    rng.shuffle(pool)
    return pool[:count]


def quantile_cells(space: Space, count: int, published: Mapping[str, tuple[float, int]]) -> list[Arch]:
    """The networks at ``count`` evenly spaced quantiles of published accuracy, lowest first.

    Candidates: one network per distinct published figure (the first in enumeration order), none at or below
    chance (``1 / num_classes``: a network whose output does not depend on its input).
    """
    chance = 1 / space.config.num_classes
    by_value: dict[float, str] = {}
    for arch in space.enumerate():
        key = space.to_string(arch)
        value = published[key][0]
        if value > chance + 1e-9:
            by_value.setdefault(value, key)
    ranked = [by_value[value] for value in sorted(by_value)]
    if count > len(ranked):
        raise UserError(f"--pick quantiles --subnets {count}: space {space.name!r} has only {len(ranked)} "
                        "networks of distinct published accuracy above chance")
    if count == 1:
        return [space.parse(ranked[len(ranked) // 2])]
    step = (len(ranked) - 1) / (count - 1)  # >= 1, so the rounded positions are distinct
    return [space.parse(ranked[math.floor(i * step + 0.5)]) for i in range(count)]


# ---- summary and plot -------------------------------------------------------------------------------------
def top_overlap(x: Sequence[float], y: Sequence[float], share: float = TOP_SHARE) -> float:
    """Share of the top ``share`` of cells by ``x`` that are also in the top ``share`` by ``y`` (at least one
    cell; ties broken by list order)."""
    k = max(1, round(share * len(x)))
    top = lambda values: set(sorted(range(len(values)), key=lambda i: (-values[i], i))[:k])
    return len(top(x) & top(y)) / k


def agreement(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    return {"kendall_tau": kendall_tau(x, y), "spearman_rho": spearman_rho(x, y), "top10_overlap": top_overlap(x, y)}


def plot(path: Path, x: Sequence[float], y: Sequence[float], xlabel: str, ylabel: str, title: str) -> Path:
    """Scatter of ``y`` against ``x`` (fractions, drawn in %)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 5.0), dpi=120)
    ax.scatter(100 * np.asarray(x), 100 * np.asarray(y), s=16)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


# ---- command line -----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python bench/ranking.py", description=__doc__.splitlines()[0])
    parser.add_argument("--subnets", type=int_range(), default=30, help="cells (subnets) to rank")
    parser.add_argument("--pick", choices=("uniform", "quantiles"), default="uniform",
                        help="uniform draws, or (nb201) cells spread over the published accuracy range")
    parser.add_argument("--standalone", choices=("train", "published"), default="train",
                        help="stand-alone accuracy: train each cell here, or (nb201) the published figures")
    parser.add_argument("--epochs", type=int_range(), default=1, help="stand-alone training epochs")
    parser.add_argument("--train-images", type=int_range(), default=12000,
                        help="training images for stand-alone training")
    parser.add_argument("--batch-size", type=TRAIN_RANGES["batch_size"], default=defaults.batch_size)
    parser.add_argument("--lr", type=TRAIN_RANGES["lr"], default=defaults.lr, help="peak learning rate")
    parser.add_argument("--weight-decay", type=TRAIN_RANGES["weight_decay"], default=defaults.weight_decay)
    parser.add_argument("--label-smoothing", type=TRAIN_RANGES["label_smoothing"], default=defaults.label_smoothing)
    parser.add_argument("--crop-padding", type=TRAIN_RANGES["crop_padding"], default=0,
                        help="random crops zero-padded by this many pixels (CIFAR-10: 4); 0: none")
    parser.add_argument("--seed", type=random_seed, default=0, help="cell stream, weight init and batch order")
    parser.add_argument("--train-seed", type=random_seed, default=None,
                        help="weight init and batch order of the stand-alone training (default: --seed); with "
                             "--reference, measures the yardstick's own noise on the same subnets")
    parser.add_argument("--reference", default=None,
                        help="another run's OUT folder (same subnets, e.g. another --train-seed): also print tau "
                             "between the two runs' stand-alone accuracies, the ceiling this bench can show")
    parser.add_argument("--checkpoint", default=str(PRETRAINED))
    parser.add_argument("--data", default=None,
                        help="dataset (default: the one the checkpoint was trained on, else Fashion-MNIST)")
    parser.add_argument("--out", default="runs/bench-ranking")
    parser.add_argument("--threads", type=int_range(0, os.cpu_count() or 1), default=1,
                        help="torch threads (0: torch's default); see the docstring for why 1")
    return parser.parse_args(argv)


def resolved_settings(args: argparse.Namespace, val_size: int, calibration: int, train_seed: int) -> dict[str, Any]:
    """What decides the results: saved in ``ranking.json`` and compared on a rerun."""
    settings = {"checkpoint": str(Path(args.checkpoint).resolve()), "data": str(args.data), "val_size": val_size,
                "seed": args.seed, "calibration_images": calibration, "standalone": args.standalone,
                "pick": args.pick}
    if args.standalone == "train":
        settings.update(epochs=args.epochs, train_images=args.train_images, batch_size=args.batch_size, lr=args.lr,
                        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                        crop_padding=args.crop_padding)
        if train_seed != args.seed:  # only then, so that files written before this option still resume
            settings["train_seed"] = train_seed
    return settings


def read_results(path: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``path``'s results when they were made with ``settings`` (a file from before the recipe flags counts
    as made with their defaults); fresh ones when there is no file; a one-line error otherwise."""
    if not path.exists():
        return {"settings": dict(settings), "subnets": []}
    results = read_json(path, "ranking results")
    old = results.get("settings")
    if not isinstance(old, dict) or ({**LEGACY_SETTINGS, **old} != settings and old != settings):
        raise UserError(f"{path} was written with other settings ({old}); pass another --out or delete it")
    results["settings"] = dict(settings)
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    supernet, meta = load_supernet(args.checkpoint)
    space = supernet.space
    needed = "--standalone published" if args.standalone == "published" else \
        "--pick quantiles" if args.pick == "quantiles" else None
    published = load_published(space, needed)
    train_config = meta.get("train_config", {})
    if args.data is None:
        args.data = train_config.get("data", DEFAULT_DATA)
    val_size = train_config.get("val_size", 5000)
    splits = load_splits(args.data, channels=space.config.in_channels, size=space.config.input_size,
                         val_size=val_size, num_classes=space.config.num_classes)
    if args.standalone == "train" and args.train_images > len(splits.train):
        raise UserError(f"--train-images {args.train_images} exceeds the {len(splits.train)} training images")
    train_set = splits.train.subset(torch.arange(min(args.train_images, len(splits.train))))
    steps = args.epochs * math.ceil(args.train_images / args.batch_size)
    train_seed = args.seed if args.train_seed is None else args.train_seed
    config = TrainConfig(epochs=args.epochs, seed=train_seed, warmup_steps=math.ceil(0.05 * steps),
                         batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                         label_smoothing=args.label_smoothing, crop_padding=args.crop_padding)
    calibration = splits.train.subset(torch.arange(min(DEFAULT_CALIBRATION, len(splits.train))))

    def score(model: torch.nn.Module) -> float:
        """Validation top-1 after batch-norm recalibration: what search.evaluate.SupernetEvaluator computes."""
        return accuracy(recalibrate_bn(model, calibration), splits.val, batch_size=EVAL_BATCH)

    archs = quantile_cells(space, args.subnets, published) if args.pick == "quantiles" else \
        uniform_cells(space, args.subnets, args.seed)
    settings = resolved_settings(args, val_size, len(calibration), train_seed)
    path = Path(args.out) / "ranking.json"
    results = read_results(path, settings)
    if published is not None:
        results["published_source"] = PUBLISHED_SOURCE
    done = {r["arch"]: r for r in results["subnets"]}
    how = "published figures (class means)" if args.standalone == "published" else \
        f"stand-alone {args.epochs} epoch(s) on {args.train_images} images ({steps} steps)"
    print(f"{space.name}: {args.subnets} cells ({args.pick}), {how}, {torch.get_num_threads()} threads; "
          f"{len(done)} already in {path}")

    bar = tqdm(archs, desc="cells", unit="cell", dynamic_ncols=True)
    for index, arch in enumerate(bar):
        key = space.to_string(arch)
        if key in done:
            continue
        canonical = space.parse(key)
        start = time.perf_counter()
        record: dict[str, Any] = {"index": index, "arch": key, "inherited_top1": score(supernet.extract(canonical))}
        if published is not None:
            record["published_top1"], record["published_cells"] = published[key]
        if args.standalone == "published":
            record["standalone_top1"] = record["published_top1"]
        else:
            trained = time.perf_counter()
            model = train_standalone(space.config, canonical, train_set, config)
            record["train_seconds"] = round(time.perf_counter() - trained, 1)
            record["standalone_top1"] = score(model)
        record["seconds"] = round(time.perf_counter() - start, 1)
        done[key] = record
        results["subnets"].append(record)
        write_json(path, results)
        bar.set_postfix(inherited=f"{record['inherited_top1']:.4f}", standalone=f"{record['standalone_top1']:.4f}",
                        s=record["seconds"])
    bar.close()

    rows = [done[space.to_string(arch)] for arch in archs]
    column = lambda name: [r[name] for r in rows]
    inherited, standalone = column("inherited_top1"), column("standalone_top1")
    ours = agreement(inherited, standalone)
    tau = ours["kendall_tau"]
    summary: dict[str, Any] = {"subnets": len(rows), **ours,
                               "mean_inherited_top1": float(np.mean(inherited)),
                               "mean_standalone_top1": float(np.mean(standalone)),
                               "mean_seconds": float(np.mean(column("seconds"))),
                               "target_tau": TARGET_TAU, "target_met": bool(tau >= TARGET_TAU)}
    compare_published = args.standalone == "train" and all("published_top1" in r for r in rows)
    if compare_published:
        summary["trained_vs_published"] = agreement(standalone, column("published_top1"))
        summary["inherited_vs_published"] = agreement(inherited, column("published_top1"))
    results["summary"] = summary
    write_json(path, results)

    source = "published" if args.standalone == "published" else "trained stand-alone"
    ylabel = ("published CIFAR-10 test top-1, class mean (%)" if args.standalone == "published"
              else "trained stand-alone: validation top-1 (%)")
    title = (f"{len(rows)} {space.name} cells ({args.pick}); {how}\n"
             f"Kendall tau {tau:.3f}, Spearman rho {ours['spearman_rho']:.3f}")
    pngs = [plot(Path(args.out) / "ranking.png", inherited, standalone,
                 "inherited weights: validation top-1 (%)", ylabel, title)]
    print(f"Kendall tau (inherited vs {source}) {tau:.3f}   Spearman rho {ours['spearman_rho']:.3f}   "
          f"top-10% overlap {ours['top10_overlap']:.2f}   over {len(rows)} cells")
    print(f"mean: inherited {summary['mean_inherited_top1']:.4f}, {source} {summary['mean_standalone_top1']:.4f}"
          f"   (mean {summary['mean_seconds']:.1f} s per cell)")
    if compare_published:
        theirs = summary["trained_vs_published"]
        print(f"trained vs published: Kendall tau {theirs['kendall_tau']:.3f}   Spearman rho "
              f"{theirs['spearman_rho']:.3f}   (inherited vs published: tau "
              f"{summary['inherited_vs_published']['kendall_tau']:.3f})")
        pngs.append(plot(Path(args.out) / "ranking-published.png", column("published_top1"), standalone,
                         "published CIFAR-10 test top-1, class mean (%)", ylabel,
                         f"{len(rows)} {space.name} cells; {how}\nKendall tau {theirs['kendall_tau']:.3f}"))
    print(f"target tau >= {TARGET_TAU}: {'met' if summary['target_met'] else 'NOT met'}")
    if args.reference:
        other = {r["arch"]: r for r in read_json(Path(args.reference) / "ranking.json", "reference ranking")["subnets"]}
        shared = [space.to_string(arch) for arch in archs if space.to_string(arch) in other]
        if len(shared) < 2:
            raise UserError(f"{args.reference} shares fewer than 2 subnets with this run: use the same --seed")
        mine, theirs = [done[k]["standalone_top1"] for k in shared], [other[k]["standalone_top1"] for k in shared]
        ceiling = kendall_tau(mine, theirs)
        results["summary"]["standalone_vs_reference_tau"] = ceiling
        write_json(path, results)
        print(f"Kendall tau between the two runs' stand-alone accuracies (the yardstick's noise ceiling) "
              f"{ceiling:.3f} over {len(shared)} subnets")
    print(f"wrote {path} and {' and '.join(map(str, pngs))}")


if __name__ == "__main__":
    run_cli(main)
