"""A latency table measured while the machine is busy is not trusted (search.load).

The busy phase is simulated as the real thing happens: each timed call loses the core for a while (a sleep
inside the call), the probe as much as the units. The timing thread's CPU time is simulated as wall time less
those sleeps, so that the tests see a quiet machine when they mean one, whatever else runs beside them.
"""
import json
import re
import shutil
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

import search.latency as latency
import search.timing as timing
from search.latency import (DEFAULT_BATCH_SIZE, BusyTable, LatencyTable, build_table, busy_path, default_table_path, fingerprint,
                            load_table, partial_path, table_for)
from search.load import MIN_CPU_SHARE, STALE_PROBE_RATIO, assess, check_on_use
from search.timing import Timer, TimingSettings
from supernet.space import get_space
from tests.conftest import run_module

CPU = torch.device("cpu")
FAST = TimingSettings(warmup=0, repeats=1)
CONFIG = get_space("mbv3").config


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """``machine["busy"] = True`` starts a busy phase: every call made by what search.latency times (units,
    calibration subnets, the reference probe) is off the core for 2 ms of its wall time."""
    phase = {"busy": False}
    off_core = [0.0]

    def slowed(call: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            out = call()
            if phase["busy"]:
                started = time.perf_counter()
                time.sleep(0.002)
                off_core[0] += time.perf_counter() - started
            return out
        return run

    monkeypatch.setattr(timing, "cpu_time", lambda: time.perf_counter() - off_core[0])
    real_prepare, real_probe = latency.prepare, latency.make_probe
    monkeypatch.setattr(latency, "prepare", lambda *args, **kwargs: slowed(real_prepare(*args, **kwargs)))
    monkeypatch.setattr(latency, "make_probe", lambda *args, **kwargs: slowed(real_probe(*args, **kwargs)))
    return phase


def quick(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make table_for's builds quick; returns the list that counts them."""
    calls: list[int] = []
    real = build_table

    def quick_build(*args, **kwargs):
        calls.append(1)
        return real(*args, **{**kwargs, "settings": FAST, "calibration_subnets": 2, "progress": False})
    monkeypatch.setattr(latency, "build_table", quick_build)
    return calls


@pytest.mark.slow
def test_a_build_in_a_busy_phase_is_set_aside_and_one_at_rest_is_saved(tmp_path: Path, machine) -> None:
    path = tmp_path / "cpu.json"
    machine["busy"] = True
    with pytest.raises(BusyTable, match=r"busy while latency table .*cpu\.json was measured \(the timing thread held "
                                        r"a core \d+% of the time\).*not saved there.*--keep-busy") as caught:
        build_table(CONFIG, CPU, settings=FAST, calibration_subnets=2, out=path, progress=False)
    assert not path.exists() and not partial_path(path).exists()  # nothing of it would be resumed either
    aside = caught.value.table
    assert aside.path == busy_path(path) == tmp_path / "cpu.busy.json" and aside.path.exists()
    load = json.loads(aside.path.read_text())["load"]
    assert load["busy"] and load["cpu_share"] < MIN_CPU_SHARE and load["kept"] is False
    assert check_on_use(load_table(aside.path), CPU) == f"it was measured while the machine was busy ({load['reasons'][0]})"

    kept = build_table(CONFIG, CPU, settings=FAST, calibration_subnets=2, out=path, progress=False, keep_busy=True)
    assert kept.path == path and kept.data["load"]["busy"] and kept.data["load"]["kept"]
    machine["busy"] = False
    assert check_on_use(load_table(path), CPU) is None  # kept on purpose: the user's choice

    quiet = build_table(CONFIG, CPU, settings=FAST, calibration_subnets=2, out=path, progress=False, overwrite=True)
    assert not quiet.data["load"]["busy"] and quiet.data["load"]["cpu_share"] > MIN_CPU_SHARE
    assert check_on_use(load_table(path), CPU) is None


@pytest.mark.slow
def test_search_uses_a_busy_table_once_and_measures_again_next_time(tmp_path: Path, machine,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path))
    cached = default_table_path(CONFIG, fingerprint(CPU, DEFAULT_BATCH_SIZE))
    builds = quick(monkeypatch)
    machine["busy"] = True
    first = table_for(CONFIG, CPU)
    assert first.path == busy_path(cached) and not cached.exists() and builds == [1]
    assert "busy while the latency table was measured" in capsys.readouterr().err
    machine["busy"] = False
    second = table_for(CONFIG, CPU)
    assert second.path == cached and builds == [1, 1] and not second.data["load"]["busy"]
    table_for(CONFIG, CPU)
    assert builds == [1, 1]  # quiet and cached: used


@pytest.mark.slow
def test_a_cached_table_measured_under_load_is_rebuilt_on_use(tmp_path: Path, fast_table: Path, machine,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A table from before load was assessed (no "load" field) whose probe ran at a third of the speed: the
    check on use finds the probe much faster now and rebuilds, saying why. A table whose build was assessed
    quiet needs a larger gap than this VM's speed phases (2x); the same table given by path is the user's."""
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path))
    cached = default_table_path(CONFIG, fingerprint(CPU, DEFAULT_BATCH_SIZE))
    cached.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(fast_table.read_text())
    data.pop("load", None)
    factor = 2 * STALE_PROBE_RATIO  # well past the ratio, whatever this machine's phase now
    data["probe"]["ms"] *= factor
    for entry in data["entries"].values():
        entry["median_ms"] *= factor
    cached.write_text(json.dumps(data))
    shutil.copy(cached, tmp_path / "given.json")
    builds = quick(monkeypatch)

    given = table_for(CONFIG, CPU, path=tmp_path / "given.json")
    assert builds == [] and given.probe_ms == data["probe"]["ms"] and capsys.readouterr().err == ""

    rebuilt = table_for(CONFIG, CPU)
    err = capsys.readouterr().err
    assert builds == [1] and rebuilt.path == cached and rebuilt.probe_ms < data["probe"]["ms"] / STALE_PROBE_RATIO
    assert f"rebuilding cached latency table {cached}: its reference probe took" in err and "busy" in err

    # The thresholds against a pinned speed now: two real probes a moment apart differ by this VM's phases (1.7x
    # seen in CI), which is what QUIET_STALE_RATIO allows for and no test can hold still.
    now = rebuilt.timer(CPU).probe_speed()
    monkeypatch.setattr(Timer, "probe_speed", lambda self, calls=None: now)
    quiet = {**data, "load": {"busy": False, "kept": False, "cpu_share": 1.0, "reasons": []}}
    slightly = {**quiet, "probe": {**data["probe"], "ms": now * 1.2}}
    assert check_on_use(LatencyTable(slightly), CPU) is None  # within this VM's phases
    much = {**quiet, "probe": {**data["probe"], "ms": now * 4}}
    assert "was measured while the machine was busy" in check_on_use(LatencyTable(much), CPU)


def test_a_busy_table_given_by_path_is_used_with_a_warning(tmp_path: Path, fast_table: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(fast_table.read_text())
    data["load"] = {**data.get("load", {}), "busy": True, "kept": False, "reasons": ["made up for this test"]}
    (tmp_path / "busy.json").write_text(json.dumps(data))
    table_for(CONFIG, CPU, path=tmp_path / "busy.json")
    assert "may be too slow: it was measured while the machine was busy (made up for this test)" in capsys.readouterr().err


def test_a_busy_machine_now_does_not_condemn_the_table(fast_table: Path, machine) -> None:
    data = json.loads(fast_table.read_text())
    data.pop("load", None)
    data["probe"]["ms"] *= 10  # would be stale, were the machine quiet now
    machine["busy"] = True
    assert check_on_use(LatencyTable(data), CPU) is None
    machine["busy"] = False
    assert check_on_use(LatencyTable(data), CPU) is not None


def test_units_out_of_order_and_spread_count_only_for_real_medians(fast_table: Path) -> None:
    """Make one block's 3x3 choices slower than its 7x7 ones, as the busy table of issue 20 had them."""
    data = json.loads(fast_table.read_text())
    entries = {k: {**e, "median_ms": 1.0, "spread_ms": 0.1} for k, e in data["entries"].items()}
    timer = Timer(CPU, TimingSettings(reference_probe=False))
    assert not assess(timer, CONFIG, entries, TimingSettings())["busy"]  # ties are not out of order
    for key in [k for k in entries if k.startswith(("stage1.block", "stage2.block")) and ".k3" in k]:
        entries[key]["median_ms"] = 2.0
    load = assess(timer, CONFIG, entries, TimingSettings())
    assert load["busy"] and load["out_of_order"] > 0.05 * load["pairs"] and "out of order" in load["reasons"][0]
    few = {k: {**e, "median_ms": 2.0 if k.startswith("stage1.block0.k3") else 1.0} for k, e in entries.items()}
    some = assess(timer, CONFIG, few, TimingSettings())  # a few, as a quiet mbv3-fsdd build has: not busy
    assert 0 < some["out_of_order"] <= 0.05 * some["pairs"] and not some["busy"]
    assert load["cpu_share"] is None  # nothing timed
    assert assess(timer, CONFIG, entries, FAST)["out_of_order"] is None  # one call per unit: noise, not load
    noisy = {k: {**e, "spread_ms": e["median_ms"]} for k, e in entries.items()}
    assert "varied by 100%" in assess(timer, CONFIG, noisy, TimingSettings())["reasons"][0]


@pytest.mark.slow
def test_show_says_how_busy_the_machine_was(fast_table: Path) -> None:
    out = run_module("search.latency", "show", str(fast_table)).stdout
    assert re.search(r"machine while measuring: (quiet|BUSY) \(timing thread on a core \d+%\)", out), out
