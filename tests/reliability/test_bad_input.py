"""Bad input gets a one-line error and exit status 2, never a traceback (issue 8, point 3).

Two parts. A matrix of bad inputs, each given to a real ``python -m`` command: malformed or foreign
architectures, checkpoints, latency tables and datasets, and nonsense flags; every case fails before any
expensive work. Then hypothesis fuzzes the two parsers of files and strings a user hands over, the
architecture parser and the latency-table loader, in process: whatever the input, they return something
usable or raise :class:`UserError` with a one-line message; any other exception is a bug.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from search.latency import MAX_BATCH_SIZE, describe, load_table
from search.timing import MAX_CALLS, plausible_ms
from search.space import CategoricalSpace
from supernet.checkpoint import save_checkpoint, save_subnet_checkpoint
from supernet.errors import UserError
from supernet.model import Subnet, Supernet
from supernet.space import SpaceConfig, StageConfig, get_space
from tests.conftest import run_module

SPACE = get_space("mbv3")
SMALLEST = SPACE.to_string(SPACE.smallest())


# ---- the matrix: real commands, one line, exit status 2 -------------------------------------------
def _bad_files(root: Path, tiny_run: Path, fake_data: Path, fast_table: Path) -> dict[str, str]:
    """Every bad file the matrix names, written under ``root``; keys are the placeholders used in CASES."""
    final = tiny_run / "final.pt"
    files = {"CKPT": final, "DATA": fake_data, "TABLE": fast_table}

    other = SpaceConfig(name="other", in_channels=1, input_size=28, num_classes=10, stem_channels=8, stem_stride=2,
                        stages=(StageConfig(width=8, stride=1), StageConfig(width=16, stride=2)), head_channels=32)
    files["OTHER_SPACE_CKPT"] = save_checkpoint(root / "other-space.pt", Supernet(other),
                                                train_config={"val_size": 64})  # what the fake data allows
    payload = torch.load(final, weights_only=True)
    payload["space"]["head_channels"] *= 2  # same space name, weights of another shape
    torch.save(payload, files.setdefault("RESHAPED_CKPT", root / "reshaped.pt"))
    files["SUBNET_CKPT"] = save_subnet_checkpoint(root / "subnet.pt", Subnet(SPACE.config, SPACE.smallest()),
                                                  SPACE.config)
    blob = final.read_bytes()
    (files.setdefault("TRUNCATED_CKPT", root / "truncated.pt")).write_bytes(blob[:len(blob) // 2])
    (files.setdefault("RANDOM_CKPT", root / "random.pt")).write_bytes(random.Random(0).randbytes(4096))

    table = json.loads(fast_table.read_text())
    edits = {"FOREIGN_TABLE": lambda t: t["fingerprint"].update(cpu="Imaginary CPU 9000"),
             "V1_TABLE": lambda t: t.update(version=1),
             "OTHER_SPACE_TABLE": lambda t: t["space"].update(name="other"),
             "INCOMPLETE_TABLE": lambda t: t["entries"].pop("stage2.block1.k5e4")}
    for key, edit in edits.items():
        changed = json.loads(json.dumps(table))
        edit(changed)
        (files.setdefault(key, root / f"{key.lower()}.json")).write_text(json.dumps(changed))
    (files.setdefault("LIST_TABLE", root / "list.json")).write_text("[1, 2, 3]")
    (files.setdefault("TRUNCATED_TABLE", root / "truncated.json")).write_text(fast_table.read_text()[:5000])

    def broken_data(name: str, damage: Callable[[bytes], bytes], file: str = "train-images-idx3-ubyte.gz") -> Path:
        folder = shutil.copytree(fake_data, root / name)
        (folder / file).write_bytes(damage((folder / file).read_bytes()))
        return folder

    def inside_gzip(edit: Callable[[bytearray], None]) -> Callable[[bytes], bytes]:
        def damage(blob: bytes) -> bytes:
            raw = bytearray(gzip.decompress(blob))
            edit(raw)
            return gzip.compress(bytes(raw))
        return damage

    files["MISSING_DATA"] = root / "no-such-dataset"
    files["TRUNCATED_DATA"] = broken_data("truncated-gz", lambda blob: blob[:-500])
    files["FLIPPED_DATA"] = broken_data(  # damage inside the deflate stream: zlib's error, not gzip's
        "flipped-gz", lambda blob: bytes(b ^ 0xFF if 20 <= i < 80 else b for i, b in enumerate(blob)))
    files["WRONG_MAGIC_DATA"] = broken_data("wrong-magic", inside_gzip(lambda raw: raw.__setitem__(3, 0x01)))
    files["BAD_LABELS_DATA"] = broken_data(  # a label of class 200 of 10
        "bad-labels", inside_gzip(lambda raw: raw.__setitem__(8, 200)), "train-labels-idx1-ubyte.gz")
    files["MISSING_RESULTS"] = root / "no-such-results.json"
    return {key: str(path) for key, path in files.items()}


ARCH_ARGS = ["--checkpoint", "CKPT", "--out", "OUT"]
TRAIN_ARGS = ["--val-size", "64", "--out", "OUT"]
SEARCH_ARGS = ["--checkpoint", "CKPT", "--data", "DATA", "--table", "TABLE", "--out", "OUT"]
CASES = [
    # malformed or out-of-space architectures
    (["search.export", "--arch", "k3e3-k5x4|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", *ARCH_ARGS], "block 'k5x4' is not of the form"),
    (["search.retrain", "--arch", '{"stage1.depth": 2,', *ARCH_ARGS], "architecture JSON is malformed"),
    (["search.export", "--arch", SMALLEST.replace("k3", "k9", 1), *ARCH_ARGS], "stage1.block0.kernel=9 is not one of"),
    (["search.retrain", "--arch", "k3e3-" * 4 + SMALLEST, *ARCH_ARGS], "stage1 has more than 4 blocks"),
    (["search.export", "--arch", json.dumps({**SPACE.smallest(), "stage2.depth": 5}), *ARCH_ARGS],
     "stage2.depth=5 is not one of [2, 3, 4]"),
    (["search.retrain", "--arch", "k3e3|k3e3|k3e3", *ARCH_ARGS], "has 3 stages, space 'mbv3' has 4"),
    (["search.export", "--arch", '{"stage9.depth": 2}', *ARCH_ARGS], "key 'stage9.depth' is not in space 'mbv3'"),
    # checkpoints of another space or kind, truncated, random
    (["search.evolve", "--latency-ms", "10", *SEARCH_ARGS, "--checkpoint", "OTHER_SPACE_CKPT"],
     "is for another search space ('mbv3'"),
    (["search.export", "--arch", SMALLEST, *ARCH_ARGS, "--checkpoint", "RESHAPED_CKPT"], "does not match its space 'mbv3'"),
    (["search.retrain", "--arch", SMALLEST, *ARCH_ARGS, "--checkpoint", "SUBNET_CKPT"], "it is a subnet checkpoint"),
    (["search.retrain", "--arch", SMALLEST, *ARCH_ARGS, "--checkpoint", "TRUNCATED_CKPT"],
     "is corrupt, truncated or not a supernet checkpoint"),
    (["search.export", "--arch", SMALLEST, *ARCH_ARGS, "--checkpoint", "RANDOM_CKPT"],
     "is corrupt, truncated or not a supernet checkpoint"),
    # latency tables of another device, schema or space, not a table, truncated, incomplete
    (["search.latency", "validate", "--table", "FOREIGN_TABLE"], "was measured on another device or setting (cpu:"),
    (["search.latency", "validate", "--table", "V1_TABLE"], "has schema version 1; this tool reads version 2"),
    (["search.latency", "validate", "--table", "OTHER_SPACE_TABLE", "--space", "mbv3"], "is for another search space ('other'"),
    (["search.latency", "show", "LIST_TABLE"], "is not a latency table of this tool"),
    (["search.latency", "show", "TRUNCATED_TABLE"], "is not valid JSON"),
    (["search.latency", "show", "INCOMPLETE_TABLE"], "is incomplete (1 unit entries missing"),
    # missing or corrupt datasets
    (["supernet.train", "--data", "MISSING_DATA", *TRAIN_ARGS], "no dataset in"),
    (["supernet.train", "--data", "TRUNCATED_DATA", *TRAIN_ARGS], "is unreadable or corrupt"),
    (["supernet.train", "--data", "WRONG_MAGIC_DATA", *TRAIN_ARGS], "is not an IDX file of the expected kind"),
    (["supernet.train", "--data", "FLIPPED_DATA", *TRAIN_ARGS], "is unreadable or corrupt"),
    (["supernet.train", "--data", "BAD_LABELS_DATA", *TRAIN_ARGS], "label 200"),
    # nonsense flags
    (["search.bo", "--latency-ms", "-5"], "argument --latency-ms: must be a number above 0"),
    (["search.evolve", "--latency-ms", "10", "--evaluations", "0"], "--evaluations: must be an integer from 1 to"),
    (["search.evolve", "--latency-ms", "10", "--device", "tpu"], "unknown device 'tpu'"),
    (["supernet.train", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["search.evolve", "--latency-ms", "10", "--bogus-flag"], "unrecognized argument --bogus-flag"),
    (["search.bo", "--latency-ms", "10", "--evaluations", "abc"], "argument --evaluations: expected an integer"),
    (["search.evolve", "--evaluations", "5"], "one of the arguments --latency-ms --scenarios is required"),
    (["search.ensemble", "MISSING_RESULTS"], "the following arguments are required: --latency-ms"),
    (["search.evolve", "--scenarios", "cpu:10,cpu:10"], "names a scenario twice"),
    (["search.retrain", "--epochs", "3"], "one of --arch or --results is required"),
    (["search.latency", "build", "--repeats", "x"], "search.latency build: argument --repeats: expected an integer"),
    (["search.report", "MISSING_RESULTS"], "no-such-results.json does not exist"),
]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path, fake_data: Path,
              fast_table: Path) -> dict[str, str]:
    return _bad_files(tmp_path_factory.mktemp("bad-input"), tiny_run, fake_data, fast_table)


@pytest.mark.parametrize("args, message", CASES, ids=[f"{i:02d}-{a[0]}" for i, (a, _) in enumerate(CASES)])
@pytest.mark.slow
def test_bad_input_gets_one_line_and_exit_2(bad_files: dict[str, str], tmp_path: Path, args: list[str],
                                            message: str) -> None:
    args = [str(tmp_path / "out") if a == "OUT" else bad_files.get(a, a) for a in args]
    result = run_module(*args, cwd=tmp_path, env={"ONESHOT_CACHE": str(tmp_path / "cache")}, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert message in lines[0]
    assert not (tmp_path / "out").exists()  # refused before writing anything


# ---- fuzzing the architecture parser ---------------------------------------------------------------
def _one_line(err: UserError) -> None:
    message = str(err)
    assert message.strip() and len(message.splitlines()) == 1, repr(message)
    event("refused")  # --hypothesis-show-statistics shows how many were refused and how many accepted


def _parses_or_refuses(value: Any) -> None:
    """``SPACE.parse(value)`` is a valid architecture that round-trips, or a one-line :class:`UserError`."""
    try:
        arch = SPACE.parse(value)
    except UserError as err:
        _one_line(err)
        return
    event("accepted")
    assert SPACE.validate(arch) == arch
    text = SPACE.to_string(arch)
    assert SPACE.to_string(SPACE.parse(text)) == text
    if isinstance(value, str) and not value.strip().startswith("{"):
        assert SPACE.parse(text) == arch  # a string sets inactive blocks to the smallest options, as to_string drops them


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                        max_size=4),
                           max_leaves=12)
arch_chars = st.sampled_from("ke0123456789|-{}\" :,\n") | st.characters()


@st.composite
def near_miss_strings(draw: st.DrawFn) -> str:
    """A canonical string of a random architecture with a few characters dropped, doubled, replaced or added."""
    text = list(SPACE.to_string(SPACE.sample(random.Random(draw(st.integers(0, 2 ** 32))))))
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(text) - 1)) if text else 0
        edit = draw(st.sampled_from(["drop", "double", "replace", "insert"]))
        if edit == "drop" and text:
            del text[i]
        elif edit == "double" and text:
            text.insert(i, text[i])
        elif edit == "replace" and text:
            text[i] = draw(arch_chars)
        else:
            text.insert(i, draw(arch_chars))
    return "".join(text)


@st.composite
def near_miss_dicts(draw: st.DrawFn) -> Any:
    """A random architecture dict with a key removed, added or set to another (JSON) value."""
    arch: dict[str, Any] = SPACE.sample(random.Random(draw(st.integers(0, 2 ** 32))))
    key = draw(st.sampled_from(list(arch)))
    edit = draw(st.sampled_from(["delete", "add", "set", "option"]))
    if edit == "delete":
        del arch[key]
    elif edit == "add":
        arch[draw(st.text(max_size=20))] = draw(json_values)
    elif edit == "set":
        arch[key] = draw(json_values)
    else:
        arch[key] = draw(st.sampled_from([2, 3, 4, 5, 6, 7, 9, 3.0, "3", True]))
    return arch


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.text(), near_miss_strings()))
@example("k" + "9" * 5000 + "e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3")  # more digits than int() converts
@example('{"stage1.depth": ' + "[" * 100_000)  # deeper than the JSON decoder's recursion limit
@pytest.mark.slow
def test_fuzz_architecture_strings(text: str) -> None:
    _parses_or_refuses(text)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(json_values, near_miss_dicts()), st.booleans())
@example(5, False)  # a number where a measurements or results file should hold an architecture
@pytest.mark.slow
def test_fuzz_architecture_json(value: Any, as_text: bool) -> None:
    """JSON values as ``--arch`` text and as already-decoded values (results files, measurements, checkpoints)."""
    _parses_or_refuses(json.dumps(value) if as_text else value)
    if isinstance(value, dict):  # the generic space has no parser, but validates the same dicts
        generic = CategoricalSpace(SPACE.choices, name=SPACE.name)
        try:
            assert generic.validate(value) == value
        except UserError as err:
            _one_line(err)


# ---- fuzzing the latency-table loader --------------------------------------------------------------
@pytest.fixture(scope="module")
def table_data(fast_table: Path) -> dict[str, Any]:
    return json.loads(fast_table.read_text())


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-table") / "table.json"


@st.composite
def json_paths(draw: st.DrawFn, data: Any) -> list[Any]:
    """A path from the root of ``data`` into it: a top-level key, then a random walk down that mostly goes on
    to a leaf (the numbers the loader must check) but may stop at any container."""
    path: list[Any] = []
    node = data
    while isinstance(node, (dict, list)) and node and (not path or draw(st.integers(0, 3)) > 0):
        key = draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node))))
        path.append(key)
        node = node[key]
    return path


@st.composite
def damaged_tables(draw: st.DrawFn, original: dict[str, Any]) -> bytes:
    """``original`` with 1-3 values deleted or replaced by random JSON or numbers, or keys added; half of them then truncated or
    with a few bytes overwritten (most of those no longer parse: the other half exercises the schema checks)."""
    data = json.loads(json.dumps(original))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(json_paths(data))
        if not path:
            data = draw(json_values)
            continue
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        edit = draw(st.sampled_from(["delete", "json", "number", "add"]))
        if edit == "add" and isinstance(parent[path[-1]], dict):  # an unexpected key, its name maybe multi-line
            parent[path[-1]][draw(st.text(max_size=12))] = draw(json_values)
        elif edit == "delete":
            del parent[path[-1]]
        else:  # "number" probes the ranges: negative, zero, NaN, infinite or huge medians, scales, batch sizes
            parent[path[-1]] = draw(json_values if edit == "json" else st.floats() | st.integers())
    blob = json.dumps(data, allow_nan=True).encode()
    damage = draw(st.sampled_from(["none", "none", "truncate", "overwrite"]))
    if damage == "truncate":
        return blob[:draw(st.integers(0, len(blob)))]
    if damage == "overwrite" and blob:
        out = bytearray(blob)
        for _ in range(draw(st.integers(1, 4))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    return blob


def _loads_or_refuses(path: Path, **checks: Any) -> None:
    """``load_table(path, **checks)`` predicts plausible latencies and times sanely, or raises a one-line UserError."""
    try:
        table = load_table(path, **checks)
    except UserError as err:
        _one_line(err)
        return
    event("accepted")
    with contextlib.redirect_stdout(io.StringIO()):
        describe(table)  # what `python -m search.latency show` prints
    space = table.space
    for arch in (space.smallest(), space.largest(), space.sample(random.Random(0))):
        latency = table.predict(arch)
        assert plausible_ms(latency), (space.to_string(arch), latency)  # not 0 ms, not 1e308 ms
        assert table.predict_many([arch]).item() == pytest.approx(latency)
    # what a timer built from the table would run with: a probe speed that is a time, a batch it can allocate
    assert table.probe_ms is None or plausible_ms(table.probe_ms), table.probe_ms
    assert 1 <= table.batch_size <= MAX_BATCH_SIZE and table.settings.repeats <= MAX_CALLS


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
@pytest.mark.slow
def test_fuzz_table_loader(table_data: dict[str, Any], scratch: Path, data: st.DataObject) -> None:
    scratch.write_bytes(data.draw(damaged_tables(table_data)))
    _loads_or_refuses(scratch)
    _loads_or_refuses(scratch, device=torch.device("cpu"), space=SPACE.config)


@pytest.mark.parametrize("edit, message", [  # holes the fuzz found (or could, rarely), kept as plain cases
    (lambda t: t["correction"].update(offset_ms=-1000.0), "predicts latencies from"),
    (lambda t: t["entries"]["stem"].update(median_ms=math.inf), "entry 'stem' is malformed"),
    (lambda t: t["entries"]["head"].update(median_ms=10 ** 400), "entry 'head' is malformed"),
    (lambda t: t["fingerprint"].pop("batch_size"), "has no valid batch size in its fingerprint"),
    (lambda t: t["space"].update(stem_stride=0), "must be a positive integer"),
    (lambda t: t["space"].update(depths=[2, 10 ** 18]), "holds a malformed space config (depth 1000000000000000000 is more than the 32"),
    (lambda t: t["calibration"].append(7), "calibration point 3 is malformed"),
    (lambda t: t["space"].update({"two\nlines": 1}), "unexpected keyword argument 'two lines'"),
    (lambda t: t.update(load=True), 'has a malformed "load" record'),
    (lambda t: t.update(load={"busy": False, "reasons": [], "cpu_share": "x"}), 'has a malformed "load" record'),
])
def test_table_loader_refuses(table_data: dict[str, Any], tmp_path: Path, edit: Callable[[dict], Any],
                              message: str) -> None:
    data = json.loads(json.dumps(table_data))
    edit(data)
    (tmp_path / "table.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=re.escape(message)):
        load_table(tmp_path / "table.json")
