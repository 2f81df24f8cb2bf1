"""Latency tables, measurements and journals a later run trusts (issue 15, points 5, 8, 9, 10 and part of 11).

- A table whose probe, scale, offset or units are not plausible timings is refused by the loader (a probe of
  0 ms made every subnet "measured 0.00 ms, meets the budget"), and so is one asking for an absurd batch,
  thread count or repeat count, before anything is allocated; a timing of 0 ms is refused where it is taken.
- ``calibrate`` refuses a correction the loader would refuse before writing anything, in place least of all.
- ``--table`` supplies the latency setting: a flag that conflicts with it is one line naming both, and
  ``results.json`` records the setting used.
- A journal or ``validation.json`` edited by hand fails its checksum in one line; one of the wrong shape,
  with a matching checksum even, is one line too; so is a partial table with bad entries given to a build.
"""
from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search.latency import LatencyTable, _resumable, calibrate, load_table, read_measurements, table_for, validate
from search.problem import Journal
from search.timing import Timer, TimingSettings
from supernet.errors import UserError
from supernet.io import with_checksum
from supernet.space import get_space
from tests.conftest import run_module
from tests.reliability.test_bad_input import damaged_tables

CPU = torch.device("cpu")
SPACE = get_space("mbv3")


def _one_line(err: pytest.ExceptionInfo[UserError]) -> str:
    message = str(err.value)
    assert message.strip() and len(message.splitlines()) == 1, repr(message)
    return message


def _copy(data: Any) -> Any:
    return json.loads(json.dumps(data))


@pytest.fixture(scope="module")
def table_data(fast_table: Path) -> dict[str, Any]:
    return json.loads(fast_table.read_text())


# ---- point 8: implausible timings in a table, or taken by a timer ---------------------------------------
@pytest.mark.parametrize("edit, message", [
    (lambda t: t["probe"].update(ms=0), "lacks its reference probe's speed"),
    (lambda t: t["probe"].update(ms=1e-300), "lacks its reference probe's speed"),
    (lambda t: t["correction"].update(scale=1e-300, offset_ms=0.0), "correction scale of 1e-300, outside 0.001 to 1000"),
    (lambda t: t["correction"].update(scale=1e4), "correction scale of 1e+04, outside"),
    (lambda t: t["correction"].update(offset_ms=1e300), "predicts latencies from"),
    (lambda t: t["entries"]["stem"].update(median_ms=0.0), "entry 'stem' is malformed"),
    (lambda t: t["entries"]["stem"].update(median_ms=1e-300), "entry 'stem' is malformed"),
    (lambda t: t["entries"]["head"].update(count=0), "entry 'head' is malformed"),
    (lambda t: t["entries"]["head"].update(spread_ms=1e300), "entry 'head' is malformed"),
    (lambda t: t["calibration"][0].update(measured_ms=0), "calibration point 0 is malformed"),
    # point 11: what a table asks for is bounded before anything is allocated or timed
    (lambda t: t["fingerprint"].update(batch_size=10 ** 9), "no valid batch size in its fingerprint (1 to 1024"),
    (lambda t: t["settings"].update(threads=10 ** 20), "threads must be an integer from 0 to 1024"),
    (lambda t: t["settings"].update(repeats=10 ** 18), "repeats must be an integer from 1 to 100000"),
    (lambda t: t["settings"].update(warmup=1.5), "warmup must be an integer"),
    (lambda t: t["settings"].update(reference_probe="yes"), "reference_probe must be true or false"),
])
def test_implausible_tables_are_refused(table_data: dict[str, Any], tmp_path: Path,
                                        edit: Callable[[dict], Any], message: str) -> None:
    data = _copy(table_data)
    edit(data)
    (tmp_path / "table.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=re.escape(message)) as err:
        load_table(tmp_path / "table.json")
    _one_line(err)


def test_a_timing_of_zero_is_refused_where_it_is_taken() -> None:
    settings = TimingSettings(warmup=0, repeats=3)
    with pytest.raises(UserError, match="reference probe gave 0.0 ms") as err:
        Timer(CPU, settings, lambda: None, probe_ms=0.0)  # what a table with "probe": {"ms": 0} handed over
    _one_line(err)
    timer = Timer(CPU, settings, lambda: None, probe_ms=1.0)
    timer._timed = lambda fn: 0.0  # a clock that does not move: the probe's time is 0
    with pytest.raises(UserError, match="a reference probe call gave 0.0 ms"):
        timer(lambda: None)
    plain = Timer(CPU, TimingSettings(warmup=0, repeats=3, reference_probe=False))
    plain._timed = lambda fn: 0.0
    with pytest.raises(UserError, match="timing a call gave 0.0 ms"):
        plain(lambda: None)


def test_measurements_of_zero_or_huge_are_refused(tmp_path: Path, fast_table: Path) -> None:
    arch = SPACE.to_string(SPACE.smallest())
    for value in (0, 1e-300, 1e300, math.inf):
        (tmp_path / "m.json").write_text(json.dumps([{"arch": arch, "latency_ms": value}]))
        with pytest.raises(UserError, match=r"entry 0 needs an \"arch\" and a \"latency_ms\" from 0.0001 to 1e\+06 ms"):
            read_measurements(tmp_path / "m.json", SPACE)
    row = {"arch": arch, "measured_ms": 0.0, "spread_ms": 0.0, "raw_median_ms": 1.0}
    (tmp_path / "validation.json").write_text(json.dumps(with_checksum({"key": {}, "subnets": [row]})))
    with pytest.raises(UserError, match="subnet 0 is malformed"):
        read_measurements(tmp_path / "validation.json", SPACE)


# ---- point 5: calibrate writes nothing the loader would refuse ------------------------------------------
@pytest.mark.slow
def test_calibrate_refuses_a_wild_correction_before_writing(tmp_path: Path, fast_table: Path) -> None:
    copy = tmp_path / "table.json"
    copy.write_text(fast_table.read_text())
    before = copy.read_bytes()
    table = load_table(copy)
    archs = [SPACE.sample(random.Random(i)) for i in range(5)]
    # 5000x the table's sums (seconds taken for milliseconds, say) is past the scale bound
    points = [{"arch": SPACE.to_string(a), "measured_ms": 5000 * table.unit_sum(a), "source": "calibrate"}
              for a in archs]
    with pytest.raises(UserError, match=r"calibrate: refitted to these measurements .* correction scale of .* "
                                        r"was not written") as err:
        calibrate(table, points)
    _one_line(err)
    with pytest.raises(UserError, match="was measured at 0 ms, not a time from 0.0001 to 1e"):
        calibrate(table, [{**points[0], "measured_ms": 0}])
    assert copy.read_bytes() == before
    # the CLI, with latencies that once made the table predict up to 1e308 ms
    (tmp_path / "m.json").write_text(json.dumps([{"arch": p["arch"], "latency_ms": 1e300} for p in points]))
    bad = run_module("search.latency", "calibrate", str(copy), str(tmp_path / "m.json"), check=False)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "from 0.0001 to 1e+06 ms" in bad.stderr
    assert copy.read_bytes() == before


# ---- point 9: --table decides the latency setting ----------------------------------------------------------
@pytest.mark.slow
def test_a_flag_that_conflicts_with_the_table_is_one_line(fast_table: Path) -> None:
    config = SPACE.config
    assert table_for(config, CPU, path=fast_table).batch_size == 4
    assert table_for(config, CPU, path=fast_table, batch_size=4, threads=1, runtime="eager").batch_size == 4
    with pytest.raises(UserError, match=re.escape(f"--batch-size 8 conflicts with latency table {fast_table}, "
                                                  "measured with --batch-size 4: leave it out")) as err:
        table_for(config, CPU, path=fast_table, batch_size=8)
    _one_line(err)
    with pytest.raises(UserError, match=re.escape("--threads 2, --runtime torchscript conflict with latency table "
                                                  f"{fast_table}, measured with --threads 1, --runtime eager")):
        table_for(config, CPU, path=fast_table, threads=2, runtime="torchscript")
    bad = run_module("search.latency", "validate", "--table", str(fast_table), "--batch-size", "8", check=False)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "--batch-size 8 conflicts with latency table" in bad.stderr


@pytest.mark.slow
def test_results_record_the_setting_of_the_table_used(tmp_path: Path, tiny_run: Path, fake_data: Path,
                                                      table_data: dict[str, Any]) -> None:
    data = _copy(table_data)  # the same medians, as if measured with a batch of 2 on 2 threads
    data["fingerprint"].update(batch_size=2, threads=2)
    data["settings"].update(threads=2)
    table = tmp_path / "b2.json"
    table.write_text(json.dumps(data))
    budget = f"{LatencyTable(data).predict(SPACE.largest()) + 1:.3f}"
    args = ["search.evolve", "--latency-ms", budget, "--checkpoint", str(tiny_run / "final.pt"), "--data",
            str(fake_data), "--table", str(table), "--algorithm", "random", "--evaluations", "2", "--verify", "1",
            "--calibration-size", "8"]
    bad = run_module(*args, "--threads", "1", "--out", str(tmp_path / "bad"), check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: --threads 1 conflicts")
    run_module(*args, "--out", str(tmp_path / "run"))
    config = json.loads((tmp_path / "run" / "results.json").read_text())["config"]
    assert (config["batch_size"], config["threads"], config["runtime"]) == (2, 2, "eager")


# ---- point 10 and 11: journals ------------------------------------------------------------------------------
def _journal(path: Path) -> dict[str, Any]:
    journal = Journal(path, {"algorithm": "evolution", "seed": 0})
    journal.put_many({"k3e3|k3e3": {"val_top1": 0.5, "latency_ms@cpu": 7.25},
                      "k5e6|k5e6": {"val_top1": 0.625, "latency_ms@cpu": 9.5}})
    journal.measured("cpu|k3e3|k3e3", lambda: {"median_ms": 7.5, "spread_ms": 0.25, "count": 30, "raw_median_ms": 8.0})
    return json.loads(path.read_text())


def _reopen(path: Path) -> Journal:
    return Journal(path, {"algorithm": "evolution", "seed": 0})


def test_a_journal_edited_by_hand_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    written = _journal(path)
    assert _reopen(path).entries == written["entries"]  # the tool's own journal reads back
    path.write_text(path.read_text().replace("0.625", "0.925"))  # one digit: the slower subnet now wins
    with pytest.raises(UserError, match=re.escape(f"search journal {path} was modified after it was written (its "
                                                  "checksum does not match its contents); pass --overwrite")) as err:
        _reopen(path)
    _one_line(err)
    old = {k: v for k, v in written.items() if k != "checksum"}  # as journals were written before checksums
    path.write_text(json.dumps(old))
    with pytest.raises(UserError, match="has no checksum"):
        _reopen(path)


@pytest.mark.parametrize("edit", [
    lambda j: j.update(entries=[]),
    lambda j: j["entries"].update({"k3e3|k3e3": [0.5]}),
    lambda j: j.pop("identity"),
    lambda j: j.update(measurements="none"),
    lambda j: j.pop("entries"),
])
def test_a_journal_of_the_wrong_shape_is_one_line_even_with_its_checksum(tmp_path: Path,
                                                                        edit: Callable[[dict], Any]) -> None:
    path = tmp_path / "journal.json"
    data = {k: v for k, v in _journal(path).items() if k != "checksum"}
    edit(data)
    path.write_text(json.dumps(with_checksum(data)))
    with pytest.raises(UserError, match=re.escape(f"{path}")) as err:
        _reopen(path)
    _one_line(err)


@pytest.fixture(scope="module")
def journal_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _journal(tmp_path_factory.mktemp("journal") / "journal.json")


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.data(), reseal=st.booleans())
def test_fuzz_journal_loader(journal_data: dict[str, Any], tmp_path: Path, data: st.DataObject, reseal: bool) -> None:
    """Any damage to a journal, its checksum recomputed or not, loads as the same records or is one line."""
    blob = data.draw(damaged_tables(journal_data))
    path = tmp_path / "journal.json"
    if reseal:  # a damaged journal whose checksum matches: the shape checks alone must refuse it
        try:
            damaged = json.loads(blob)
        except ValueError:
            damaged = None
        if isinstance(damaged, dict):
            blob = json.dumps(with_checksum({k: v for k, v in damaged.items() if k != "checksum"})).encode()
    path.write_bytes(blob)
    try:
        journal = _reopen(path)
    except UserError as err:
        assert str(err).strip() and len(str(err).splitlines()) == 1, repr(str(err))
        return
    assert all(isinstance(m, dict) for m in [*journal.entries.values(), *journal.measurements.values()])
    if not reseal:
        assert journal.entries == journal_data["entries"]


# ---- point 10 and 11: validation.json -------------------------------------------------------------------
@pytest.fixture(scope="module")
def validated(fast_table: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[LatencyTable, dict[str, Any]]:
    """The table and the ``validation.json`` of 2 subnets validated against it."""
    table = load_table(fast_table, device=CPU)
    out = tmp_path_factory.mktemp("validated")
    validate(table, CPU, subnets=2, seed=1, out=out, progress=False)
    return table, json.loads((out / "validation.json").read_text())


@pytest.mark.parametrize("edit", [
    lambda v: v["subnets"].append("k3e3"),
    lambda v: v["subnets"][0].pop("measured_ms"),
    lambda v: v["subnets"][0].update(raw_median_ms="fast"),
    lambda v: v["subnets"][0].update(arch=7),
    lambda v: v.update(subnets={}),
])
def test_a_validation_of_the_wrong_shape_is_one_line_even_with_its_checksum(
        validated: tuple[LatencyTable, dict[str, Any]], tmp_path: Path, edit: Callable[[dict], Any]) -> None:
    """Resumed by ``validate`` or calibrated on, whatever its rows hold."""
    table, written = validated
    data = {k: v for k, v in _copy(written).items() if k != "checksum"}
    edit(data)
    path = tmp_path / "validation.json"
    path.write_text(json.dumps(with_checksum(data)))
    for read in (lambda: validate(table, CPU, subnets=2, seed=1, out=tmp_path, progress=False),
                 lambda: read_measurements(path, SPACE)):
        with pytest.raises(UserError, match=re.escape(str(path))) as err:
            read()
        _one_line(err)


@pytest.mark.slow
def test_a_validation_edited_by_hand_is_refused(validated: tuple[LatencyTable, dict[str, Any]], tmp_path: Path,
                                                fast_table: Path) -> None:
    table, written = validated
    path = tmp_path / "validation.json"
    path.write_text(json.dumps(written))
    assert len(read_measurements(path, SPACE)) == 2
    data = _copy(written)
    data["subnets"][0]["measured_ms"] *= 10  # one subnet made to look 10x slower
    path.write_text(json.dumps(data))
    for read in (lambda: read_measurements(path, SPACE),
                 lambda: validate(table, CPU, subnets=2, seed=1, out=tmp_path, progress=False)):
        with pytest.raises(UserError, match=re.escape(f"validation {path} was modified after it was written")) as err:
            read()
        _one_line(err)
    bad = run_module("search.latency", "calibrate", str(fast_table), str(path), check=False)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "was modified" in bad.stderr


# ---- point 11: a partial table with bad entries, resumed -------------------------------------------------
@pytest.mark.parametrize("edit, message", [
    (lambda t: t["entries"]["stem"].update(median_ms="fast"), "entry 'stem' is malformed"),
    (lambda t: t["entries"].update(head=[1.0]), "entry 'head' is malformed"),
    (lambda t: t["calibration"].append({"arch": "k3e3", "measured_ms": None}), "calibration point 3 is malformed"),
    (lambda t: t.update(probe={"arch": "x"}), "lacks its reference probe's speed"),
    (lambda t: t.pop("created"), "lacks its reference probe's speed or its creation time"),
])
def test_a_partial_table_with_bad_entries_is_refused_before_resuming(table_data: dict[str, Any], tmp_path: Path,
                                                                     edit: Callable[[dict], Any], message: str) -> None:
    partial = {**_copy(table_data), "complete": False, "correction": None}
    edit(partial)
    path = tmp_path / "table.json"
    path.write_text(json.dumps(partial))
    fresh = {k: table_data[k] for k in ("format", "version", "fingerprint", "space", "settings")}
    with pytest.raises(UserError, match=re.escape(f"partial latency table {path}")) as err:
        _resumable(path, fresh)
    assert message in _one_line(err) and "delete it to start the build over" in str(err.value)
