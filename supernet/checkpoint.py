"""Supernet and subnet checkpoints: weights plus everything needed to rebuild and trust them.

A checkpoint is a dict of plain data and tensors (so it loads with ``torch.load(weights_only=True)`` and a
crafted file cannot run code): ``format`` and ``version``, the space config, the state dict, the training
config and command line, the training progress, and, in resumable checkpoints, the optimizer state. A subnet
checkpoint (what ``search.retrain`` writes) also holds its architecture; it rebuilds a plain
:class:`~supernet.model.Subnet`.

Loading trusts nothing it can check: ``torch.load`` ignores the CRC-32 that the zip archive keeps for every
member, so :func:`load_checkpoint` verifies them first (a flipped bit in a weight would otherwise load as,
say, 3.4e37), and it refuses a checkpoint holding a NaN or an infinity (weights, statistics, optimizer state).
Both cost a few milliseconds on the shipped checkpoint, a fraction of ``torch.load`` itself.
"""
from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from supernet.data import DEFAULT_DATA
from supernet.divergence import nonfinite_tensors
from supernet.errors import UserError, gist
from supernet.io import atomic_serialize
from supernet.family import build_subnet, build_supernet, config_from_dict, space_of
from supernet.outdir import check_input
from supernet.schema import ANYTHING, COUNT, TEXT, Each, Nullable, Optional, check_document

FORMAT = "oneshot-nas/supernet"
SUBNET_FORMAT = "oneshot-nas/subnet"
VERSION = 1
PRETRAINED = Path(__file__).parent / "pretrained" / "mbv3-fmnist.pt"


# The metadata every reader of a checkpoint may use, checked when present (a resume checks more: load_resumable).
METADATA = {"train_config": Optional({"val_size": Optional(COUNT)}), "retrain_config": Optional(Each(ANYTHING)),
            "command": Optional(Nullable([TEXT])), "progress": Optional(Each(ANYTHING)),
            "metrics": Optional(Each(ANYTHING)), "arch": Optional(TEXT), "classes": Optional([TEXT])}


def save_checkpoint(path: str | os.PathLike, model: Any, **fields: Any) -> Path:
    """Write ``model`` and ``fields`` (train_config, command, progress, optimizer, metrics...) atomically."""
    payload = {"format": FORMAT, "version": VERSION, "space": model.config.to_dict(),
               "state_dict": model.state_dict(), **fields}
    return atomic_serialize(path, lambda buffer: torch.save(payload, buffer))


def save_subnet_checkpoint(path: str | os.PathLike, model: Any, config: Any, **fields: Any) -> Path:
    """Write a subnet of ``config`` with its architecture and ``fields`` atomically."""
    payload = {"format": SUBNET_FORMAT, "version": VERSION, "space": config.to_dict(), "arch": model.arch,
               "state_dict": model.state_dict(), **fields}
    return atomic_serialize(path, lambda buffer: torch.save(payload, buffer))


def damaged_member(blob: bytes) -> str | None:
    """The name of the first member of the zip archive ``blob`` whose bytes do not match their CRC-32, or None.

    torch stores its members uncompressed, so each stored member's CRC is taken straight over its bytes in
    ``blob`` (a third of the time ``zipfile`` takes to read them); any other member is read through ``zipfile``,
    which checks it. Raises ``zipfile.BadZipFile`` when ``blob`` is not a readable zip archive.
    """
    view = memoryview(blob)
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                try:
                    archive.read(info)
                except (zipfile.BadZipFile, zlib.error, EOFError):
                    return info.filename
                continue
            header = info.header_offset  # local header: 30 bytes, then the name and the extra field
            if bytes(view[header:header + 4]) != b"PK\x03\x04":
                return info.filename
            start = header + 30 + int.from_bytes(view[header + 26:header + 28], "little") \
                + int.from_bytes(view[header + 28:header + 30], "little")
            data = view[start:start + info.compress_size]
            if len(data) != info.compress_size or zlib.crc32(data) != info.CRC:
                return info.filename
    return None


def _read_verified(path: Path, what: str) -> dict[str, Any] | Any:
    """``torch.load`` of ``path`` once every zip member's CRC-32 has been checked; one-line errors otherwise."""
    def corrupt(reason: str) -> UserError:
        return UserError(f"checkpoint {path} is corrupt, truncated or not a {what} checkpoint ({gist(reason)}); "
                         "restore it from a good copy or write it again")
    check_input(path, "checkpoint")
    try:
        blob = path.read_bytes()
        damaged = damaged_member(blob)
    except zipfile.BadZipFile as err:
        raise corrupt(f"not a zip archive: {err}") from None
    except OSError as err:
        raise corrupt(err.strerror or type(err).__name__) from None
    if damaged is not None:
        member = damaged.split("/", 1)[-1]  # the first part is the archive's own folder name
        raise UserError(f"checkpoint {path} is damaged: its member {member!r} fails its CRC-32 check (the file "
                        "changed after it was written: a bad disk or copy, or an edit); restore it from a good "
                        "copy or train it again")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning would precede the one-line error
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as err:
        raise corrupt(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__) from None


def load_checkpoint(path: str | os.PathLike, kind: str = FORMAT, what: str | None = None) -> dict[str, Any]:
    """Load and check a checkpoint of ``kind`` (supernet or subnet); one-line errors for anything else.

    Every zip member's CRC-32 is verified and every tensor must be finite (see the module's docstring).
    ``what`` names another kind of file in the same form (``predictor``) in the messages; such a file must
    hold a ``space`` and a ``state_dict`` as well.
    """
    path = Path(path)
    what = what or ("subnet" if kind == SUBNET_FORMAT else "supernet")
    if not path.is_file():
        hint = "python -m search.retrain" if kind == SUBNET_FORMAT else "python -m supernet.train"
        raise UserError(f"checkpoint {path} does not exist; train one with `{hint}`")
    payload = _read_verified(path, what)
    if not isinstance(payload, dict) or payload.get("format") != kind:
        found = payload.get("format") if isinstance(payload, dict) else None
        ours = isinstance(found, str) and found.startswith("oneshot-nas/")
        extra = f"; it is a {found.split('/')[-1]} checkpoint" if ours else ""
        raise UserError(f"checkpoint {path} is not a {what} checkpoint of this tool (no {kind!r} format tag){extra}")
    if payload.get("version") != VERSION:
        raise UserError(f"checkpoint {path} has format version {payload.get('version')!r}; this tool reads "
                        f"version {VERSION}")
    for key in ("space", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise UserError(f"checkpoint {path} lacks its {key!r} entry; it is not usable")
    check_document(payload, METADATA, f"checkpoint {path} is malformed", "it was not written by this tool")
    bad = nonfinite_tensors(payload)
    if bad:
        raise UserError(f"checkpoint {path} holds non-finite values (NaN or inf) in {len(bad)} tensor(s), first "
                        f"{bad[0]}: it is not a usable state; use an earlier checkpoint or train again")
    return payload


def load_resumable(path: str | os.PathLike, kind: str, schema: dict[str, Any]) -> dict[str, Any]:
    """``OUT/last.pt`` of an interrupted run, checked to hold everything a resume reads (``schema``).

    What ``--resume`` may find instead: nothing, a finished run's ``final.pt`` or a shipped checkpoint copied
    there (weights but no optimizer state), a checkpoint of the other kind, or a file missing keys. Each is
    one line naming the file, before anything is built.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--resume: {path} does not exist, so there is no interrupted run in {path.parent} to "
                        "continue; start without --resume")
    payload = load_checkpoint(path, kind)
    if "optimizer" not in payload:
        what = "a finished run's final checkpoint" if "metrics" in payload else "a checkpoint without optimizer state"
        raise UserError(f"--resume: {path} is {what}, not the state of an interrupted run; start a new run "
                        "without --resume (or fine-tune from it)")
    check_document(payload, schema, f"--resume: {path} is not a resumable training state",
                   "start a new run without --resume")
    return payload


def restore(target: Any, state: Any, path: str | os.PathLike, what: str) -> None:
    """``target.load_state_dict(state)`` for a resumed run; a state that does not fit ``target`` is one line."""
    try:
        target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"--resume: the {what} in {path} does not fit this run ({gist(first)}); start a new run "
                        "without --resume") from None


def trained_data(payload: dict[str, Any], given: str | None = None) -> str:
    """The dataset a command reads for a checkpoint: ``given`` (its ``--data``), else the one the checkpoint
    was retrained or trained on, else Fashion-MNIST: a CIFAR-10 supernet is never scored on Fashion-MNIST
    because a flag was left out."""
    for config in ("retrain_config", "train_config"):
        data = payload.get(config, {}).get("data") if isinstance(payload.get(config), dict) else None
        if not given and isinstance(data, str) and data:
            given = data
    return given or DEFAULT_DATA


def trained_classes(payload: dict[str, Any], config: Any) -> int:
    """How many classes the checkpoint's network was trained on: its recorded class list (written since
    2026-12-01), else its space's outputs (the shipped checkpoint's 10 Fashion-MNIST classes)."""
    classes = payload.get("classes")
    return len(classes) if isinstance(classes, list) and classes else int(config.num_classes)


def load_supernet(path: str | os.PathLike, space: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Rebuild the supernet stored at ``path`` (in eval mode) and return it with the whole payload.

    With ``space``, a checkpoint of another space is refused.
    """
    payload = load_checkpoint(path)
    config = config_from_dict(payload["space"], f"checkpoint {path}")
    if space is not None and config.name != space:
        raise UserError(f"checkpoint {path} is for space {config.name!r}, not {space!r}")
    model = build_supernet(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"checkpoint {path} does not match its space {config.name!r}: {gist(first)}") from None
    return model.eval(), payload


def load_subnet(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """Rebuild the subnet stored at ``path`` by :func:`save_subnet_checkpoint` (in eval mode), with its payload."""
    payload = load_checkpoint(path, SUBNET_FORMAT)
    config = config_from_dict(payload["space"], f"checkpoint {path}")
    try:
        model = build_subnet(config, space_of(config).parse(payload.get("arch", "")))
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, UserError) as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"checkpoint {path} does not match its architecture: {gist(first)}") from None
    return model.eval(), payload
