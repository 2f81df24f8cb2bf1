"""No code runs from a file: crafted checkpoints, tables and exports whose pickles would run a command.

Each crafted file is first shown to be armed (an unsafe ``torch.load`` / ``pickle.load`` of it does run the
command), then given to the engine's loaders and CLIs, which must refuse it with a one-line error and run
nothing.
"""
from __future__ import annotations

import ast
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from search.export import read_metadata
from search.latency import load_table
from supernet.checkpoint import FORMAT, SUBNET_FORMAT, VERSION, load_checkpoint, load_subnet, load_supernet
from supernet.errors import UserError
from supernet.space import get_space
from tests.conftest import ROOT, run_module


class Armed:
    """Unpickling this runs ``touch MARKER``: what an attacker would put in a shared checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "code-ran"


@pytest.fixture
def crafted(tmp_path: Path, marker: Path) -> dict[str, Path]:
    """Armed files: a checkpoint-shaped zip (both formats) and a raw pickle."""
    space = get_space("mbv3").config.to_dict()
    files = {}
    for name, kind in (("supernet", FORMAT), ("subnet", SUBNET_FORMAT)):
        files[name] = tmp_path / f"{name}.pt"
        torch.save({"format": kind, "version": VERSION, "space": space, "arch": "k3e3-k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3",
                    "state_dict": {}, "train_config": Armed(marker)}, files[name])
    files["raw"] = tmp_path / "raw.pt"
    files["raw"].write_bytes(pickle.dumps(Armed(marker)))
    return files


def test_the_crafted_files_are_armed(crafted: dict[str, Path], marker: Path) -> None:
    """Without this the other tests could pass for a payload that never worked."""
    for path in crafted.values():
        marker.unlink(missing_ok=True)
        torch.load(path, weights_only=False) if zipfile.is_zipfile(path) else pickle.loads(path.read_bytes())
        assert marker.exists(), path


def test_checkpoint_loaders_refuse_crafted_files(crafted: dict[str, Path], marker: Path) -> None:
    for path in crafted.values():
        for load in (load_checkpoint, load_supernet, load_subnet):
            with pytest.raises(UserError, match="is corrupt, truncated or not a (supernet|subnet) checkpoint") as err:
                load(path)
            assert "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.slow
def test_clis_refuse_crafted_checkpoints_with_exit_2(tmp_path: Path, crafted: dict[str, Path], marker: Path,
                                                     fake_data: Path) -> None:
    resume = tmp_path / "resume"
    resume.mkdir()
    (resume / "last.pt").write_bytes(crafted["supernet"].read_bytes())
    retrain = tmp_path / "retrain"
    retrain.mkdir()
    (retrain / "last.pt").write_bytes(crafted["subnet"].read_bytes())
    for args in (["search.evolve", "--latency-ms", "10", "--checkpoint", str(crafted["supernet"]), "--data", str(fake_data)],
                 ["search.export", "--subnet", str(crafted["subnet"]), "--out", str(tmp_path / "x.pt")],
                 ["supernet.train", "--resume", "--out", str(resume)],
                 ["search.retrain", "--resume", "--out", str(retrain)],
                 ["search.evolve", "--latency-ms", "10", "--checkpoint", str(crafted["raw"]), "--data", str(fake_data)]):
        result = run_module(*args, check=False)
        assert result.returncode == 2, result.stderr[-2000:]
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        assert "corrupt, truncated or not a" in result.stderr
    assert not marker.exists()


def test_a_pickle_given_as_a_table_is_refused(crafted: dict[str, Path], marker: Path) -> None:
    for path in crafted.values():
        with pytest.raises(UserError, match="is not valid JSON"):
            load_table(path)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:`torch.jit.(save|script)` is deprecated:DeprecationWarning")
def test_reading_export_metadata_loads_no_model(tmp_path: Path, marker: Path) -> None:
    """``read_metadata`` reads the archive's metadata.json as a zip member; the model (and its pickles) stay
    unloaded. Armed here: the archive's data.pkl is replaced with a payload."""
    clean = tmp_path / "clean.pt"
    torch.jit.save(torch.jit.script(torch.nn.ReLU()), str(clean), _extra_files={"metadata.json": '{"arch": "x"}'})
    armed = tmp_path / "armed.pt"
    with zipfile.ZipFile(clean) as source, zipfile.ZipFile(armed, "w") as target:
        for item in source.infolist():
            data = pickle.dumps(Armed(marker)) if item.filename.endswith("/data.pkl") else source.read(item)
            target.writestr(item, data)
    assert read_metadata(armed) == {"arch": "x"} and not marker.exists()


UNSAFE = {"eval", "exec", "pickle.load", "pickle.loads", "marshal.loads", "yaml.load", "dill.load", "shelve.open"}


def test_no_source_file_loads_code_from_data() -> None:
    """A guard for later changes: every ``torch.load`` passes ``weights_only=True``, and nothing in the engine
    unpickles, evals or execs."""
    found = []
    for path in [*(ROOT / "supernet").rglob("*.py"), *(ROOT / "search").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            weights_only = {k.arg: k.value for k in node.keywords}.get("weights_only")
            if name == "torch.load" and not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: torch.load without weights_only=True")
            if name in UNSAFE or (name.endswith("np.load") or name.endswith("numpy.load")) and any(
                    k.arg == "allow_pickle" for k in node.keywords):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert found == []
