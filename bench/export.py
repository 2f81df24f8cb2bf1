"""Exported subnet: run in a fresh process without this project, and TorchScript / ONNX vs eager latency.

    python bench/export.py                       # the shipped supernet's largest subnet
    python bench/export.py --arch smallest       # or any canonical architecture string
    python bench/export.py --pairs 200 --batch-sizes 1,4

Exports the subnet (inherited weights and the supernet's batch-norm statistics: speed does not depend on
them) to TorchScript (frozen) and ONNX under ``--out``, then

(a) loads and runs each file in a fresh process that cannot import this project (nor torch, for ONNX), on
    one thread, batch 4: import + load time, first call, median call after ten calls, and the largest
    difference from the eager subnet's logits (must be <= 1e-4);
(b) here, on one thread, at each batch size: the eager subnet (channels-last model and input, as the
    latency tables time it), the loaded TorchScript and onnxruntime (a plain NCHW input, as a user passes
    it) called in turn after warm-up, ``--pairs`` rounds. This VM's speed drifts in phases of seconds, so
    only back-to-back ratios are trustworthy (see ``search/timing.py``): reported is the median of the
    per-round ratios t_export / t_eager (< 1: the export is faster), with the medians in ms beside it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.export import export, export_onnx, require_onnx  # noqa: E402
from search.timing import threads  # noqa: E402
from supernet.checkpoint import PRETRAINED, load_supernet  # noqa: E402
from supernet.errors import UserError  # noqa: E402

CL = torch.channels_last
CHILD = """
import json, statistics, sys, time
sys.modules["supernet"] = sys.modules["search"] = None
path, repeats = sys.argv[1], int(sys.argv[4])
onnx = path.endswith(".onnx")
if onnx:
    sys.modules["torch"] = None
import numpy
x = numpy.load(sys.argv[2])
start = time.perf_counter()
if onnx:
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    run = lambda: session.run(None, {"images": x})[0]
else:
    import torch
    torch.set_num_threads(1)
    model = torch.jit.load(path)
    tx = torch.from_numpy(x)
    def run():
        with torch.no_grad():
            return model(tx).numpy()
load_s = time.perf_counter() - start
times = []
for _ in range(repeats):
    start = time.perf_counter()
    y = run()
    times.append((time.perf_counter() - start) * 1000)
numpy.save(sys.argv[3], y)
print(json.dumps({"load_s": load_s, "first_ms": times[0], "median_ms": statistics.median(times[10:])}))
"""


def run_clean(path: Path, x: torch.Tensor, folder: Path, repeats: int) -> tuple[dict, torch.Tensor]:
    """Load and run ``path`` in a fresh process that cannot import this project; its timings and logits."""
    numpy.save(folder / "x.npy", x.numpy())
    result = subprocess.run([sys.executable, "-c", CHILD, str(path.resolve()), "x.npy", "y.npy", str(repeats)],
                            cwd=folder, env={"PATH": "/usr/bin:/bin"}, text=True, capture_output=True, timeout=600)
    if result.returncode:
        raise SystemExit(f"running {path} in a fresh process failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1]), torch.from_numpy(numpy.load(folder / "y.npy"))


def paired(calls: dict[str, object], warmup: int, rounds: int) -> dict[str, list[float]]:
    """Milliseconds of each call, the calls made in turn, round after round, after ``warmup`` rounds."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(PRETRAINED), help="supernet checkpoint (default: shipped)")
    parser.add_argument("--arch", default="largest", help="largest, smallest or a canonical architecture string")
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument("--pairs", type=int, default=200, help="timed rounds per batch size")
    parser.add_argument("--warmup", type=int, default=20, help="untimed rounds first")
    parser.add_argument("--out", default="runs/bench-export")
    args = parser.parse_args()
    supernet, _ = load_supernet(args.checkpoint)
    space = supernet.space
    arch = {"largest": space.largest, "smallest": space.smallest}.get(args.arch, lambda: space.parse(args.arch))()
    config = space.config
    shape = (config.in_channels, config.input_size, config.input_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metadata = {"arch": space.to_string(arch), "arch_dict": arch, "space": config.name, "checkpoint": args.checkpoint}
    example = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    paths = {}
    for name, exporter, suffix in (("torchscript", export, ".pt"), ("onnx", export_onnx, ".onnx")):
        if name == "onnx":
            try:
                require_onnx()
            except UserError as err:
                print(f"onnx: skipped ({err})")
                continue
        start = time.perf_counter()
        paths[name] = exporter(supernet.extract(arch).eval(), out / f"subnet{suffix}", metadata, example)
        print(f"exported {name:<11} {paths[name]} in {time.perf_counter() - start:.1f} s")
    print(f"subnet {metadata['arch']} ({config.name}, {args.checkpoint})\n")

    eager = supernet.extract(arch).eval()
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = eager(x)
    print("(a) fresh process without this project, one thread, batch 4")
    print(f"{'format':<12} {'import+load s':>13} {'first call ms':>14} {'median call ms':>15} {'max |diff|':>11}")
    for name, path in paths.items():
        timing, logits = run_clean(path, x, out, repeats=max(args.pairs, 20))
        diff = (logits - expected).abs().max().item()
        print(f"{name:<12} {timing['load_s']:13.2f} {timing['first_ms']:14.2f} {timing['median_ms']:15.2f} "
              f"{diff:11.2e}{'' if diff <= 1e-4 else '  MISMATCH'}")

    scripted = torch.jit.load(str(paths["torchscript"]))
    session = None
    if "onnx" in paths:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(paths["onnx"]), options, providers=["CPUExecutionProvider"])
    eager = eager.to(memory_format=CL)
    print(f"\n(b) this process, one thread, {args.pairs} rounds after {args.warmup} warm-up rounds; ratio = median of "
          "per-round t / t_eager")
    print(f"{'batch':>5} {'eager ms':>9} {'TorchScript ms':>15} {'ratio':>6} {'onnxruntime ms':>15} {'ratio':>6}")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        x = torch.rand(batch, *shape)
        x_cl, x_np = x.contiguous(memory_format=CL), x.numpy()
        calls = {"eager": lambda: eager(x_cl), "torchscript": lambda: scripted(x)}
        if session is not None:
            calls["onnx"] = lambda: session.run(None, {"images": x_np})
        with threads(1), torch.no_grad():
            times = paired(calls, args.warmup, args.pairs)
        row = f"{batch:>5} {statistics.median(times['eager']):9.2f}"
        for name, width in (("torchscript", 15), ("onnx", 15)):
            if name in times:
                ratio = statistics.median(t / e for t, e in zip(times[name], times["eager"]))
                row += f" {statistics.median(times[name]):{width}.2f} {ratio:6.2f}"
        print(row)


if __name__ == "__main__":
    main()
