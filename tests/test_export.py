"""Exports run where this project cannot be imported, match the eager subnet, and carry their metadata."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from search.export import export, export_onnx, onnx_metadata_props, read_metadata, require_onnx
from search.latency import load_table
from supernet.checkpoint import load_supernet, save_subnet_checkpoint
from supernet.errors import UserError
from supernet.model import Subnet, init_weights
from supernet.space import get_space
from tests.conftest import logits_without_the_project, run_module

SPACE = get_space("mbv3")
METADATA = {"arch": SPACE.to_string(SPACE.smallest()), "arch_dict": SPACE.smallest(), "space": "mbv3",
            "checkpoint": "none", "val_top1": 0.5,
            "latency": {"latency_ms": 7.5, "spread_ms": 0.25, "device": "cpu", "fingerprint": {"batch_size": 4},
                        "batch_size": 4, "runtime": "eager", "source": "test"}}


def seeded_subnet() -> Subnet:
    """The smallest subnet with seeded random weights and batch-norm statistics (so freezing has work to do)."""
    torch.manual_seed(0)
    subnet = init_weights(Subnet(SPACE.config, SPACE.smallest()))
    for module in subnet.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return subnet.eval()


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("exports")
    example = torch.rand(2, 1, 28, 28)
    paths = {".pt": export(seeded_subnet(), folder / "subnet.pt", METADATA, example)}
    try:
        require_onnx()
        paths[".onnx"] = export_onnx(seeded_subnet(), folder / "subnet.onnx", METADATA, example)
    except UserError:
        pass  # the ONNX cases skip themselves
    return paths


@pytest.mark.parametrize("suffix", [".pt", ".onnx"])
@pytest.mark.slow
def test_export_runs_without_the_project_and_matches_eager(tmp_path: Path, exports: dict[str, Path],
                                                           suffix: str) -> None:
    if suffix == ".onnx":
        pytest.importorskip("onnxscript")
        pytest.importorskip("onnxruntime")
    x = torch.rand(5, 1, 28, 28)  # not the example's batch size: the batch dimension is dynamic
    with torch.no_grad():
        expected = seeded_subnet()(x)
    torch.testing.assert_close(logits_without_the_project(exports[suffix], x, tmp_path), expected,
                               atol=1e-4, rtol=1e-4)
    assert read_metadata(exports[suffix]) == METADATA


def test_torchscript_export_is_frozen(exports: dict[str, Path]) -> None:
    model = torch.jit.load(str(exports[".pt"]))
    assert not list(model.parameters()) and not list(model.buffers()) and not list(model.children())
    kinds = {node.kind() for node in model.graph.nodes()}
    assert "aten::conv2d" in kinds and "aten::batch_norm" not in kinds  # folded into the convolutions


def test_onnx_metadata_props_are_flat_strings_beside_the_json(exports: dict[str, Path]) -> None:
    onnx = pytest.importorskip("onnx")
    props = {p.key: p.value for p in onnx.load(str(exports[".onnx"])).metadata_props}
    assert props == onnx_metadata_props(METADATA)
    assert json.loads(props["metadata.json"]) == METADATA
    assert props["arch"] == METADATA["arch"] and props["latency_ms"] == "7.5" and props["latency_device"] == "cpu"


@pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:DeprecationWarning")
def test_read_metadata_refuses_files_without_it(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.ReLU()), str(plain))
    (tmp_path / "text.onnx").write_text("not a model")
    not_onnx = "neither a TorchScript nor|onnxruntime cannot load|needs onnx or onnxruntime"  # as installed
    for path, message in ((plain, "carries no metadata.json"), (tmp_path / "text.onnx", not_onnx),
                          (tmp_path / "missing.pt", "does not exist")):
        with pytest.raises(UserError, match=message):
            read_metadata(path)


def test_onnx_without_its_packages_is_a_one_line_user_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)
    with pytest.raises(UserError, match=r"pip install 'oneshot-nas\[onnx\]'"):
        export_onnx(seeded_subnet(), tmp_path / "x.onnx", METADATA, torch.rand(2, 1, 28, 28))
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_cli_exports_both_formats_with_measured_latency(tmp_path: Path, tiny_run: Path, fake_data: Path,
                                                        fast_table: Path) -> None:
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    supernet, _ = load_supernet(tiny_run / "final.pt")
    arch = supernet.space.smallest()
    result = run_module("search.export", "--arch", supernet.space.to_string(arch), "--checkpoint",
                        str(tiny_run / "final.pt"), "--data", str(fake_data), "--calibration-size", "0",
                        "--table", str(fast_table), "--format", "both", "--out", str(tmp_path / "model"))
    pt, onnx_path = tmp_path / "model.pt", tmp_path / "model.onnx"
    assert f"wrote {pt}" in result.stdout and f"wrote {onnx_path}" in result.stdout
    metadata = read_metadata(pt)
    assert read_metadata(onnx_path) == metadata
    assert metadata["arch"] == supernet.space.to_string(arch) and metadata["arch_dict"] == arch
    assert metadata["space"] == "mbv3" and 0 <= metadata["val_top1"] <= 1 and "test_top1" not in metadata
    latency, table = metadata["latency"], load_table(fast_table)
    assert latency["latency_ms"] > 0 and latency["spread_ms"] >= 0 and latency["device"] == "cpu"
    assert latency["fingerprint"] == table.fingerprint
    assert (latency["batch_size"], latency["runtime"]) == (table.batch_size, table.settings.runtime)
    x = torch.rand(3, 1, 28, 28)
    supernet.set_active(arch)
    with torch.no_grad():
        expected = supernet(x)
    for path in (pt, onnx_path):
        torch.testing.assert_close(logits_without_the_project(path, x, tmp_path), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_cli_exports_a_subnet_checkpoint_with_its_own_metrics_and_latency(tmp_path: Path) -> None:
    subnet = seeded_subnet()
    latency = {"median_ms": 6.25, "spread_ms": 0.5, "device": "cpu",
               "fingerprint": {"device": "cpu", "batch_size": 1, "runtime": "torchscript", "threads": 1}}
    checkpoint = save_subnet_checkpoint(tmp_path / "subnet.pt", subnet, SPACE.config, latency=latency,
                                        metrics={"val_top1": 0.875, "test": {"top1": 0.8625}})
    run_module("search.export", "--subnet", str(checkpoint), "--out", str(tmp_path / "exported.pt"))
    metadata = read_metadata(tmp_path / "exported.pt")
    assert (metadata["val_top1"], metadata["test_top1"], metadata["checkpoint"]) == (0.875, 0.8625, str(checkpoint))
    assert {k: metadata["latency"][k] for k in ("latency_ms", "spread_ms", "device", "batch_size", "runtime")} == \
        {"latency_ms": 6.25, "spread_ms": 0.5, "device": "cpu", "batch_size": 1, "runtime": "torchscript"}
    assert metadata["latency"]["fingerprint"] == latency["fingerprint"]
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        expected = subnet(x)
    torch.testing.assert_close(logits_without_the_project(tmp_path / "exported.pt", x, tmp_path), expected,
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("args, message", [
    (["--subnet", "SUPERNET"], "is not a subnet checkpoint of this tool (no 'oneshot-nas/subnet' format tag); it "
                               "is a supernet checkpoint"),
    (["--subnet", "SUPERNET", "--calibration-size", "10"], "do not apply to --subnet"),
    (["--arch", "ARCH", "--scenario", "cpu:5"], "--scenario applies to --results only"),
    (["--arch", "ARCH", "--format", "onnx"], "pip install 'oneshot-nas[onnx]'"),
])
@pytest.mark.slow
def test_bad_input_gets_one_line_and_exit_2(tmp_path: Path, tiny_run: Path, args: list[str], message: str) -> None:
    shadow = tmp_path / "shadow" / "onnxscript"  # an onnxscript that cannot be imported, as if not installed
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    args = [str(tiny_run / "final.pt") if a == "SUPERNET" else SPACE.to_string(SPACE.smallest()) if a == "ARCH"
            else a for a in args]
    env = {"PYTHONPATH": f"{shadow.parent}:{Path(__file__).resolve().parents[1]}"}
    result = run_module("search.export", *args, "--out", str(tmp_path / "x.pt"), env=env, check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "x.pt").exists()
