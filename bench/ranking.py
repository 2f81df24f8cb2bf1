"""Ranking bench: does the supernet order subnets as training each one alone would? Target Kendall tau >= 0.7.

    python bench/ranking.py                      # 30 subnets: 25-40 min on the 2-core VM
    python bench/ranking.py --subnets 3 --train-images 512 --out /tmp/rank-test   # a quick check (< 1 min)
    python bench/ranking.py --epochs 2 --train-seed 1 --reference runs/bench-ranking-e2 --out runs/bench-ranking-e2-s1
        # the same subnets trained with another seed: tau between the two stand-alone runs is the ceiling

Search trusts the supernet's inherited-weight accuracy as a stand-in for what a subnet would reach if trained
on its own; this measures how far that holds, as rank agreement (one-shot supernets are usually reported at
tau 0.5-0.7). For each of ``--subnets`` random subnets of the checkpoint's space (one seeded stream, so a
larger ``--subnets`` extends the same list):

1. inherited: validation top-1 with the supernet's weights, batch norm recalibrated on the first 1000 training
   images, on the validation split search uses: what ``search.evaluate.SupernetEvaluator`` computes in
   ``search.evolve``;
2. stand-alone: the subnet trained from scratch (fresh weights, same seed for every subnet) for ``--epochs``
   on the first ``--train-images`` training images as ``supernet.train`` trains (SGD with Nesterov momentum,
   short warm-up then cosine lr, label smoothing, flips, channels-last), then batch norm recalibrated and
   scored on the same images as (1).

Default size: 1 epoch on 12,000 images (94 steps of 128), one thread: 70-76 s per subnet (51-60 s of it
training, the rest the two evaluations) with other jobs sharing the VM, so 30 subnets take about 37 min. On
a quiet VM ``--threads 2`` takes 43-48 s per subnet (about 23 min), but two threads next to another busy
process run 5-6x *slower* than one (OpenMP threads waiting on each other), hence the default of 1. The
stand-alone figure of so short a training is itself a noisy proxy: the same subnet reached 0.800 with one
thread and 0.809 with two (reduction order alone), while even the largest and smallest subnets differ by
only 1.6% with inherited weights (validation 0.905 and 0.889): this caps the tau the bench can show; raise
``--epochs`` / ``--train-images`` for a tighter measurement.

Results go to ``OUT/ranking.json`` after every subnet (atomically); a rerun with the same settings skips the
finished subnets. At the end: Kendall tau, Spearman rho, mean accuracies, the verdict on the 0.7 target and
``OUT/ranking.png`` (inherited against stand-alone accuracy).
"""
from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

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
from supernet.io import read_json, write_json  # noqa: E402
from supernet.model import Subnet, init_weights  # noqa: E402
from supernet.space import Arch, SpaceConfig  # noqa: E402
from supernet.train import TrainConfig, epoch_batches, make_optimizer, set_lr  # noqa: E402

TARGET_TAU = 0.7
CL = torch.channels_last
EVAL_BATCH = 250  # 1.6x faster than evaluate.accuracy's default of 1000 on one thread here; same figures


def train_standalone(space: SpaceConfig, arch: Arch, train_set: ImageSet, config: TrainConfig) -> Subnet:
    """``arch`` trained from fresh weights (seeded by ``config.seed``) with plain cross-entropy, channels-last."""
    torch.manual_seed(config.seed)
    model = init_weights(Subnet(space, arch)).to(memory_format=CL).train()
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


def plot(path: Path, inherited: Sequence[float], standalone: Sequence[float], title: str) -> Path:
    """Scatter of stand-alone against inherited validation accuracy (%)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 5.0), dpi=120)
    ax.scatter(100 * np.asarray(inherited), 100 * np.asarray(standalone), s=16)
    ax.set_xlabel("inherited weights: validation top-1 (%)")
    ax.set_ylabel("trained stand-alone: validation top-1 (%)")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/ranking.py", description=__doc__.splitlines()[0])
    parser.add_argument("--subnets", type=int_range(), default=30, help="random subnets to rank")
    parser.add_argument("--epochs", type=int_range(), default=1, help="stand-alone training epochs")
    parser.add_argument("--train-images", type=int_range(), default=12000,
                        help="training images for stand-alone training")
    parser.add_argument("--seed", type=random_seed, default=0, help="subnet stream, weight init and batch order")
    parser.add_argument("--train-seed", type=random_seed, default=None,
                        help="weight init and batch order of the stand-alone training (default: --seed); with "
                             "--reference, measures the yardstick's own noise on the same subnets")
    parser.add_argument("--reference", default=None,
                        help="another run's OUT folder (same subnets, e.g. another --train-seed): also print tau "
                             "between the two runs' stand-alone accuracies, the ceiling this bench can show")
    parser.add_argument("--checkpoint", default=str(PRETRAINED))
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--out", default="runs/bench-ranking")
    parser.add_argument("--threads", type=int_range(0, os.cpu_count() or 1), default=1,
                        help="torch threads (0: torch's default); see the docstring for why 1")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    supernet, meta = load_supernet(args.checkpoint)
    space = supernet.space
    val_size = meta.get("train_config", {}).get("val_size", 5000)
    splits = load_splits(args.data, channels=space.config.in_channels, size=space.config.input_size,
                         val_size=val_size)
    if args.train_images > len(splits.train):
        raise UserError(f"--train-images {args.train_images} exceeds the {len(splits.train)} training images")
    train_set = splits.train.subset(torch.arange(args.train_images))
    steps = args.epochs * math.ceil(args.train_images / TrainConfig.batch_size)
    train_seed = args.seed if args.train_seed is None else args.train_seed
    config = TrainConfig(epochs=args.epochs, seed=train_seed, warmup_steps=math.ceil(0.05 * steps))
    calibration = splits.train.subset(torch.arange(min(DEFAULT_CALIBRATION, len(splits.train))))

    def score(model: torch.nn.Module) -> float:
        """Validation top-1 after batch-norm recalibration: what search.evaluate.SupernetEvaluator computes."""
        return accuracy(recalibrate_bn(model, calibration), splits.val, batch_size=EVAL_BATCH)

    rng = random.Random(args.seed)
    archs = [space.sample(rng) for _ in range(args.subnets)]
    settings = {"checkpoint": str(Path(args.checkpoint).resolve()), "data": str(args.data), "val_size": val_size,
                "seed": args.seed, "epochs": args.epochs, "train_images": args.train_images,
                "calibration_images": len(calibration)}
    if train_seed != args.seed:  # only then, so that files written before this option still resume
        settings["train_seed"] = train_seed
    path = Path(args.out) / "ranking.json"
    results: dict[str, Any] = {"settings": settings, "subnets": []}
    if path.exists():
        results = read_json(path, "ranking results")
        if results.get("settings") != settings:
            raise UserError(f"{path} was written with other settings ({results.get('settings')}); "
                            f"pass another --out or delete it")
    done = {r["arch"]: r for r in results["subnets"]}
    print(f"{space.name}: {args.subnets} subnets, stand-alone {args.epochs} epoch(s) on {args.train_images} images "
          f"({steps} steps), {torch.get_num_threads()} threads; {len(done)} already in {path}")

    bar = tqdm(archs, desc="subnets", unit="subnet", dynamic_ncols=True)
    for index, arch in enumerate(bar):
        key = space.to_string(arch)
        if key in done:
            continue
        start = time.perf_counter()
        inherited = score(supernet.extract(arch))
        trained = time.perf_counter()
        model = train_standalone(space.config, arch, train_set, config)
        train_seconds = time.perf_counter() - trained
        standalone = score(model)
        record = {"index": index, "arch": key, "inherited_top1": inherited, "standalone_top1": standalone,
                  "seconds": round(time.perf_counter() - start, 1), "train_seconds": round(train_seconds, 1)}
        done[key] = record
        results["subnets"].append(record)
        write_json(path, results)
        bar.set_postfix(inherited=f"{inherited:.4f}", standalone=f"{standalone:.4f}", s=record["seconds"])
    bar.close()

    rows = [done[space.to_string(arch)] for arch in archs]
    inherited = [r["inherited_top1"] for r in rows]
    standalone = [r["standalone_top1"] for r in rows]
    tau, rho = kendall_tau(inherited, standalone), spearman_rho(inherited, standalone)
    results["summary"] = {"subnets": len(rows), "kendall_tau": tau, "spearman_rho": rho,
                          "mean_inherited_top1": float(np.mean(inherited)),
                          "mean_standalone_top1": float(np.mean(standalone)),
                          "mean_seconds": float(np.mean([r["seconds"] for r in rows])),
                          "target_tau": TARGET_TAU, "target_met": bool(tau >= TARGET_TAU)}
    write_json(path, results)
    title = (f"{len(rows)} {space.name} subnets; stand-alone {args.epochs} epoch(s) on {args.train_images} images\n"
             f"Kendall tau {tau:.3f}, Spearman rho {rho:.3f}")
    png = plot(Path(args.out) / "ranking.png", inherited, standalone, title)
    summary = results["summary"]
    print(f"Kendall tau (inherited vs stand-alone) {tau:.3f}   Spearman rho {rho:.3f}   over {len(rows)} subnets")
    print(f"mean validation top-1: inherited {summary['mean_inherited_top1']:.4f}, "
          f"stand-alone {summary['mean_standalone_top1']:.4f}   (mean {summary['mean_seconds']:.1f} s per subnet)")
    print(f"target tau >= {TARGET_TAU}: {'met' if summary['target_met'] else 'NOT met'}")
    if args.reference:
        other = {r["arch"]: r for r in read_json(Path(args.reference) / "ranking.json", "reference ranking")["subnets"]}
        shared = [space.to_string(arch) for arch in archs if space.to_string(arch) in other]
        if len(shared) < 2:
            raise UserError(f"{args.reference} shares fewer than 2 subnets with this run: use the same --seed")
        ours, theirs = [done[k]["standalone_top1"] for k in shared], [other[k]["standalone_top1"] for k in shared]
        ceiling = kendall_tau(ours, theirs)
        results["summary"]["standalone_vs_reference_tau"] = ceiling
        write_json(path, results)
        print(f"Kendall tau between the two runs' stand-alone accuracies (the yardstick's noise ceiling) "
              f"{ceiling:.3f} over {len(shared)} subnets")
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    run_cli(main)
