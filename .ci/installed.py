"""Exit 0 when this checkout is already set up and current, so that `.ci/setup` can skip the install.

Set up means: the pinned torch is installed; this checkout is installed in editable mode (not another clone)
with the dependencies and extras `pyproject.toml` lists now, each of them installed; and the in-place C++
extension is newer than every C++ source, `setup.py` and the installed torch (it was built against that
torch). Otherwise prints what is missing, in one line, and exits 1. Reads package metadata only: no import
of torch, so it takes a fraction of a second.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("test", "onnx")  # what .ci/setup installs


def wanted() -> list[str]:
    """Requirement strings `pip install -e ".[test,onnx]"` would install now."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *(r for extra in EXTRAS for r in project["optional-dependencies"][extra])]


def name_of(requirement: str) -> str:
    return re.split(r"[\s;<>=!~\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def problem() -> str | None:
    """What is not set up, or None."""
    try:
        ours = md.distribution("oneshot-nas")
    except md.PackageNotFoundError:
        return "oneshot-nas is not installed"
    url = json.loads(ours.read_text("direct_url.json") or "{}")
    if not url.get("dir_info", {}).get("editable") or Path(url.get("url", "").removeprefix("file://")) != ROOT:
        return f"oneshot-nas is installed from {url.get('url', 'elsewhere')}, not from this checkout ({ROOT})"
    recorded = {r.split(";")[0].strip().lower() for r in ours.requires or []}
    for requirement in wanted():
        if requirement.lower() not in recorded:
            return f"pyproject.toml now asks for {requirement!r}, which the installed metadata lacks"
        try:
            version = md.version(name_of(requirement))
        except md.PackageNotFoundError:
            return f"{name_of(requirement)} is not installed"
        pinned = requirement.partition("==")[2]
        if pinned and not (version == pinned or version.startswith(pinned + "+")):
            return f"{name_of(requirement)} {version} is installed, pyproject.toml pins {pinned}"
    built = sorted(ROOT.glob("supernet/_C*.so"))
    if not built:
        return "the C++ extension is not built"
    sources = [ROOT / "setup.py", *ROOT.glob("csrc/**/*")]
    torch_files = md.distribution("torch").files or []
    torch_time = max((Path(md.distribution("torch").locate_file(f)).stat().st_mtime
                      for f in torch_files if str(f).endswith("METADATA")), default=0.0)
    newest = max([torch_time, *(p.stat().st_mtime for p in sources if p.is_file())])
    if built[0].stat().st_mtime < newest:
        return "the C++ extension is older than its sources or the installed torch"
    return None


if __name__ == "__main__":
    why = problem()
    if why:
        print(f"set-up needed: {why}")
    sys.exit(1 if why else 0)
