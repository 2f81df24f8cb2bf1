import json
import random
import statistics
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from search.accuracy import agreement, fit_affine, kendall_tau, spearman_rho
from search.latency import (DEFAULT_BATCH_SIZE, LatencyTable, build_table, calibrate, default_table_path, refit,
                            expected_keys, fingerprint, load_table, parse_device, partial_path, read_measurements,
                            table_for, validate)
from search.timing import Timer, TimingSettings, prepare
from supernet.errors import UserError
from supernet.family import unit_keys
from supernet.model import Subnet
from supernet.sampler import encode, score
from supernet.space import get_space
from tests.conftest import run_module

CPU = torch.device("cpu")
FAST = TimingSettings(warmup=0, repeats=1)


def test_table_schema_and_prediction(fast_table: Path) -> None:
    table = load_table(fast_table, device=CPU)
    space = get_space("mbv3")
    data = json.loads(fast_table.read_text())
    assert data["format"] == "oneshot-nas/latency-table" and data["version"] == 2 and data["complete"]
    for key in ("cpu", "cpu_isa", "threads", "torch", "batch_size", "dtype", "runtime"):
        assert key in data["fingerprint"]
    assert set(data["entries"]) == set(expected_keys(space.config))
    assert all({"median_ms", "spread_ms", "count", "raw_median_ms"} <= set(e) for e in data["entries"].values())
    assert data["probe"]["ms"] > 0 and len(data["calibration"]) == 3 == data["correction"]["points"]
    arch = space.largest()
    unit_sum = sum(data["entries"][k]["median_ms"] for k in unit_keys(space, arch))
    c = data["correction"]
    assert table.predict(arch) == pytest.approx(c["scale"] * unit_sum + c["offset_ms"])
    assert table.predict(space.smallest()) < table.predict(arch)
    archs = [space.sample(random.Random(i)) for i in range(50)]
    expected = [table.predict(a) for a in archs]
    assert table.predict_many(archs).tolist() == pytest.approx(expected, rel=1e-12)
    assert score(space, encode(space, archs), table.metric_table())[:, 0].tolist() == pytest.approx(expected, rel=1e-9)


def test_paired_timing_cancels_changes_of_machine_speed() -> None:
    """Each call is timed with a probe call in the same machine "phase": the result is the median of their
    ratios times ``probe_ms``, whatever the phases. The work's own cost varies too, so that the median of
    ratios differs from their mean, from the ratio of medians and from a probe paired with the wrong call."""
    warmup_speeds = [1.0, 2.2]
    speeds = [1.0, 1.5, 2.2, 1.0, 1.0, 3.0, 1.5, 2.0, 1.2]  # one per timed call, no pattern
    costs = [3.0, 3.3, 2.9, 3.1, 5.0, 3.0, 2.8, 3.2, 3.05]  # the work's time at speed 1: median 3.05, mean 3.26
    phase = {"speed": 1.0}

    def simulated(cost_of_call: list[float], speed_of_call: list[float]) -> Callable[[], float]:
        calls = iter(zip(cost_of_call, speed_of_call))  # runs out if the timer makes more calls than asked

        def work() -> float:
            cost, phase["speed"] = next(calls)
            return cost * phase["speed"]
        return work

    def probe() -> float:
        return 1.0 * phase["speed"]

    settings = TimingSettings(warmup=2, repeats=9)
    timer = Timer(CPU, settings, probe, probe_ms=1.25)
    timer._timed = lambda fn: fn()  # the simulated calls return their own duration
    result = timer(simulated([9.9, 9.9] + costs, warmup_speeds + speeds))
    assert result["count"] == 9 and timer.probe_times == speeds
    assert result["median_ms"] == pytest.approx(3.05 * 1.25)
    assert result["spread_ms"] == pytest.approx((3.25 - 2.95) * 1.25)  # quartiles of the sorted ratios
    raw = sorted(c * s for c, s in zip(costs, speeds))  # what the wall clock saw
    assert result["raw_median_ms"] == pytest.approx(raw[4]) and raw[4] != pytest.approx(3.05 * 1.25)
    plain = Timer(CPU, TimingSettings(warmup=0, repeats=9, reference_probe=False))
    plain._timed = lambda fn: fn()
    alone = plain(simulated(costs, speeds))
    assert alone["median_ms"] == alone["raw_median_ms"] == pytest.approx(raw[4]) and plain.probe_times == []
    with pytest.raises(ValueError, match="probe"):
        Timer(CPU, settings)


def test_torchscript_runtime_computes_what_eager_does() -> None:
    space = get_space("mbv3")
    torch.manual_seed(0)
    module = Subnet(space.config, space.sample(random.Random(0))).eval()
    torch.manual_seed(1)
    eager = prepare(module, (2, 1, 28, 28), CPU, "eager")
    torch.manual_seed(1)
    scripted = prepare(module, (2, 1, 28, 28), CPU, "torchscript")
    with torch.no_grad():
        assert torch.allclose(eager(), scripted(), atol=1e-5)


def test_accuracy_figures() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    brute = sum((x[i] - x[j]) * (y[i] - y[j]) > 0 for i, j in pairs) - sum((x[i] - x[j]) * (y[i] - y[j]) < 0 for i, j in pairs)
    assert kendall_tau(x, y) == pytest.approx(brute / len(pairs))
    # Spearman without ties: 1 - 6 sum d^2 / (n (n^2 - 1)); d = (1, 1, 1, 1, 0) -> 1 - 24 / 120
    assert spearman_rho(x, y) == pytest.approx(0.8)
    assert spearman_rho([3, 1, 2], [30, 10, 20]) == pytest.approx(1.0)
    # ties share the mean rank: ranks (0.5, 0.5, 2) against (0, 1, 2)
    assert spearman_rho([1, 1, 2], [1, 2, 3]) == pytest.approx(np.corrcoef([0.5, 0.5, 2], [0, 1, 2])[0, 1])
    figures = agreement([1.0, 1.08, 0.8, 2.0], [1.0, 1.0, 1.0, 2.1])
    assert figures["within_5_pct"] == 50 and figures["within_10_pct"] == 75
    assert figures["mape_pct"] == pytest.approx(100 * (0 + 0.08 + 0.2 + 0.1 / 2.1) / 4)
    assert figures["worst"][0] == {"index": 2, "error_pct": pytest.approx(-20.0)}
    sums = [5.0, 7.0, 9.5, 12.0]
    assert fit_affine(sums, [0.9 * s + 1.5 for s in sums]) == pytest.approx((0.9, 1.5))
    assert fit_affine([4.0], [6.0]) == (1.5, 0.0)


def test_build_resumes_units_and_calibration(tmp_path: Path, fast_table: Path) -> None:
    data = json.loads(fast_table.read_text())
    keep = dict(list(data["entries"].items())[:100])
    marked = {key: entry["median_ms"] * 1.25 for key, entry in keep.items()}
    for key, entry in keep.items():  # marks entries that must survive the resumed build; realistic values, so
        entry["median_ms"] = marked[key]  # that the correction fitted from them stays a plausible one
    target = tmp_path / "table.json"
    partial = partial_path(target)  # where a killed build of target left what it measured
    partial.write_text(json.dumps({**data, "entries": keep, "calibration": data["calibration"][:2],
                                   "correction": None, "complete": False}))
    with pytest.raises(UserError, match="incomplete"):
        load_table(partial)
    table = build_table(get_space("mbv3").config, CPU, settings=FAST, calibration_subnets=3, out=target,
                        progress=False, keep_busy=True)
    assert table.path == target and load_table(target).data["complete"] and not partial.exists()
    assert len(table.entries) == len(data["entries"])
    # Finished at the median probe speed of the resumed build: kept entries are rescaled, not remeasured.
    factor = table.probe_ms / data["probe"]["ms"]
    assert all(table.entries[key]["median_ms"] == pytest.approx(value * factor) for key, value in marked.items())
    assert [p["measured_ms"] for p in table.data["calibration"][:2]] == pytest.approx(
        [p["measured_ms"] * factor for p in data["calibration"][:2]])
    assert len(table.data["calibration"]) == 3 and table.data["probe"]["arch"] == data["probe"]["arch"]


def test_foreign_device_is_refused_unless_allowed(tmp_path: Path, fast_table: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in (("cpu", "Some Other CPU 9000"), ("cpu_isa", ["sse4_2"]), ("runtime", "torchscript")):
        data = json.loads(fast_table.read_text())
        data["fingerprint"][key] = value
        foreign = tmp_path / "foreign.json"
        foreign.write_text(json.dumps(data))
        with pytest.raises(UserError, match=f"measured on another device or setting \\({key}:.*--allow-foreign-table"):
            load_table(foreign, device=CPU)
        load_table(foreign, device=CPU, allow_foreign=True)
        assert "another device" in capsys.readouterr().err
    data = json.loads(fast_table.read_text())
    data["fingerprint"]["torch"] = "1.0.0"
    foreign.write_text(json.dumps(data))
    load_table(foreign, device=CPU)
    assert "made with torch 1.0.0" in capsys.readouterr().err


@pytest.mark.parametrize("mangle, message", [
    (lambda d: "{" + json.dumps(d)[: len(json.dumps(d)) // 2], "not valid JSON"),
    (lambda d: {**d, "version": 1}, "schema version 1; this tool reads version 2: rebuild"),
    (lambda d: {**d, "format": "x"}, "not a latency table"),
    (lambda d: {**d, "entries": {**d["entries"], "stem": {"median_ms": "fast"}}}, "'stem' is malformed"),
    (lambda d: {**d, "correction": {"scale": -1, "offset_ms": 0}}, "correction scale of -1, outside 0.001 to 1000"),
    (lambda d: {**d, "correction": {"scale": 1, "offset_ms": "0"}}, "malformed correction"),
    (lambda d: {**d, "probe": None}, "reference probe"),
    (lambda d: {**d, "calibration": "none"}, "'calibration'"),
])
def test_corrupt_tables_get_clear_errors(tmp_path: Path, fast_table: Path, mangle, message: str) -> None:
    bad = tmp_path / "bad.json"
    mangled = mangle(json.loads(fast_table.read_text()))
    bad.write_text(mangled if isinstance(mangled, str) else json.dumps(mangled))
    with pytest.raises(UserError, match=message):
        load_table(bad)


def test_table_for_builds_then_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path))
    config = get_space("mbv3").config
    path = default_table_path(config, fingerprint(CPU, DEFAULT_BATCH_SIZE))
    with pytest.raises(UserError, match="no latency table for this device.*search.latency build"):
        table_for(config, CPU, build=False)
    calls = []
    real_build = build_table

    def quick_build(*args, **kwargs):
        calls.append(1)
        return real_build(*args, **{**kwargs, "settings": FAST, "calibration_subnets": 2, "progress": False})

    monkeypatch.setattr("search.latency.build_table", quick_build)
    first = table_for(config, CPU)
    assert first.path == path and path.exists() and calls == [1]
    second = table_for(config, CPU)
    assert calls == [1] and second.entries == first.entries


def test_unknown_devices_are_refused() -> None:
    with pytest.raises(UserError, match="unknown device 'tpu7'"):
        parse_device("tpu7")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            parse_device("cuda:0")


def test_validation_resumes_and_calibration_refits(tmp_path: Path, fast_table: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    table = load_table(fast_table, device=CPU)
    measured = []
    real_measure = LatencyTable.measure

    def counting(self, *args, **kwargs):
        measured.append(1)
        return real_measure(self, *args, **kwargs)

    monkeypatch.setattr(LatencyTable, "measure", counting)
    first = validate(table, CPU, subnets=4, seed=3, out=tmp_path / "v", progress=False)
    assert len(measured) == 4 and len(first["subnets"]) == 4
    again = validate(table, CPU, subnets=4, seed=3, out=tmp_path / "v", progress=False)
    assert len(measured) == 4 and again["subnets"] == first["subnets"]  # measurements reused, none taken

    # Deployed subnets that run 2x the table's sum + 1 ms: calibration must move the correction towards that.
    space = table.space
    archs = [space.sample(random.Random(100 + i)) for i in range(40)]
    file = tmp_path / "deployed.json"
    file.write_text(json.dumps([{"arch": space.to_string(a), "latency_ms": 2 * table.unit_sum(a) + 1} for a in archs]))
    copy = tmp_path / "table.json"
    copy.write_text(fast_table.read_text())
    change = calibrate(load_table(copy), read_measurements(file, space))
    assert change["after"]["mape_pct"] < change["before"]["mape_pct"]
    assert change["after"]["mape_pct"] < 1e-6  # the deployed measurements are the ground truth once given
    correction = load_table(copy).data["correction"]
    assert correction["points"] == 40 and correction["source"] == "calibrate"
    assert (correction["scale"], correction["offset_ms"]) == pytest.approx((2.0, 1.0))
    again = calibrate(load_table(copy), read_measurements(file, space))  # the same subnets again: replaced
    assert again["correction_after"]["points"] == 40 and len(load_table(copy).data["calibration"]) == 43
    few = tmp_path / "few.json"
    few.write_text(json.dumps([{"arch": space.to_string(a), "latency_ms": 2 * table.unit_sum(a) + 1} for a in archs[:2]]))
    fresh = tmp_path / "fresh.json"
    fresh.write_text(fast_table.read_text())
    assert calibrate(load_table(fresh), read_measurements(few, space))["correction_after"]["source"] == "build+calibrate"


@pytest.mark.slow
def test_cli_build_show_validate_calibrate(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    built = run_module("search.latency", "build", "--device", "cpu", "--warmup", "0", "--repeats", "1",
                       "--calibration-subnets", "2", "--keep-busy", "--out", str(out))
    assert f"wrote {out}" in built.stdout and "146/146 units" in built.stdout
    shown = run_module("search.latency", "show", str(out))
    assert "\"batch_size\": 4" in shown.stdout and "predicted latency: lowest of any subnet" in shown.stdout
    assert "fitted on 2 subnets" in shown.stdout
    checked = run_module("search.latency", "validate", "--table", str(out), "--subnets", "5",
                         "--out", str(tmp_path / "v"))
    for line in ("table (corrected, 2 points)", "table (sum of unit medians)", "FLOPs (affine fit", "Kendall tau",
                 "within 10%", "worst cases"):
        assert line in checked.stdout
    result = json.loads((tmp_path / "v" / "validation.json").read_text())
    assert len(result["subnets"]) == 5 and result["complete"]
    assert (tmp_path / "v" / "validation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fixed = run_module("search.latency", "calibrate", str(out), str(tmp_path / "v" / "validation.json"))
    assert "(5 points)" in fixed.stdout and "after" in fixed.stdout
    assert json.loads(out.read_text())["correction"]["points"] == 5

    bad = run_module("search.latency", "build", "--device", "gpu", "--out", str(tmp_path / "x.json"), check=False)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "unknown device" in bad.stderr
    (tmp_path / "m.json").write_text(json.dumps([{"arch": "k9e9", "latency_ms": 3}]))
    bad = run_module("search.latency", "calibrate", str(out), str(tmp_path / "m.json"), check=False)
    assert bad.returncode == 2 and "m.json: entry 0" in bad.stderr and bad.stderr.strip().count("\n") == 0
    bad = run_module("search.latency", "validate", "--table", str(tmp_path / "none.json"), check=False)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_table_is_timed_with_cuda_events(tmp_path: Path) -> None:
    gpu = torch.device("cuda", 0)
    table = build_table(get_space("mbv3").config, gpu, settings=TimingSettings(warmup=2, repeats=3),
                        calibration_subnets=2, out=tmp_path / "gpu.json", progress=False, keep_busy=True)
    assert table.fingerprint["gpu"] == torch.cuda.get_device_name(gpu) and "driver" in table.fingerprint
    result = validate(load_table(tmp_path / "gpu.json", device=gpu), gpu, subnets=3, out=tmp_path / "v",
                      progress=False)
    assert all(r["measured_ms"] > 0 for r in result["subnets"])


def test_a_fit_that_would_predict_negative_latency_falls_back_to_a_scale(fast_table: Path) -> None:
    data = json.loads(fast_table.read_text())
    table = load_table(fast_table)
    space = table.space
    big = [space.largest(), space.sample(random.Random(1)), space.sample(random.Random(2))]
    sums = [table.unit_sum(a) for a in big]
    # Three noisy timings of large subnets whose line crosses zero well above the smallest subnet's sum.
    slope = 3.0
    low = table.unit_sum(space.smallest())
    data["calibration"] = [{"arch": space.to_string(a), "measured_ms": slope * (x - 0.9 * min(sums)) + 0.01 * i,
                            "source": "build"} for i, (a, x) in enumerate(zip(big, sums))]
    refit(data)
    c = data["correction"]
    assert c["offset_ms"] == 0.0 and c["scale"] > 0 and c["scale"] * low > 0
    assert c["scale"] == pytest.approx(statistics.median(p["measured_ms"] / x for p, x in zip(data["calibration"], sums)))


def test_lowest_and_highest_bound_every_prediction(fast_table: Path) -> None:
    table = load_table(fast_table)
    space = table.space
    predicted = table.predict_many([space.sample(random.Random(i)) for i in range(300)]).tolist()
    low, high = table.lowest_ms(), table.highest_ms()
    assert low <= min(predicted) and max(predicted) <= high
    assert low <= table.predict(space.smallest()) and table.predict(space.largest()) <= high
