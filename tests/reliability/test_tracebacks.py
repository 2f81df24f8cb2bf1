"""Inputs that once ended in a traceback (or a hang) end in one ``error: ...`` line naming the file or flag.

Each class of issue 15's point 11 that is not a table, a journal or a numeric flag: results.json files of a
wrong shape given to report, export and ensemble; ``--resume`` on a ``last.pt`` that is no resumable state;
ImageFolder data the model cannot take; JSON integers over Python's 4,300-digit limit; ``Space.from_indices``
with wrong types; ``export --out`` naming a folder; long file names in atomic writes; checkpoints whose space
asks for a network too large to build. Parsers and loaders are called in-process; a few cases of each go
through ``python -m`` as a user would run them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from search import ensemble as ensemble_cli
from search import export as export_cli
from search.report import write_report
from search.run import read_results
from supernet.checkpoint import PRETRAINED, load_supernet
from supernet.errors import UserError
from tests.conftest import ROOT, run_module
from tests.reliability.schema_variants import variants


def one_line_error(result: Any, *needles: str) -> None:
    """A CLI run ended in exit status 2 and one ``error:`` line holding every needle, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and lines[-1].startswith("error: "), result.stderr[-2000:]
    assert all(n in lines[-1] for n in needles), (lines[-1], needles)


# ---- results.json of a wrong shape -------------------------------------------------------------------
@pytest.fixture(scope="module")
def search_results(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path, fake_data: Path,
                   fast_table: Path) -> dict[str, Any]:
    """A real search's results.json, cut to one scenario, a few records and one verified candidate."""
    from search.evolve import main as evolve

    out = tmp_path_factory.mktemp("search")
    results = evolve(["--latency-ms", "1000", "--population", "3", "--evaluations", "3", "--children", "1",
                      "--tournament", "2", "--verify", "1", "--checkpoint", str(tiny_run / "final.pt"),
                      "--data", str(fake_data), "--table", str(fast_table), "--calibration-size", "16",
                      "--out", str(out)])
    results = json.loads(json.dumps(results))
    (name, winner), = results["winners"].items()
    keep = {winner["arch_string"], results["pareto_front"][0]}
    results["history"] = [r for r in results["history"] if r["arch_string"] in keep]
    results["pareto_front"] = [k for k in results["pareto_front"] if k in keep]
    winner["verified"] = winner["verified"][:1]
    return results


def consume(path: Path, tmp: Path, supernet: Any, checkpoint: str) -> None:
    """What report, export and ensemble do with a results.json before any heavy work, in-process."""
    results = read_results(path)
    write_report(path, tmp / "report.md")
    args = argparse.Namespace(results=str(path), scenario=None, checkpoint=checkpoint, calibration_size=None)
    export_cli.from_supernet(args)
    flags = ensemble_cli.parse_args([str(path), "--latency-ms", "1000", "--checkpoint", checkpoint])
    config = ensemble_cli.resolve(flags, results)
    ensemble_cli.front_of(results, f"latency_ms@{config.device}", supernet.space, str(path))


@pytest.mark.slow
def test_every_wrong_shape_of_results_is_refused_in_one_line_or_read(
        tmp_path: Path, search_results: dict[str, Any], tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key dropped, every value of every other JSON kind: read_results refuses it naming the file and the
    field, or report, export and ensemble all work with it; never another exception."""
    checkpoint = str(tiny_run / "final.pt")
    loaded = load_supernet(checkpoint)
    monkeypatch.setattr(export_cli, "load_supernet", lambda path: loaded)  # once, not once per variant
    path = tmp_path / "results.json"
    path.write_text(json.dumps(search_results))
    consume(path, tmp_path, loaded[0], checkpoint)  # the unchanged file is read by all three
    refused = accepted = 0
    for description, variant in variants(search_results):
        path.write_text(json.dumps(variant))
        try:
            consume(path, tmp_path, loaded[0], checkpoint)
            accepted += 1
        except UserError as err:
            assert len(str(err).splitlines()) == 1 and str(path) in str(err), (description, err)
            refused += 1
        except Exception as err:  # noqa: BLE001  (the point: nothing but a UserError)
            raise AssertionError(f"{description}: {type(err).__name__}: {err}") from err
    assert refused > 100 and accepted > 5, (refused, accepted)


@pytest.mark.parametrize("cli, edit, field", [
    ("search.report", lambda r: r["history"][0]["metrics"].update(val_top1="high"), "history[0].metrics.val_top1"),
    ("search.export", lambda r: r.update(config={"calibration_size": "all"}), "config.calibration_size"),
    ("search.ensemble", lambda r: r["history"][0].update(arch_string=None), "history[0].arch_string"),
])
@pytest.mark.slow
def test_clis_refuse_a_wrong_shape_of_results_in_one_line(tmp_path: Path, search_results: dict[str, Any],
                                                          cli: str, edit: Any, field: str) -> None:
    results = json.loads(json.dumps(search_results))
    edit(results)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    args = {"search.report": [str(path)], "search.export": ["--results", str(path), "--out", str(tmp_path / "x.pt")],
            "search.ensemble": [str(path), "--latency-ms", "1000", "--out", str(tmp_path / "e")]}[cli]
    one_line_error(run_module(cli, *args, check=False), str(path), field)


# ---- --resume on a last.pt that is no interrupted run -------------------------------------------------
def resume_variants(state: dict[str, Any], final: Path) -> dict[str, tuple[Any, str]]:
    """What a user or a copy may leave as OUT/last.pt, and a word of the one-line refusal of each."""
    def without(*path: str) -> dict[str, Any]:
        edited = {**state, "progress": dict(state["progress"])}
        (edited["progress"] if len(path) == 2 else edited).pop(path[-1])
        return edited

    return {
        "final.pt": (torch.load(final, weights_only=True), "a finished run.s final checkpoint"),
        "shipped": (torch.load(PRETRAINED, weights_only=True), "a finished run.s final checkpoint"),
        "no optimizer": ({k: v for k, v in state.items() if k not in ("optimizer", "metrics")},
                         "without optimizer state"),
        "no progress": (without("progress"), "progress is missing"),
        "no step": (without("progress", "step"), "progress.step is missing"),
        "step text": ({**state, "progress": {**state["progress"], "step": "3"}}, "progress.step must be"),
        "optimizer of another model": ({**state, "optimizer": {"state": {}, "param_groups": [{"params": [0]}]}},
                                       "optimizer state in"),
    }


def write_last(folder: Path, payload: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(payload, folder / "last.pt")


@pytest.mark.slow
def test_supernet_resume_refuses_what_is_not_an_interrupted_training(tmp_path: Path, tiny_run: Path) -> None:
    from supernet.train import TrainConfig, train

    state = torch.load(tiny_run / "last.pt", weights_only=True)
    cases = resume_variants(state, tiny_run / "final.pt")
    cases["config text"] = ({**state, "train_config": {**state["train_config"], "epochs": "3"}},
                            "train_config.epochs must be an integer")
    cases["nothing"] = (None, "does not exist")
    for name, (payload, message) in cases.items():
        out = tmp_path / name
        if payload is not None:
            write_last(out, payload)
        with pytest.raises(UserError, match=message) as caught:
            train(TrainConfig(out=str(out)), resume=True)
        assert str(out / "last.pt") in str(caught.value) and "--resume" in str(caught.value), name
    one_line_error(run_module("supernet.train", "--resume", "--out", str(tmp_path / "final.pt"), check=False),
                   str(tmp_path / "final.pt" / "last.pt"), "finished run")


@pytest.fixture(scope="module")
def retrain_last(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path, fake_data: Path) -> Path:
    """OUT/last.pt of a retraining stopped after one step."""
    from search.retrain import RetrainConfig, retrain
    from supernet.space import get_space

    out = tmp_path_factory.mktemp("retrain")
    arch = get_space("mbv3").to_string(get_space("mbv3").smallest())
    retrain(RetrainConfig(arch=arch, checkpoint=str(tiny_run / "final.pt"), data=str(fake_data), mode="head",
                          epochs=1, batch_size=64, stop_after=1, out=str(out)), command=["pytest"])
    return out / "last.pt"


@pytest.mark.slow
def test_retrain_resume_refuses_what_is_not_an_interrupted_retraining(tmp_path: Path, tiny_run: Path,
                                                                      retrain_last: Path) -> None:
    from search.retrain import RetrainConfig, retrain
    from supernet.space import get_space

    state = torch.load(retrain_last, weights_only=True)
    cases = resume_variants(state, tiny_run / "final.pt")
    cases["final.pt"] = (torch.load(tiny_run / "final.pt", weights_only=True), "not a subnet checkpoint")
    cases["shipped"] = (torch.load(PRETRAINED, weights_only=True), "not a subnet checkpoint")
    cases["config text"] = ({**state, "retrain_config": {**state["retrain_config"], "mode": 3}},
                            "retrain_config.mode must be text")
    largest = get_space("mbv3").to_string(get_space("mbv3").largest())
    cases["another architecture"] = ({**state, "arch": largest}, "holds architecture")
    cases["no history"] = ({**state, "progress": {**state["progress"], "history": [{"epoch": 1}]}},
                           r"progress.history\[0\].step is missing")
    for name, (payload, message) in cases.items():
        out = tmp_path / name
        write_last(out, payload)
        with pytest.raises(UserError, match=message) as caught:
            retrain(RetrainConfig(arch="", out=str(out)), resume=True)
        assert str(out / "last.pt") in str(caught.value), name
    one_line_error(run_module("search.retrain", "--resume", "--out", str(tmp_path / "shipped"), check=False),
                   str(tmp_path / "shipped" / "last.pt"), "not a subnet checkpoint")


# ---- ImageFolder data the model cannot take ---------------------------------------------------------
def image_folder(root: Path, classes: int = 2, test_classes: int | None = None) -> Path:
    """A tiny ImageFolder dataset: ``classes`` class folders in train/ (and ``test_classes`` in test/)."""
    from PIL import Image

    for split, count in (("train", classes), ("test", classes if test_classes is None else test_classes)):
        for c in range(count):
            folder = root / split / f"class{c:02d}"
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("L", (8, 8), 20 * c + i).save(folder / f"{i}.png")
    return root


def png_header(width: int, height: int) -> bytes:
    """The first bytes of a greyscale PNG of ``width`` x ``height``: all a decoder reads before the pixels."""
    import struct
    import zlib

    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    iend = b"IEND"
    chunk = lambda body: struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(ihdr) + chunk(b"IDAT" + zlib.compress(b"\0" * 64)) + chunk(iend)


@pytest.mark.parametrize("build, message", [
    (lambda root: image_folder(root, classes=11), "has 11 classes, but the model has 10 outputs"),
    (lambda root: image_folder(root, classes=3, test_classes=2), "test lacks class folder 'class02'"),
    (lambda root: image_folder(root, classes=2, test_classes=3), "test has class folder 'class02' that train/ lacks"),
    (lambda root: (image_folder(root) / "train" / "class00" / "big.png").write_bytes(png_header(20000, 20000)),
     "big.png is too large to decode safely"),  # 400 Mpixel: PIL's own bomb error
    (lambda root: (image_folder(root) / "train" / "class00" / "big.png").write_bytes(png_header(10000, 10000)),
     "big.png is too large to decode safely"),  # 100 Mpixel: PIL only warns
    (lambda root: (image_folder(root) / "train" / "class00" / "big.png").write_bytes(png_header(8200, 8200)),
     r"big.png is 8200x8200 pixels, more than this tool decodes"),
    (lambda root: (image_folder(root) / "train" / "class00" / "cut.png").write_bytes(png_header(8, 8)[:30]),
     "cut.png cannot be read"),
    (lambda root: (image_folder(root) / "test" / "class01" / "x.png").mkdir(), "x.png cannot be read"),
])
def test_image_folders_the_model_cannot_take_are_one_line(tmp_path: Path, build: Any, message: str) -> None:
    from supernet.data import load_splits

    build(tmp_path / "data")
    with pytest.raises(UserError, match=message) as caught:
        load_splits(tmp_path / "data", val_size=1, num_classes=10)
    assert len(str(caught.value).splitlines()) == 1


@pytest.mark.slow
def test_a_trained_model_is_not_scored_on_a_dataset_of_other_classes(tmp_path: Path) -> None:
    """The shipped 10-class supernet given a 2-class folder: one line naming both, before any table is built;
    a model trained on 2 classes (its checkpoint records them) is scored on them."""
    from supernet.data import load_splits

    data = image_folder(tmp_path / "data", classes=2)
    result = run_module("search.evolve", "--latency-ms", "10", "--data", str(data), "--out", str(tmp_path / "run"),
                        check=False)
    one_line_error(result, str(data), "has 2 classes, but checkpoint")
    assert "mbv3-fmnist.pt was trained on 10" in result.stderr
    assert len(load_splits(data, val_size=1, num_classes=10, trained=(2, "checkpoint two.pt")).classes) == 2
    with pytest.raises(UserError, match="has 2 classes, but checkpoint three.pt was trained on 3"):
        load_splits(data, val_size=1, num_classes=10, trained=(3, "checkpoint three.pt"))


@pytest.mark.slow
def test_a_validation_split_too_large_for_the_data_names_the_flag(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "data", classes=2)  # 6 training images
    result = run_module("supernet.train", "--data", str(data), "--epochs", "1", "--out", str(tmp_path / "run"),
                        check=False)
    one_line_error(result, str(data), "has 6 training images", "lower --val-size to at most 5")


@pytest.mark.slow
def test_training_on_eleven_classes_is_refused_in_one_line(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "data", classes=11)
    result = run_module("supernet.train", "--data", str(data), "--epochs", "1", "--val-size", "2",
                        "--out", str(tmp_path / "run"), check=False)
    one_line_error(result, str(data), "11 classes")


# ---- long file names --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["r" * 245 + ".json", "é" * 120 + ".json", "r" * 200 + ".json"])
def test_any_legal_file_name_is_written_and_a_killed_writers_temporary_removed(tmp_path: Path, name: str) -> None:
    """The temporary name (``.NAME.PID.RANDOM.tmp``) of a 249-character target once exceeded NAME_MAX (255)."""
    from supernet.io import write_json
    from tests.reliability.test_atomic_writes import KILLED_WRITER

    target = tmp_path / name
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n", writer.stderr.read()
    finally:
        writer.kill()
        writer.wait()
    (left,) = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(os.fsencode(left.name)) <= 255
    other = tmp_path / (name[:-6] + "x.json")  # shares the long head: its temporaries are not this file's
    write_json(other, [])
    assert left.exists()
    write_json(target, {"complete": True})
    assert not left.exists() and json.loads(target.read_text()) == {"complete": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, other.name])


# ---- JSON integers over Python's 4,300-digit limit, Space.from_indices with wrong types ---------------
HUGE = "1" * 5000  # int("1" * 5000) raises ValueError: Python limits int-string conversion to 4,300 digits


@pytest.mark.slow
def test_json_integers_of_thousands_of_digits_are_one_line(tmp_path: Path) -> None:
    from supernet.io import read_json
    from supernet.space import get_space

    space = get_space("mbv3")
    with pytest.raises(UserError, match="integer of thousands of digits"):
        space.parse('{"stage1.depth": ' + HUGE + "}")
    with pytest.raises(UserError, match=r"stage1.depth=\(a huge integer\) is not one of"):
        space.validate({**space.smallest(), "stage1.depth": int(HUGE[:10]) ** 500})
    path = tmp_path / "results.json"
    path.write_text('{"winners": ' + HUGE + "}")
    with pytest.raises(UserError, match=f"{path} holds a number this tool cannot read"):
        read_json(path, "search results")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)  # json.loads raises RecursionError
    with pytest.raises(UserError, match=f"{deep} is nested too deeply"):
        read_json(deep, "search results")
    one_line_error(run_module("search.export", "--arch", '{"stage1.depth": ' + HUGE + "}", check=False),
                   "integer of thousands of digits")
    one_line_error(run_module("search.report", str(path), check=False), str(path), "cannot read")


@pytest.mark.parametrize("indices, message", [
    ([0.0] * 36, "must be a whole number, got float"),
    (["0"] * 36, "must be a whole number, got str"),
    ([None] * 36, "must be a whole number, got NoneType"),
    ([[0]] * 36, "must be a whole number, got list"),
    ([True] * 36, "must be a whole number, got bool"),
    ([0] * 35, "has 36 indices, got 35"),
    ([-1] + [0] * 35, "option index -1 of stage1.depth is outside"),
    ([3] + [0] * 35, "option index 3 of stage1.depth is outside"),
    ([10 ** 5000] + [0] * 35, r"option index \(a huge integer\) of stage1.depth"),
    (None, "must be a list of option indices, got NoneType"),
    ("0" * 36, "must be a list of option indices, got str"),
    (7, "must be a list of option indices, got int"),
    ({"stage1.depth": 0}, "must be a list of option indices, got dict"),
])
def test_from_indices_refuses_wrong_types_in_one_line(indices: Any, message: str) -> None:
    from supernet.space import get_space

    with pytest.raises(UserError, match=message):
        get_space("mbv3").from_indices(indices)


def test_from_indices_takes_python_and_numpy_integers() -> None:
    import numpy

    from supernet.space import get_space

    space = get_space("mbv3")
    codes = space.to_indices(space.largest())
    assert space.from_indices(codes) == space.from_indices(tuple(codes)) == space.largest()
    assert space.from_indices(numpy.array(codes)) == space.from_indices([numpy.int8(c) for c in codes])


# ---- --out naming a folder where a file belongs --------------------------------------------------------
@pytest.mark.parametrize("out", [".", "/", "folder", "folder/", ".."])
def test_an_out_that_names_a_folder_is_refused_before_any_work(tmp_path: Path, out: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from search.export import output_paths
    from search.report import main as report

    (tmp_path / "folder").mkdir()
    monkeypatch.chdir(tmp_path)
    for fmt in ("both", "torchscript", "onnx"):
        with pytest.raises(UserError, match=f"--out {out} names a folder"):
            output_paths(out, fmt)
    with pytest.raises(UserError, match=f"--out {out} names a folder"):
        report(["results.json", "--out", out])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


@pytest.mark.slow
def test_export_both_formats_to_dot_is_one_line(tmp_path: Path) -> None:
    result = run_module("search.export", "--arch", "k3e3-k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", "--format", "both",
                        "--out", ".", cwd=tmp_path, check=False)
    one_line_error(result, "--out . names a folder")
    assert list(tmp_path.iterdir()) == []


# ---- checkpoints whose space asks for a network too large to build -----------------------------------
def _stages(space: dict[str, Any], count: int) -> dict[str, Any]:
    return {**space, "stages": space["stages"] * count}


@pytest.mark.parametrize("edit, message", [
    (lambda s: {**s, "depths": [2, 3, 100000]}, "depth 100000 is more than the 32"),
    (lambda s: _stages(s, 1000), "4000 stages are more than the 16"),
    (lambda s: {**s, "kernels": [3, 10001]}, "kernel 10001 is more than the 15"),
    (lambda s: {**s, "kernels": [3, 4]}, "kernel sizes must be odd"),
    (lambda s: {**s, "expands": [3, 1000]}, "expand 1000 is more than the 16"),
    (lambda s: {**s, "head_channels": 10 ** 7}, "channels 10000000 is more than the 8192"),
    (lambda s: {**s, "stages": [{**st, "width": 8192} for st in s["stages"]], "expands": [16]},
     "weights, more than the"),
    (lambda s: {**s, "num_classes": 10 ** 9}, "num_classes 1000000000 is more than"),
    (lambda s: {**s, "input_size": 10 ** 6}, "input_size 1000000 is more than"),
    (lambda s: {**s, "depths": list(range(1, 30))}, "29 depths are more than the 8"),
])
def test_a_checkpoint_cannot_ask_for_a_network_too_large_to_build(tmp_path: Path, tiny_run: Path, edit: Any,
                                                                   message: str) -> None:
    import time

    payload = torch.load(tiny_run / "final.pt", weights_only=True)
    path = tmp_path / "crafted.pt"
    torch.save({**payload, "space": edit(payload["space"])}, path)
    start = time.monotonic()
    with pytest.raises(UserError, match=message) as caught:
        load_supernet(path)
    assert str(path) in str(caught.value) and time.monotonic() - start < 5


@pytest.mark.slow
def test_a_crafted_deep_checkpoint_is_refused_at_once_through_the_cli(tmp_path: Path, tiny_run: Path) -> None:
    payload = torch.load(tiny_run / "final.pt", weights_only=True)
    path = tmp_path / "deep.pt"
    torch.save({**payload, "space": {**payload["space"], "depths": [100000]}}, path)
    command = [sys.executable, "-m", "search.export", "--checkpoint", str(path), "--arch", "k3e3|k3e3|k3e3|k3e3",
               "--out", str(tmp_path / "x.pt")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, text=True, capture_output=True, timeout=60)  # once ran for 90 s
    one_line_error(result, str(path), "depth 100000")


# ---- retrain.json and ensemble.json of a wrong shape, found by the report ------------------------------
RETRAINED = {"arch": "k3e3-k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", "mode": "head", "config": {"epochs": 1},
             "flops": 1.5e6, "params": 2.5e4,
             "metrics": {"val_top1_before": 0.2, "val_top1": 0.3,
                         "test": {"top1": 0.25, "macro_precision": 0.2, "macro_recall": 0.25, "macro_f1": 0.22}},
             "latency": {"median_ms": 1.2, "device": "cpu"}, "files": {"confusion": "absent.png"}}
ENSEMBLED = {"budget_ms": 8.0, "members": [{"arch": "k3e3-k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3"}],
             "ensemble": {"val_top1": 0.3, "test_top1": 0.3, "measured_latency_ms": 2.0},
             "best_member": {"val_top1": 0.3, "test_top1": 0.3, "measured_latency_ms": 2.0}, "gain_test_top1": 0.0}


@pytest.mark.parametrize("name, document", [("retrain.json", RETRAINED), ("ensemble.json", ENSEMBLED)])
def test_report_refuses_a_wrong_shape_of_the_runs_it_gathers_in_one_line(tmp_path: Path,
                                                                         search_results: dict[str, Any],
                                                                         name: str, document: dict[str, Any],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import search.report

    for picture in ("plot_search", "scatter_png"):  # they draw results.json, not these files: skip the drawing
        monkeypatch.setattr(search.report, picture, lambda *args: tmp_path / "picture.png")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(search_results))
    (tmp_path / "run").mkdir()
    path = tmp_path / "run" / name
    path.write_text(json.dumps(document))
    write_report(results, tmp_path / "report.md")  # the unchanged file is reported
    refused = 0
    for description, variant in variants(document):
        path.write_text(json.dumps(variant))
        try:
            write_report(results, tmp_path / "report.md")
        except UserError as err:
            assert len(str(err).splitlines()) == 1 and str(path) in str(err), (description, err)
            refused += 1
        except Exception as err:  # noqa: BLE001  (the point: nothing but a UserError)
            raise AssertionError(f"{description}: {type(err).__name__}: {err}") from err
    assert refused > 30


@pytest.mark.parametrize("field, value, message", [
    ("train_config", [1], "train_config must be an object"),
    ("train_config", {"val_size": "5000"}, "train_config.val_size must be a whole number"),
    ("command", 5, "command must be a list"),  # once copied into results.json, which then could not be read
    ("metrics", "good", "metrics must be an object"),
])
def test_checkpoint_metadata_of_a_wrong_shape_is_one_line(tmp_path: Path, tiny_run: Path, field: str, value: Any,
                                                          message: str) -> None:
    payload = torch.load(tiny_run / "final.pt", weights_only=True)
    path = tmp_path / "crafted.pt"
    torch.save({**payload, field: value}, path)
    with pytest.raises(UserError, match=f"checkpoint {path} is malformed: {message}"):
        load_supernet(path)
