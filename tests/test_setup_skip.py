"""`.ci/setup` skips the install when `.ci/installed.py` finds the checkout set up and current (issue 20.3).

The check runs on a copy of the checkout's build inputs with faked package metadata: current, then each way
of not being current.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_check(root: Path):
    spec = importlib.util.spec_from_file_location("installed_check", ROOT / ".ci" / "installed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ROOT = root
    return module


class FakeDist:
    def __init__(self, root: Path, requires: list[str], url: str | None = None, version: str = "1.0"):
        self.root, self.requires, self.version = root, requires, version
        self.url = url if url is not None else f"file://{root}"
        self.files = ["torch-2.13.0.dist-info/METADATA"]

    def read_text(self, name: str) -> str | None:
        return json.dumps({"dir_info": {"editable": True}, "url": self.url}) if name == "direct_url.json" else None

    def locate_file(self, name: str) -> Path:
        return self.root / "site" / name


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "clone"
    (root / "supernet").mkdir(parents=True)
    (root / "csrc").mkdir()
    shutil.copy(ROOT / "pyproject.toml", root)
    (root / "setup.py").write_text("# setup\n")
    (root / "csrc" / "op.cpp").write_text("// op\n")
    metadata = root / "site" / "torch-2.13.0.dist-info" / "METADATA"
    metadata.parent.mkdir(parents=True)
    metadata.write_text("torch\n")
    (root / "supernet" / "_C.abi3.so").write_bytes(b"\0")
    now = time.time()
    os.utime(root / "supernet" / "_C.abi3.so", (now - 50, now - 50))  # built after its inputs, before now
    for path in (root / "setup.py", root / "csrc" / "op.cpp", metadata):
        os.utime(path, (now - 100, now - 100))
    return root


def fake_metadata(monkeypatch: pytest.MonkeyPatch, check, root: Path, *, url: str | None = None,
                  drop: str | None = None, torch_version: str = "2.13.0+cpu", missing: str | None = None) -> None:
    requires = [r for r in check.wanted() if r != drop]
    ours = FakeDist(root, requires, url)
    md = check.md

    def distribution(name: str):
        if name == missing:
            raise md.PackageNotFoundError(name)
        return ours if name == "oneshot-nas" else FakeDist(root, [])

    def version(name: str) -> str:
        if name == missing:
            raise md.PackageNotFoundError(name)
        return torch_version if name == "torch" else "1.0"

    monkeypatch.setattr(md, "distribution", distribution)
    monkeypatch.setattr(md, "version", version)


def test_a_current_checkout_needs_nothing(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check = load_check(checkout)
    fake_metadata(monkeypatch, check, checkout)
    assert check.problem() is None


@pytest.mark.parametrize("change, message", [
    ("touch-source", "older than its sources"),
    ("touch-torch", "older than its sources or the installed torch"),
    ("no-extension", "not built"),
    ("other-clone", "not from this checkout"),
    ("new-requirement", "pyproject.toml now asks for 'thop'"),
    ("other-torch", "torch 2.14.1 is installed, pyproject.toml pins 2.13.0"),
    ("missing-package", "onnxruntime is not installed"),
])
def test_each_way_of_not_being_current_is_named(checkout: Path, monkeypatch: pytest.MonkeyPatch,
                                                change: str, message: str) -> None:
    check = load_check(checkout)
    options = {"other-clone": {"url": "file:///elsewhere/clone"}, "new-requirement": {"drop": "thop"},
               "other-torch": {"torch_version": "2.14.1"}, "missing-package": {"missing": "onnxruntime"}}
    fake_metadata(monkeypatch, check, checkout, **options.get(change, {}))
    if change == "touch-source":
        (checkout / "csrc" / "op.cpp").touch()
    elif change == "touch-torch":
        (checkout / "site" / "torch-2.13.0.dist-info" / "METADATA").touch()
    elif change == "no-extension":
        (checkout / "supernet" / "_C.abi3.so").unlink()
    assert message in check.problem()


def test_the_check_runs_as_setup_calls_it() -> None:
    """As `.ci/setup` runs it: exit 0, or 1 with one line saying what set-up is needed."""
    result = subprocess.run([sys.executable, str(ROOT / ".ci" / "installed.py")], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "") or (
        result.returncode == 1 and result.stdout.startswith("set-up needed: ") and result.stdout.count("\n") == 1)
