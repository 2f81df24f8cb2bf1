"""Pipeline bench: every figure is a ratio against a baseline measured in the same run.

    python bench/pipeline.py            # prints the table quoted in bench/README.md

1. forward of the supernet at an active subnet vs the extracted static subnet (eval, channels-last);
2. one sandwich training step (largest + smallest + 2 random) vs one plain step of the largest subnet;
3. the time to evaluate one subnet with inherited weights (BN recalibration + 5k validation images);
4. peak memory (VmHWM of a fresh child process) of sandwich training vs plain training of the largest subnet.
"""
from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.timing import Timer, TimingSettings  # noqa: E402
from supernet.checkpoint import PRETRAINED, load_supernet  # noqa: E402
from supernet.model import Supernet  # noqa: E402
from supernet.space import get_space  # noqa: E402
from supernet.train import TrainConfig, make_optimizer, sandwich_step  # noqa: E402

CPU = torch.device("cpu")
CL = torch.channels_last


def supernet_or_fresh() -> Supernet:
    if PRETRAINED.exists():
        return load_supernet(PRETRAINED)[0]
    return Supernet(get_space("mbv3").config).eval()


def forward_ratio(supernet: Supernet, arch: dict, batch: int, repeats: int) -> tuple[float, float]:
    x = torch.rand(batch, 1, 28, 28).contiguous(memory_format=CL)
    supernet = supernet.to(memory_format=CL).eval()
    supernet.set_active(arch)
    static = supernet.extract(arch).to(memory_format=CL).eval()
    timer = Timer(CPU, TimingSettings(warmup=5, repeats=repeats, threads=0, reference_probe=False))
    dynamic_ms = timer(lambda: supernet(x))["median_ms"]
    static_ms = timer(lambda: static(x))["median_ms"]
    return dynamic_ms, static_ms


def train_steps(mode: str, steps: int, batch: int) -> list[float]:
    """Times of ``steps`` training steps: sandwich on the supernet, or plain on the largest subnet."""
    torch.manual_seed(0)
    supernet = Supernet(get_space("mbv3").config).to(memory_format=CL).train()
    config = TrainConfig()
    model = supernet if mode == "sandwich" else supernet.extract(supernet.space.largest()).to(memory_format=CL).train()
    optimizer = make_optimizer(supernet, config) if mode == "sandwich" else torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    x = torch.rand(batch, 1, 28, 28).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (batch,))
    times = []
    for step in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        if mode == "sandwich":
            sandwich_step(supernet, x, y, config, random.Random(step))
        else:
            F.cross_entropy(model(x), y).backward()
        optimizer.step()
        times.append((time.perf_counter() - start) * 1000)
    return times


def peak_rss_mb(mode: str, steps: int, batch: int) -> float:
    """Max RSS of a fresh process that runs ``steps`` training steps."""
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--steps", str(steps), "--batch", str(batch)],
                         check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=6)
    parser.add_argument("--child", choices=["sandwich", "static"], help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        train_steps(args.child, args.steps, args.batch)
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
        hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
        print(int(hwm.split()[1]) / 1024)
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    supernet = supernet_or_fresh()
    space = supernet.space
    arch = space.sample(random.Random(0))
    print(f"{'measure':58s} {'value':>12s} {'baseline':>12s} {'ratio':>7s}")
    for name, a in (("random", arch), ("largest", space.largest())):
        for batch in (1, 64):
            dyn, static = forward_ratio(supernet, a, batch, args.repeats)
            print(f"{f'forward {name} subnet, batch {batch}: supernet vs static (ms)':58s} {dyn:12.2f} "
                  f"{static:12.2f} {dyn / static:7.2f}")
    sandwich = sorted(train_steps("sandwich", args.train_steps, args.train_batch)[1:])
    static = sorted(train_steps("static", args.train_steps, args.train_batch)[1:])
    s_ms, p_ms = sandwich[len(sandwich) // 2], static[len(static) // 2]
    print(f"{f'train step, batch {args.train_batch}: sandwich (4 subnets) vs static largest (ms)':58s} "
          f"{s_ms:12.1f} {p_ms:12.1f} {s_ms / p_ms:7.2f}")

    from supernet.data import DEFAULT_DATA, load_splits
    from search.evaluate import SupernetEvaluator
    if Path(DEFAULT_DATA).exists():
        evaluator = SupernetEvaluator(supernet.to(memory_format=torch.contiguous_format), load_splits())
        times = []
        for seed in range(3):
            start = time.perf_counter()
            evaluator(space.sample(random.Random(100 + seed)))
            times.append(time.perf_counter() - start)
        print(f"{'evaluate one random subnet (1k BN calib + 5k val images) (s)':58s} {sorted(times)[1]:12.2f}")
    peak_s = peak_rss_mb("sandwich", 3, args.train_batch)
    peak_p = peak_rss_mb("static", 3, args.train_batch)
    print(f"{f'peak RSS of training, batch {args.train_batch}: sandwich vs static (MB)':58s} {peak_s:12.1f} "
          f"{peak_p:12.1f} {peak_s / peak_p:7.2f}")


if __name__ == "__main__":
    main()
