"""Supernet and subnet checkpoints: weights plus everything needed to rebuild and trust them.

A checkpoint is a dict of plain data and tensors (so it loads with ``torch.load(weights_only=True)`` and a
crafted file cannot run code): ``format`` and ``version``, the space config, the state dict, the training
config and command line, the training progress, and, in resumable checkpoints, the optimizer state. A subnet
checkpoint (what ``search.retrain`` writes) also holds its architecture; it rebuilds a plain
:class:`~supernet.model.Subnet`.
"""
from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from supernet.errors import UserError
from supernet.io import atomic_serialize
from supernet.model import Subnet, Supernet
from supernet.schema import ANYTHING, COUNT, TEXT, Each, Nullable, Optional, check_document
from supernet.space import Space, SpaceConfig

FORMAT = "oneshot-nas/supernet"
SUBNET_FORMAT = "oneshot-nas/subnet"
VERSION = 1
PRETRAINED = Path(__file__).parent / "pretrained" / "mbv3-fmnist.pt"


# The metadata every reader of a checkpoint may use, checked when present (a resume checks more: load_resumable).
METADATA = {"train_config": Optional({"val_size": Optional(COUNT)}), "retrain_config": Optional(Each(ANYTHING)),
            "command": Optional(Nullable([TEXT])), "progress": Optional(Each(ANYTHING)),
            "metrics": Optional(Each(ANYTHING)), "arch": Optional(TEXT)}


def save_checkpoint(path: str | os.PathLike, model: Supernet, **fields: Any) -> Path:
    """Write ``model`` and ``fields`` (train_config, command, progress, optimizer, metrics...) atomically."""
    payload = {"format": FORMAT, "version": VERSION, "space": model.config.to_dict(),
               "state_dict": model.state_dict(), **fields}
    return atomic_serialize(path, lambda buffer: torch.save(payload, buffer))


def save_subnet_checkpoint(path: str | os.PathLike, model: Subnet, config: SpaceConfig, **fields: Any) -> Path:
    """Write a subnet of ``config`` with its architecture and ``fields`` atomically."""
    payload = {"format": SUBNET_FORMAT, "version": VERSION, "space": config.to_dict(), "arch": model.arch,
               "state_dict": model.state_dict(), **fields}
    return atomic_serialize(path, lambda buffer: torch.save(payload, buffer))


def load_checkpoint(path: str | os.PathLike, kind: str = FORMAT) -> dict[str, Any]:
    """Load and check a checkpoint of ``kind`` (supernet or subnet); one-line errors for anything else."""
    path = Path(path)
    what = "subnet" if kind == SUBNET_FORMAT else "supernet"
    if not path.is_file():
        hint = "python -m search.retrain" if kind == SUBNET_FORMAT else "python -m supernet.train"
        raise UserError(f"checkpoint {path} does not exist; train one with `{hint}`")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning would precede the one-line error
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"checkpoint {path} is corrupt, truncated or not a {what} checkpoint ({reason[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != kind:
        found = payload.get("format") if isinstance(payload, dict) else None
        extra = f"; it is a {found.split('/')[-1]} checkpoint" if found in (FORMAT, SUBNET_FORMAT) else ""
        raise UserError(f"checkpoint {path} is not a {what} checkpoint of this tool (no {kind!r} format tag){extra}")
    if payload.get("version") != VERSION:
        raise UserError(f"checkpoint {path} has format version {payload.get('version')!r}; this tool reads "
                        f"version {VERSION}")
    for key in ("space", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise UserError(f"checkpoint {path} lacks its {key!r} entry; it is not usable")
    check_document(payload, METADATA, f"checkpoint {path} is malformed", "it was not written by this tool")
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
        raise UserError(f"--resume: the {what} in {path} does not fit this run ({first[:200]}); start a new run "
                        "without --resume") from None


def load_supernet(path: str | os.PathLike, space: str | None = None) -> tuple[Supernet, dict[str, Any]]:
    """Rebuild the supernet stored at ``path`` (in eval mode) and return it with the whole payload.

    With ``space``, a checkpoint of another space is refused.
    """
    payload = load_checkpoint(path)
    config = SpaceConfig.from_dict(payload["space"], f"checkpoint {path}")
    if space is not None and config.name != space:
        raise UserError(f"checkpoint {path} is for space {config.name!r}, not {space!r}")
    model = Supernet(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"checkpoint {path} does not match its space {config.name!r}: {first[:200]}") from None
    return model.eval(), payload


def load_subnet(path: str | os.PathLike) -> tuple[Subnet, dict[str, Any]]:
    """Rebuild the subnet stored at ``path`` by :func:`save_subnet_checkpoint` (in eval mode), with its payload."""
    payload = load_checkpoint(path, SUBNET_FORMAT)
    config = SpaceConfig.from_dict(payload["space"], f"checkpoint {path}")
    try:
        model = Subnet(config, Space(config).parse(payload.get("arch", "")))
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, UserError) as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"checkpoint {path} does not match its architecture: {first[:200]}") from None
    return model.eval(), payload
