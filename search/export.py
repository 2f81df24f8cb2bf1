"""Export a subnet for inference without this project: ``python -m search.export``.

Two formats, each checked against the eager subnet before it is written (atomically):

- TorchScript (``.pt``): scripted and frozen (weights become constants, batch norm folded into the
  convolutions), ready for CPU inference. Load it anywhere with ``torch.jit.load(path)``.
- ONNX (``.onnx``, ``--format onnx`` or ``both``): through ``torch.onnx.export(dynamo=True)``, with a dynamic
  batch dimension; checked with onnxruntime where it is installed. Needs the optional extra
  ``pip install 'oneshot-nas[onnx]'``.

Input ``images``: float32 in [0, 1] of shape ``[N, C, H, W]``; output ``logits`` of shape ``[N, classes]``.
Every file carries its metadata (:func:`read_metadata`): the architecture, where it came from, its accuracy
and its latency with the device it was measured on (TorchScript: a ``metadata.json`` extra file; ONNX: the
model's ``metadata_props``, the same JSON under ``metadata.json`` plus flat string keys such as ``arch``).

Metadata keys: ``arch`` (canonical string), ``arch_dict``, ``space``, ``checkpoint`` (supernet or subnet
checkpoint), ``results`` and ``scenario`` (with ``--results``), ``val_top1``, ``test_top1`` (when the source
knows it), ``latency`` (``latency_ms``, ``spread_ms``, ``device``, ``fingerprint`` of the latency table,
``batch_size``, ``runtime`` it was timed in, ``source``), ``torch``, ``input`` and ``output`` (name, shape).

The subnet comes from a search's ``--results`` (its winner; extracted from the supernet with batch norm
recalibrated as the search scored it), an ``--arch`` of a supernet checkpoint (the same), or a ``--subnet``
checkpoint (retrained: its weights are final, nothing is recalibrated). Its latency is the one that comes
with the results or the subnet checkpoint; otherwise, or with ``--device``/``--table``, it is measured now
with the device's latency table, timed as the table's entries were (runtime, batch size, reference probe).
An existing output file is refused unless ``--overwrite``, and so is one another process is writing (see
:mod:`supernet.outdir`).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from search.evaluate import DEFAULT_CALIBRATION
from search.latency import parse_device, table_for
from search.run import read_results
from supernet.checkpoint import PRETRAINED, load_subnet, load_supernet, trained_classes, trained_data
from supernet.data import load_splits
from supernet.errors import ArgumentParser, UserError, gist, int_range, run_cli
from supernet.evaluate import accuracy, recalibrate_bn
from supernet.io import atomic_serialize, atomic_write, refuse_folder
from supernet.outdir import claim_file
from supernet.family import (Space, config_from_dict, data_format, example_input, input_description, space_of,
                             token_input)
from supernet.text import dataset_vocabulary

INPUT, OUTPUT = "images", "logits"
ONNX_EXTRA = "pip install 'oneshot-nas[onnx]'"
FORMATS = ("torchscript", "onnx", "both")
TOLERANCE = 1e-4  # freezing folds batch norm into the convolutions: the sums are no longer bit-identical


# ---- exporters ------------------------------------------------------------------------------------
def export(subnet: nn.Module, path: str | Path, metadata: Mapping[str, Any], example: torch.Tensor) -> Path:
    """Script and freeze ``subnet`` (eval mode), check it against eager on ``example``, write it atomically.

    Any scriptable module will do (an ensemble of subnets, say); ``metadata`` must be JSON-serialisable.
    """
    subnet = subnet.cpu().to(memory_format=torch.contiguous_format).eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.(script|freeze|save). is deprecated",
                                category=DeprecationWarning)
        frozen = torch.jit.freeze(torch.jit.script(subnet))
        with torch.no_grad():
            _check("the frozen TorchScript subnet", frozen(example), subnet(example))
        files = {"metadata.json": json.dumps(metadata, indent=2)}
        return atomic_serialize(path, lambda buffer: torch.jit.save(frozen, buffer, _extra_files=files))


def export_onnx(subnet: nn.Module, path: str | Path, metadata: Mapping[str, Any], example: torch.Tensor) -> Path:
    """Export ``subnet`` to ONNX with a dynamic batch dimension and ``metadata``, check it, write it atomically.

    The check runs the file with onnxruntime, on ``example`` and on its first image alone (the batch
    dimension is dynamic), when onnxruntime is installed; without it the file is written unchecked.
    """
    require_onnx()
    subnet = subnet.cpu().to(memory_format=torch.contiguous_format).eval()
    if example.shape[0] < 2:  # torch.export specialises a batch dimension of 1
        example = torch.cat([example, example])
    with _quiet_onnx():
        program = torch.onnx.export(subnet, (example,), dynamo=True, verbose=False, input_names=[INPUT],
                                    output_names=[OUTPUT], dynamic_shapes=({0: torch.export.Dim("batch")},))
    program.model.metadata_props.update(onnx_metadata_props(metadata))

    def write(tmp: Path) -> None:
        program.save(tmp, external_data=False)
        if _optional("onnxruntime") is not None:
            session = _onnx_session(tmp)
            with torch.no_grad():
                for x in (example, example[:1]):
                    got = torch.from_numpy(session.run(None, {INPUT: x.numpy()})[0])
                    _check("the ONNX subnet (onnxruntime)", got, subnet(x))

    return atomic_write(path, write)


def require_onnx() -> None:
    """Refuse, in one line, to export ONNX where the exporter's packages are missing."""
    missing = [name for name in ("onnx", "onnxscript") if _optional(name) is None]
    if missing:
        raise UserError(f"ONNX export needs {' and '.join(missing)}, not installed here: {ONNX_EXTRA}")


def onnx_metadata_props(metadata: Mapping[str, Any]) -> dict[str, str]:
    """ONNX ``metadata_props``: the whole JSON as ``metadata.json``, and its scalars as flat string keys."""
    props = {"metadata.json": json.dumps(metadata, indent=2)}
    for key, value in metadata.items():
        if isinstance(value, (str, int, float)):
            props[key] = str(value)
    for key, value in (metadata.get("latency") or {}).items():
        if isinstance(value, (str, int, float)):
            props[key if key.startswith("latency") else f"latency_{key}"] = str(value)
    return props


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata that :func:`export` or :func:`export_onnx` stored in ``path`` (TorchScript or ONNX)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"exported model {path} does not exist")
    if zipfile.is_zipfile(path):  # TorchScript archives are zip files; ONNX models are protobuf
        text = _torchscript_metadata(path)
    elif (onnx := _optional("onnx")) is not None:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as err:  # onnx raises DecodeError and others, depending on its version
            raise UserError(f"{path} is neither a TorchScript nor an ONNX file ({type(err).__name__})") from None
        text = {p.key: p.value for p in model.metadata_props}.get("metadata.json", "")
    elif _optional("onnxruntime") is not None:
        text = _onnx_session(path).get_modelmeta().custom_metadata_map.get("metadata.json", "")
    else:
        raise UserError(f"{path} is not TorchScript; reading ONNX metadata needs onnx or onnxruntime: {ONNX_EXTRA}")
    if not text:
        raise UserError(f"{path} carries no metadata.json: was it exported by `python -m search.export`?")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path} has a corrupt metadata.json ({err})") from None


def _torchscript_metadata(path: Path) -> str:
    """The ``metadata.json`` extra file of a TorchScript archive, read as a zip member: the model itself is not
    loaded, so reading metadata runs nothing from the file."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any("/code/" in name for name in names):
                raise UserError(f"{path} is not a TorchScript file (no code/ in the archive; a torch.save checkpoint?)")
            found = [n for n in names if n.endswith("/extra/metadata.json") and n.count("/") == 2]
            return archive.read(found[0]).decode() if found else ""
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not a readable TorchScript file ({err})") from None


def _optional(name: str) -> Any:
    """The module ``name``, or None where it is not installed (the ONNX packages are an optional extra)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _check(what: str, got: torch.Tensor, expected: torch.Tensor) -> None:
    if not torch.allclose(got, expected, atol=TOLERANCE, rtol=TOLERANCE):
        raise RuntimeError(f"{what} disagrees with the eager one (max difference "
                           f"{(got - expected).abs().max().item():.3g})")


def _onnx_session(path: str | Path) -> Any:
    try:
        return _optional("onnxruntime").InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types, not importable without it
        raise UserError(f"onnxruntime cannot load {path}: {gist(str(err))}") from None


@contextlib.contextmanager
def _quiet_onnx() -> Iterator[None]:
    """Silence the exporter's chatter (missing-torchvision log warnings, FutureWarnings from its internals)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


# ---- metadata -------------------------------------------------------------------------------------
def latency_entry(median_ms: float, spread_ms: float, device: str, fingerprint: Mapping[str, Any], source: str,
                  batch_size: int | None = None, runtime: str | None = None) -> dict[str, Any]:
    """The ``latency`` part of the metadata: a measurement, the setting it was taken in and where it came from.

    ``batch_size`` and ``runtime`` default to the fingerprint's (a latency table's fingerprint holds both).
    """
    return {"latency_ms": float(median_ms), "spread_ms": float(spread_ms), "device": str(device),
            "fingerprint": dict(fingerprint), "batch_size": batch_size or fingerprint.get("batch_size"),
            "runtime": runtime or fingerprint.get("runtime"), "source": source}


def winner_entry(results: Any, scenario: str | None, path: str) -> tuple[str, dict[str, Any]]:
    """The name and winner entry of ``scenario`` (default: the first) in results from :func:`read_results`."""
    winners = results["winners"]
    try:
        name = scenario or results["scenarios"][0]["name"]
    except (KeyError, TypeError, IndexError):
        raise UserError(f"{path} names no scenario; rerun the search to rewrite it") from None
    if name not in winners:
        raise UserError(f"{path} has no scenario {name!r}; it has {', '.join(winners)}")
    if not isinstance(winners[name], dict) or "arch" not in winners[name]:
        raise UserError(f"{path}: the winner of {name!r} has no architecture; the file is incomplete")
    return name, winners[name]


def winner_of(results: Any, scenario: str | None, path: str, space: Space) -> dict[str, int]:
    """The winning network of ``scenario`` (default: the first) in a search's results: the one its key names
    and the search scored (for NAS-Bench-201, the representative of the searched cell's class)."""
    name, winner = winner_entry(results, scenario, path)
    try:
        return space.parse(space.to_string(winner["arch"]))  # to_string validates
    except UserError as err:
        raise UserError(f"{path}: the winner of {name!r} is not an architecture of this supernet ({err})") from None


def _results_latency(results: Mapping[str, Any], winner: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    if "measured_latency_ms" not in winner or "device" not in winner:
        return None
    fingerprint = results.get("tables", {}).get(winner["device"], {}).get("fingerprint", {})
    return latency_entry(winner["measured_latency_ms"], winner.get("measured_spread_ms", 0.0), winner["device"],
                         fingerprint, f"search results {path}")


def _subnet_latency(payload: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    latency = payload.get("latency")
    if not isinstance(latency, dict) or not isinstance(latency.get("median_ms"), (int, float)):
        return None
    fingerprint = latency.get("fingerprint") if isinstance(latency.get("fingerprint"), dict) else {}
    return latency_entry(latency["median_ms"], latency.get("spread_ms", 0.0), latency.get("device", "cpu"),
                         fingerprint, f"subnet checkpoint {path}", latency.get("batch_size"), latency.get("runtime"))


def _subnet_accuracy(payload: Mapping[str, Any]) -> dict[str, float]:
    """``val_top1`` and ``test_top1`` as far as a subnet checkpoint's ``metrics`` know them."""
    metrics = payload.get("metrics") if isinstance(payload.get("metrics"), dict) else {}
    test = metrics.get("test")
    found = {"val_top1": metrics.get("val_top1"),
             "test_top1": metrics.get("test_top1", test.get("top1") if isinstance(test, dict) else None)}
    return {key: float(value) for key, value in found.items() if isinstance(value, (int, float))}


# ---- command line ---------------------------------------------------------------------------------
DESCRIPTIONS = {"torchscript": "TorchScript, frozen; load with torch.jit.load", "onnx": "ONNX; run with onnxruntime"}


def output_paths(out: str | None, fmt: str) -> dict[str, Path]:
    """Where each format goes: ``--out`` as given for one format, its stem + ``.pt``/``.onnx`` for both.

    ``--out`` names a file; one that names a folder (``.``, ``/``, ``dir/``, an existing folder) is refused
    rather than guessed at.
    """
    suffixes = {"torchscript": ".pt", "onnx": ".onnx"}
    given = refuse_folder(out, "--out", "subnet" + ("" if fmt == "both" else suffixes[fmt])) if out else None
    if fmt != "both":
        return {fmt: given or Path("runs/export/subnet").with_suffix(suffixes[fmt])}
    stem = given or Path("runs/export/subnet")
    return {name: stem.with_suffix(suffix) for name, suffix in suffixes.items()}


@dataclass
class Chosen:
    """The subnet to export and what its source already knows about it."""

    subnet: nn.Module
    space: Space
    arch: dict[str, int]
    checkpoint: str
    known: dict[str, float]  # accuracies the source knows
    latency: dict[str, Any] | None  # the latency the source measured
    val_size: int
    calibration_size: int = 0  # 0: no batch-norm recalibration
    source: dict[str, Any] = field(default_factory=dict)
    data: str = ""  # the dataset its source was trained or searched on
    classes: int = 0  # how many classes it was trained on (0: its space's outputs)


def from_subnet_checkpoint(path: str) -> Chosen:
    """A ``--subnet`` checkpoint: its weights are final, its metrics and latency are used where present."""
    subnet, payload = load_subnet(path)
    space = space_of(config_from_dict(payload["space"]))
    return Chosen(subnet, space, space.parse(subnet.arch), path, _subnet_accuracy(payload),
                  _subnet_latency(payload, path), payload.get("train_config", {}).get("val_size", 5000),
                  data=trained_data(payload), classes=trained_classes(payload, space.config))


def from_supernet(args: argparse.Namespace) -> Chosen:
    """``--results`` (a search's winner, with its measured latency) or ``--arch``, extracted from the supernet."""
    results = read_results(args.results) if args.results else {}
    scenario, winner = winner_entry(results, args.scenario, args.results) if args.results else (None, None)
    checkpoint = args.checkpoint or results.get("checkpoint", {}).get("path") or str(PRETRAINED)
    supernet, meta = load_supernet(checkpoint)
    space = supernet.space
    arch = winner_of(results, scenario, args.results, space) if winner else space.parse(args.arch)
    calibration_size = args.calibration_size
    if calibration_size is None:  # as the search scored it
        calibration_size = results.get("config", {}).get("calibration_size", DEFAULT_CALIBRATION)
    source = {"results": args.results, "scenario": scenario} if winner else {}
    return Chosen(supernet.extract(arch).eval(), space, arch, checkpoint, {},
                  _results_latency(results, winner, args.results) if winner else None,
                  meta.get("train_config", {}).get("val_size", 5000), calibration_size, source,
                  trained_data(meta, results.get("config", {}).get("data")), trained_classes(meta, space.config))


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m search.export", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="architecture of --checkpoint: its space's string (as results.json spells "
                                      "it) or JSON object")
    which.add_argument("--results", help="results.json of a search: exports its winner")
    which.add_argument("--subnet", help="subnet checkpoint (e.g. retrained): exported as is")
    parser.add_argument("--scenario", default=None, help="with --results: whose winner (default: the first scenario)")
    parser.add_argument("--checkpoint", default=None,
                        help="supernet checkpoint (default: the one the results name, else the shipped one)")
    parser.add_argument("--data", default=None, help="dataset for batch-norm recalibration and accuracy (default: "
                        "the one the subnet's supernet was trained on)")
    parser.add_argument("--calibration-size", type=int_range(0), default=None,
                        help=f"training images to recalibrate batch norm on (default: the search's, else "
                             f"{DEFAULT_CALIBRATION}; 0: keep the supernet's statistics)")
    parser.add_argument("--device", default=None,
                        help="measure latency now on this device, cpu or cuda:N (default: use the latency that "
                             "comes with --results/--subnet, else measure on cpu)")
    parser.add_argument("--table", default=None, help="latency table file to measure with (default: cached)")
    parser.add_argument("--allow-foreign-table", action="store_true",
                        help="accept a table measured on another device, with a warning")
    parser.add_argument("--format", choices=FORMATS, default="torchscript", help="what to write (default torchscript)")
    parser.add_argument("--out", default=None,
                        help="file to write (default runs/export/subnet.pt or .onnx); with --format both, its "
                             "stem gets .pt and .onnx")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    paths = output_paths(args.out, args.format)
    if args.format != "torchscript":
        require_onnx()
    if args.subnet and (args.checkpoint or args.calibration_size is not None):
        raise UserError("--checkpoint and --calibration-size do not apply to --subnet: its weights are final and "
                        "exported as they are")
    if args.scenario and not args.results:
        raise UserError("--scenario applies to --results only")
    with contextlib.ExitStack() as claims:
        for path in paths.values():
            claims.enter_context(claim_file(path, what="export", overwrite=args.overwrite))
        write_exports(args, paths)


def write_exports(args: argparse.Namespace, paths: Mapping[str, Path]) -> None:
    """Export the subnet the parsed flags ``args`` choose to ``paths`` (format -> file), with its metadata."""
    chosen = from_subnet_checkpoint(args.subnet) if args.subnet else from_supernet(args)
    config, subnet, known, latency = chosen.space.config, chosen.subnet, chosen.known, chosen.latency
    if "val_top1" not in known:
        splits = load_splits(args.data or chosen.data, **data_format(config), val_size=chosen.val_size,
                             num_classes=config.num_classes,
                             trained=(chosen.classes or config.num_classes, f"checkpoint {chosen.checkpoint}"))
        if chosen.calibration_size:
            count = min(chosen.calibration_size, len(splits.train))
            subnet = recalibrate_bn(subnet, splits.train.subset(torch.arange(count)))
        known = {"val_top1": accuracy(subnet, splits.val), **known}
    if latency is None or args.device or args.table:
        device = parse_device(args.device or "cpu")
        table = table_for(config, device, path=args.table, allow_foreign=args.allow_foreign_table)
        timing = table.measure(subnet, device)
        latency = latency_entry(timing["median_ms"], timing["spread_ms"], str(device), table.fingerprint,
                                f"measured at export with latency table {table.path}")

    metadata = {"arch": chosen.space.to_string(chosen.arch), "arch_dict": chosen.arch, "space": config.name,
                "checkpoint": chosen.checkpoint, **chosen.source, **known, "latency": latency,
                "torch": torch.__version__,
                "input": {"name": INPUT, **input_description(config)},
                "output": {"name": OUTPUT, "shape": ["N", config.num_classes]}}
    if token_input(config) is not None:  # a deployed text network needs the words its ids stand for
        metadata["input"]["vocabulary"] = dataset_vocabulary(args.data or chosen.data, token_input(config))
    example = example_input(config, 2)
    print(f"arch     {metadata['arch']}")
    print("accuracy " + "  ".join(f"{k} {known[k]:.4f}" for k in ("val_top1", "test_top1") if k in known))
    print(f"latency  {latency['latency_ms']:.3f} ms (spread {latency['spread_ms']:.3f}) on {latency['device']}, "
          f"batch {latency['batch_size']}, {latency['runtime']}; from {latency['source']}")
    for name, path in paths.items():
        (export if name == "torchscript" else export_onnx)(subnet, path, metadata, example)
        print(f"wrote {path} ({DESCRIPTIONS[name]})")


if __name__ == "__main__":
    run_cli(main)
