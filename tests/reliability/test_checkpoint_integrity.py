"""A damaged or non-finite checkpoint is refused in one line, never loaded (issue 15, point 6).

``torch.load`` does not check the CRC-32 that the zip archive keeps for every member: a bit flipped in a
tensor's bytes loaded silently (a weight became 1.7e37; evolve and export exited 0). The loaders now verify
every member's CRC and refuse NaN and infinite tensors, for supernet and subnet checkpoints alike and for
the ``--resume`` paths of ``supernet.train`` and ``search.retrain``.
"""
from __future__ import annotations

import dataclasses
import shutil
import zipfile
from pathlib import Path
from typing import Callable

import pytest
import torch

from search.retrain import RetrainConfig, retrain
from supernet.checkpoint import (PRETRAINED, SUBNET_FORMAT, damaged_member, load_checkpoint, load_subnet,
                                 load_supernet, save_checkpoint, save_subnet_checkpoint)
from supernet.errors import UserError
from supernet.model import Subnet
from supernet.space import get_space
from supernet.train import TrainConfig, train
from tests.conftest import run_module

SPACE = get_space("mbv3")
SMALLEST = SPACE.to_string(SPACE.smallest())


def flip_in_tensor(source: Path, target: Path, name: str, *, byte: int = 3, mask: int = 0x40) -> int:
    """Copy ``source`` to ``target`` with one bit flipped in the bytes of state-dict tensor ``name``.

    The tensor's bytes are found in the file by value (torch stores its zip members uncompressed), so the
    flip lands in a ``data/N`` member whatever its number. The default flips the highest exponent bit of the
    first float32 value (little-endian byte 3): 0.05 becomes about 1.7e37. Returns the file offset flipped.
    """
    tensor = torch.load(source, weights_only=True)["state_dict"][name]
    blob = bytearray(source.read_bytes())
    offset = blob.find(tensor.contiguous().numpy().tobytes())
    assert offset > 0 and blob.count(tensor.contiguous().numpy().tobytes()) == 1
    blob[offset + byte] ^= mask
    target.write_bytes(bytes(blob))
    return offset + byte


def member_at(path: Path, offset: int) -> str:
    """The zip member whose stored bytes hold ``offset``."""
    with zipfile.ZipFile(path) as archive:
        starts = sorted((info.header_offset, info.filename) for info in archive.infolist())
    return [name for start, name in starts if start <= offset][-1]


@pytest.fixture(scope="module")
def flipped(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flipped") / "final.pt"
    flip_in_tensor(tiny_run / "final.pt", path, "stages.1.0.expand_conv.weight")
    return path


def test_the_flip_is_armed(tiny_run: Path, flipped: Path) -> None:
    """Without the CRC check the flipped file loads, finite, with one weight about 2**128 times too large:
    no other check could tell."""
    name = "stages.1.0.expand_conv.weight"
    good = torch.load(tiny_run / "final.pt", weights_only=True)["state_dict"][name]
    bad = torch.load(flipped, weights_only=True)["state_dict"][name]
    assert bad.isfinite().all() and bad.flatten()[0].abs() > 1e30 > good.abs().max()
    assert torch.equal(bad.flatten()[1:], good.flatten()[1:])


def test_a_flipped_bit_in_tensor_data_is_refused_naming_the_member(tiny_run: Path, flipped: Path,
                                                                   tmp_path: Path) -> None:
    offset = flip_in_tensor(tiny_run / "final.pt", tmp_path / "x.pt", "stages.1.0.expand_conv.weight")
    member = member_at(tmp_path / "x.pt", offset).split("/", 1)[1]
    assert member.startswith("data/")
    for load in (load_checkpoint, load_supernet):
        with pytest.raises(UserError, match=rf"checkpoint {flipped} is damaged: its member '{member}' fails its "
                                            r"CRC-32 check .* restore it from a good copy") as err:
            load(flipped)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("byte, mask", [(0, 0x01), (3, 0x80)], ids=["lowest mantissa bit", "sign bit"])
def test_any_flipped_bit_is_refused_even_when_the_value_stays_plausible(tiny_run: Path, tmp_path: Path, byte: int,
                                                                         mask: int) -> None:
    flip_in_tensor(tiny_run / "final.pt", tmp_path / "x.pt", "classifier.weight", byte=byte, mask=mask)
    with pytest.raises(UserError, match="fails its CRC-32 check"):
        load_supernet(tmp_path / "x.pt")


def test_damage_to_the_pickle_or_the_archive_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    blob = bytearray((tiny_run / "final.pt").read_bytes())
    with zipfile.ZipFile(tiny_run / "final.pt") as archive:
        pickle_bytes = archive.read(next(i for i in archive.infolist() if i.filename.endswith("/data.pkl")))
    damaged = bytearray(blob)
    damaged[blob.find(pickle_bytes) + 200] ^= 0x01  # inside data.pkl (a string in it: still unpicklable)
    (tmp_path / "pkl.pt").write_bytes(bytes(damaged))
    with pytest.raises(UserError, match="its member 'data.pkl' fails its CRC-32 check"):
        load_checkpoint(tmp_path / "pkl.pt")
    (tmp_path / "cut.pt").write_bytes(bytes(blob[:-30]))  # the end of the central directory is gone
    with pytest.raises(UserError, match="is corrupt, truncated or not a supernet checkpoint \\(not a zip archive"):
        load_checkpoint(tmp_path / "cut.pt")


def test_a_subnet_checkpoint_is_verified_too(tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_subnet_checkpoint(tmp_path / "subnet.pt", Subnet(SPACE.config, SPACE.smallest()), SPACE.config)
    flip_in_tensor(tmp_path / "subnet.pt", tmp_path / "flipped.pt", "classifier.weight")
    with pytest.raises(UserError, match="flipped.pt is damaged: its member 'data/"):
        load_subnet(tmp_path / "flipped.pt")
    load_subnet(tmp_path / "subnet.pt")  # the intact one still loads


def test_a_legacy_non_zip_checkpoint_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    """torch's old format has no CRCs to check; this tool never wrote it."""
    torch.save(torch.load(tiny_run / "final.pt", weights_only=True), tmp_path / "legacy.pt",
               _use_new_zipfile_serialization=False)
    with pytest.raises(UserError, match="not a supernet checkpoint \\(not a zip archive"):
        load_checkpoint(tmp_path / "legacy.pt")


def with_weight(model: torch.nn.Module, name: str, value: float) -> torch.nn.Module:
    with torch.no_grad():
        model.state_dict()[name].view(-1)[7] = value
    return model


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_checkpoint_with_a_non_finite_weight_is_refused_naming_the_tensor(tiny_run: Path, tmp_path: Path,
                                                                           value: float) -> None:
    model = with_weight(load_supernet(tiny_run / "final.pt")[0], "stem.0.weight", value)
    save_checkpoint(tmp_path / "nan.pt", model)  # intact archive, CRCs right: only the values are wrong
    assert damaged_member((tmp_path / "nan.pt").read_bytes()) is None
    with pytest.raises(UserError, match=r"nan.pt holds non-finite values \(NaN or inf\) in 1 tensor\(s\), first "
                                        r"state_dict\['stem.0.weight'\]: it is not a usable state"):
        load_supernet(tmp_path / "nan.pt")
    subnet = with_weight(Subnet(SPACE.config, SPACE.smallest()), "classifier.weight", value)
    save_subnet_checkpoint(tmp_path / "subnet.pt", subnet, SPACE.config)
    with pytest.raises(UserError, match=r"first state_dict\['classifier.weight'\]"):
        load_subnet(tmp_path / "subnet.pt")


def _nan_momentum(path: Path, kind: str | None = None) -> None:
    """Rewrite the checkpoint at ``path`` with a NaN in its first momentum buffer (CRCs right)."""
    payload = load_checkpoint(path, kind) if kind else load_checkpoint(path)
    buffer = next(iter(payload["optimizer"]["state"].values()))["momentum_buffer"]
    buffer.view(-1)[0] = float("nan")
    torch.save(payload, path)


def test_resuming_a_training_from_a_non_finite_state_is_refused(tmp_path: Path, fake_data: Path) -> None:
    torch.set_num_threads(1)
    config = TrainConfig(data=str(fake_data), out=str(tmp_path), epochs=1, batch_size=64, val_size=64,
                         calib_size=32, warmup_steps=1, random_subnets=0, stop_after=1)
    train(config, command=["pytest"])
    _nan_momentum(tmp_path / "last.pt")
    with pytest.raises(UserError, match=r"last.pt holds non-finite values .* first optimizer\['state'\]\[\d+\]"
                                        r"\['momentum_buffer'\]"):
        train(dataclasses.replace(config, stop_after=0), resume=True, command=["pytest"])


def test_resuming_a_retraining_from_a_damaged_or_non_finite_state_is_refused(tmp_path: Path, tiny_run: Path,
                                                                            fake_data: Path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "run"
    config = RetrainConfig(arch=SMALLEST, mode="head", checkpoint=str(tiny_run / "final.pt"), data=str(fake_data),
                           epochs=1, batch_size=64, calibration_size=0, stop_after=1, out=str(out))
    retrain(config, command=["pytest"])
    good = (out / "last.pt").read_bytes()
    flip_in_tensor(out / "last.pt", out / "last.pt", "classifier.weight", byte=1, mask=0x10)
    resume = dataclasses.replace(config, stop_after=0)
    with pytest.raises(UserError, match=r"last.pt is damaged: its member 'data/\d+' fails its CRC-32 check"):
        retrain(resume, resume=True, command=["pytest"])
    (out / "last.pt").write_bytes(good)
    _nan_momentum(out / "last.pt", SUBNET_FORMAT)
    with pytest.raises(UserError, match=r"last.pt holds non-finite values .* first optimizer"):
        retrain(resume, resume=True, command=["pytest"])


@pytest.mark.parametrize("command", [
    lambda ckpt, data, out: ["search.export", "--arch", SMALLEST, "--checkpoint", ckpt, "--data", data,
                             "--out", f"{out}/subnet.pt"],
    lambda ckpt, data, out: ["search.evolve", "--latency-ms", "10", "--checkpoint", ckpt, "--data", data,
                             "--out", out],
], ids=["export", "evolve"])
@pytest.mark.slow
def test_clis_refuse_a_flipped_checkpoint_in_one_line(flipped: Path, fake_data: Path, tmp_path: Path,
                                                      command: Callable[[str, str, str], list[str]]) -> None:
    out = tmp_path / "out"
    result = run_module(*command(str(flipped), str(fake_data), str(out)), cwd=tmp_path, check=False,
                        env={"ONESHOT_CACHE": str(tmp_path / "cache")})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and "is damaged: its member 'data/" in lines[0], lines
    assert not out.exists()


def test_the_shipped_checkpoint_passes(tmp_path: Path) -> None:
    """The shipped file is intact and finite (and stays loadable through a copy: nothing is path-specific)."""
    assert damaged_member(PRETRAINED.read_bytes()) is None
    load_supernet(shutil.copy(PRETRAINED, tmp_path / "copy.pt"), space="mbv3")
