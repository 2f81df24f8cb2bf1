"""Shared fixtures: a tiny synthetic Fashion-MNIST-format dataset, a tiny trained supernet, a fast table, slices
of the real CIFAR-10 and checks shared by the CLI tests.

Everything here is small enough that the whole suite runs in minutes on two cores; real sizes live in bench/.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
CIFAR = ROOT.parent / "shared" / "data" / "cifar10"  # the shared data folder beside the repository
NO_CIFAR = f"CIFAR-10 is not at {CIFAR} (the shared data folder beside the repository)"


def write_idx(path: Path, array: torch.Tensor, magic: int) -> None:
    header = struct.pack(">I", magic) + struct.pack(f">{array.dim()}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.to(torch.uint8).numpy().tobytes())


def make_fake_fmnist(root: Path, train: int = 320, test: int = 80, seed: int = 0) -> Path:
    """IDX files like Debian's Fashion-MNIST, with a learnable signal: class c lights up row band c."""
    generator = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("t10k", test)):
        labels = torch.randint(0, 10, (count,), generator=generator)
        images = torch.randint(0, 60, (count, 28, 28), generator=generator)
        for i, label in enumerate(labels.tolist()):
            images[i, 2 + 2 * label:4 + 2 * label, 4:24] = 250
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images, 0x803)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels, 0x801)
    return root


def example_input(config: Any, batch: int = 2) -> torch.Tensor:
    """A seeded input batch for the networks of space ``config``: images (at most 64 pixels a side: the networks
    are fully convolutional, and ImageNet-scale spaces run small here), audio clips in [-1, 1], or sentences."""
    from supernet import family

    generator = torch.Generator().manual_seed(1)
    if family.audio_frontend(config) is not None or family.token_input(config) is not None:
        return family.example_input(config, batch, seed=1)
    channels, size, _ = family.input_shape(config)
    size = min(size, 64)
    return torch.rand(batch, channels, size, size, generator=generator)


SST2 = ROOT.parent / "shared" / "data" / "sst2"
NO_SST2 = f"SST-2 (sentiment) is not at {SST2} (the shared data folder beside the repository)"


def make_sst2_slice(root: Path, train: int, test: int) -> Path:
    """A text dataset folder holding the header and first ``train`` sentences of SST-2's train.tsv and the first
    ``test`` of its dev.tsv (as dev.tsv: the test split); a slice in a temporary folder, not in the repository."""
    root.mkdir(parents=True)
    for name, count in (("train.tsv", train), ("dev.tsv", test)):
        lines = (SST2 / name).read_text(encoding="utf-8").splitlines()
        (root / name).write_text("\n".join(lines[:count + 1]) + "\n", encoding="utf-8")
    return root


FSDD = ROOT.parent / "shared" / "data" / "fsdd"
NO_FSDD = f"FSDD (spoken digits) is not at {FSDD} (the shared data folder beside the repository)"


def make_fsdd_slice(root: Path, per_digit: int, speakers: int = 2) -> Path:
    """A folder in FSDD's layout holding, as symlinks, recordings 0-``per_digit - 1`` (the official test set
    is 0-4) and as many from 5 on of every digit by the first ``speakers`` speakers."""
    files = sorted((FSDD / "recordings").glob("*.wav"))
    chosen = sorted({f.stem.split("_")[1] for f in files})[:speakers]
    (root / "recordings").mkdir(parents=True)
    for file in files:
        _, speaker, index = file.stem.split("_")
        if speaker in chosen and (int(index) < min(per_digit, 5) or 5 <= int(index) < 5 + per_digit):
            (root / "recordings" / file.name).symlink_to(file)
    return root


def make_cifar_slice(root: Path, per_class: int) -> Path:
    """An ImageFolder at ``root`` of the first ``per_class`` real CIFAR-10 images of each class and split, as
    symlinks: the data is never copied (its image cache goes wherever ``$ONESHOT_CACHE`` says)."""
    for split in ("train", "test"):
        for folder in sorted((CIFAR / split).iterdir()):
            (root / split / folder.name).mkdir(parents=True)
            for file in sorted(folder.iterdir())[:per_class]:
                (root / split / folder.name / file.name).symlink_to(file)
    return root


def run_module(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
               check: bool = True, script: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ...`` (or ``python SCRIPT ...``) as a user would, with this checkout importable.

    One OpenMP thread unless the caller says otherwise: the tiny test models gain nothing from more, and on a
    busy 2-core machine two threads waiting on each other make a subprocess several times slower.
    """
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    command = [str(script)] if script else ["-m"]
    result = subprocess.run([sys.executable, *command, *args], cwd=cwd or ROOT, env=full_env, text=True,
                            capture_output=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"python {' '.join(command + list(args))} failed ({result.returncode}):\n"
                             f"{result.stderr[-3000:]}")
    return result


def run_script(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python PATH ARGS`` (a ``bench/`` script) as a user would; fails the test on a non-zero exit."""
    return run_module(*args, script=path)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Latency tables and decoded-image caches that tests make go to a folder of the session's own, never to
    the user's ``~/.cache/oneshot-nas`` (tests make a new ImageFolder each run: its cache would pile up)."""
    folder = tmp_path_factory.mktemp("oneshot-cache")
    previous = os.environ.get("ONESHOT_CACHE")
    os.environ["ONESHOT_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("ONESHOT_CACHE", None)
    else:
        os.environ["ONESHOT_CACHE"] = previous


@pytest.fixture(scope="session")
def fake_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_fmnist(tmp_path_factory.mktemp("fmnist"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, fake_data: Path) -> Path:
    """A supernet trained for a few steps on the fake data (through the library, for speed)."""
    from supernet.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny-run")
    torch.set_num_threads(1)
    train(TrainConfig(data=str(fake_data), out=str(out), epochs=1, batch_size=64, val_size=64, calib_size=64,
                      warmup_steps=1, checkpoint_every=2), command=["pytest"])
    return out


@pytest.fixture(scope="session")
def fast_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete but quickly measured latency table of mbv3 on this CPU (kept even if the machine is busy:
    tests use it for its form, not its figures)."""
    from search.latency import build_table
    from search.timing import TimingSettings
    from supernet.space import get_space

    path = tmp_path_factory.mktemp("table") / "cpu.json"
    build_table(get_space("mbv3").config, torch.device("cpu"), settings=TimingSettings(warmup=0, repeats=1),
                calibration_subnets=3, out=path, progress=False, keep_busy=True)
    return path


CLEAN_RUN = {  # run an exported model in a process where this project (and, for ONNX, torch) cannot be imported
    ".pt": """
import sys
sys.modules["supernet"] = sys.modules["search"] = None
import numpy, torch
model = torch.jit.load(sys.argv[1])
numpy.save(sys.argv[3], model(torch.from_numpy(numpy.load(sys.argv[2]))).detach().numpy())
""",
    ".onnx": """
import sys
sys.modules["supernet"] = sys.modules["search"] = sys.modules["torch"] = None
import numpy, onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
numpy.save(sys.argv[3], session.run(None, {"images": numpy.load(sys.argv[2])})[0])
""",
}


def logits_without_the_project(model: Path, x: torch.Tensor, folder: Path) -> torch.Tensor:
    """Logits of an exported ``model`` (``.pt`` or ``.onnx``) on ``x``, computed by a fresh process in ``folder``."""
    numpy.save(folder / "x.npy", x.numpy())
    result = subprocess.run([sys.executable, "-c", CLEAN_RUN[model.suffix], str(model.resolve()), "x.npy", "y.npy"],
                            cwd=folder, env={"PATH": "/usr/bin:/bin"}, text=True, capture_output=True, timeout=300)
    assert result.returncode == 0, f"running {model} without the project failed:\n{result.stderr[-3000:]}"
    return torch.from_numpy(numpy.load(folder / "y.npy"))


def train_table_and_search(root: Path, space: str, data: Path, train_flags: list[str],
                           evaluations: int) -> dict[str, Any]:
    """The start of every per-family CLI pipeline test, through ``python -m``: train a supernet of ``space`` on
    ``data`` for one epoch (with ``train_flags``), build its latency table, and search by evolution under a
    budget halfway between the smallest and largest subnets' predicted latency. Returns the paths, the
    budget, the flags later commands share and what each command printed."""
    from search.latency import load_table
    from supernet.checkpoint import load_supernet

    trained = run_module("supernet.train", "--space", space, "--data", str(data), "--epochs", "1", "--val-size", "20",
                         "--calib-size", "20", "--warmup-steps", "1", *train_flags, "--out", str(root / "supernet"))
    table = root / "table.json"
    built = run_module("search.latency", "build", "--space", space, "--warmup", "0", "--repeats", "1",
                       "--no-reference-probe", "--calibration-subnets", "2", "--keep-busy", "--out", str(table))
    checkpoint = root / "supernet" / "final.pt"
    network = load_supernet(checkpoint)[0].space
    latency = load_table(table)
    budget = round((latency.predict(network.smallest()) + latency.predict(network.largest())) / 2, 3)
    common = ["--checkpoint", str(checkpoint), "--table", str(table), "--calibration-size", "20"]  # --data: its own
    searched = run_module("search.evolve", "--latency-ms", f"{budget:.3f}", "--population", "4", "--evaluations",
                          str(evaluations), "--children", "2", "--tournament", "2", *common, "--out", str(root / "search"))
    return {"root": root, "data": data, "table": table, "checkpoint": checkpoint, "space": network, "budget": budget,
            "common": common, "results": root / "search" / "results.json",
            "printed": {"train": trained.stdout, "build": built.stdout, "evolve": searched.stdout}}


def check_search_results(run: dict[str, Any]) -> dict[str, Any]:
    """The evolution of :func:`train_table_and_search` kept to its budget; then search by BO for two scenarios
    between the smallest and the largest subnets' predicted latency, each winner within its budget. Returns the
    evolution's results."""
    from search.latency import load_table

    results = json.loads(run["results"].read_text())
    (name, winner), = results["winners"].items()
    assert name == f"cpu:{run['budget']:g}"
    assert all(r["metrics"]["latency_ms@cpu"] <= run["budget"] for r in results["history"])
    space, table = run["space"], load_table(run["table"])
    low, high = table.predict(space.smallest()), table.predict(space.largest())
    scenarios = [f"cpu:{low + (high - low) * f:.3f}" for f in (0.3, 0.7)]
    run_module("search.bo", "--scenarios", ",".join(scenarios), "--evaluations", "4", "--initial", "2", "--pool", "20",
               "--verify", "1", *run["common"], "--out", str(run["root"] / "bo"))
    bo = json.loads((run["root"] / "bo" / "results.json").read_text())
    assert list(bo["winners"]) == [s["name"] for s in bo["scenarios"]] and len(bo["winners"]) == 2
    for scenario in bo["scenarios"]:
        assert bo["winners"][scenario["name"]]["metrics"]["latency_ms@cpu"] <= scenario["latency_ms"]
    return results


def retrain_winner(run: dict[str, Any], batch_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fine-tune the evolution's winner of :func:`train_table_and_search` for one epoch through
    ``search.retrain``; returns the winner's record and the retraining's results."""
    winner = json.loads(run["results"].read_text())["winners"][f"cpu:{run['budget']:g}"]
    retrained = run["results"].parent / "retrain-finetune"
    run_module("search.retrain", "--results", str(run["results"]), "--epochs", "1", "--batch-size", str(batch_size),
               *run["common"], "--out", str(retrained))
    return winner, json.loads((retrained / "retrain.json").read_text())


def check_markdown(report: str, folder: Path) -> None:
    """Every table row of a Markdown ``report`` has as many cells as its header (an unescaped ``|``, as in an
    architecture string, would add one) and every picture and link resolves from ``folder``."""
    columns = None
    for line in report.splitlines():
        cells = len(re.findall(r"(?<!\\)\|", line))
        if not line.startswith("|"):
            columns = None
        elif columns is None:
            columns = cells
        else:
            assert cells == columns, line
    for target in re.findall(r"\]\(([^)]+)\)", report):
        assert (folder / target).exists(), target
