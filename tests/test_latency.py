import json
import random
from pathlib import Path

import pytest
import torch

from search.latency import (DEFAULT_BATCH_SIZE, build_table, default_table_path, expected_keys, fingerprint, load_table,
                            parse_device, table_for)
from supernet.errors import UserError
from supernet.model import unit_keys
from supernet.space import get_space
from tests.conftest import run_module

CPU = torch.device("cpu")


def test_table_schema_and_prediction(fast_table: Path) -> None:
    table = load_table(fast_table, device=CPU)
    space = get_space("mbv3")
    data = json.loads(fast_table.read_text())
    assert data["format"] == "oneshot-nas/latency-table" and data["version"] == 1 and data["complete"]
    for key in ("cpu", "threads", "torch", "batch_size", "dtype", "runtime"):
        assert key in data["fingerprint"]
    assert set(data["entries"]) == set(expected_keys(space.config))
    arch = space.largest()
    assert table.predict(arch) == pytest.approx(sum(data["entries"][k]["median_ms"] for k in unit_keys(space, arch)))
    assert table.predict(space.smallest()) < table.predict(arch)
    archs = [space.sample(random.Random(i)) for i in range(50)]
    many = table.predict_many(archs)
    assert many.tolist() == pytest.approx([table.predict(a) for a in archs], rel=1e-12)


def test_build_resumes_from_a_partial_table(tmp_path: Path, fast_table: Path) -> None:
    data = json.loads(fast_table.read_text())
    keep = dict(list(data["entries"].items())[:100])
    for entry in keep.values():
        entry["median_ms"] = 123.0  # marks entries that must survive the resumed build
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({**data, "entries": keep, "complete": False}))
    with pytest.raises(UserError, match="incomplete"):
        load_table(partial)
    table = build_table(get_space("mbv3").config, CPU, warmup=0, repeats=1, out=partial, progress=False)
    assert len(table.entries) == len(data["entries"])
    assert sum(e["median_ms"] == 123.0 for e in table.entries.values()) == 100


def test_foreign_device_is_refused_unless_allowed(tmp_path: Path, fast_table: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(fast_table.read_text())
    data["fingerprint"]["cpu"] = "Some Other CPU 9000"
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(data))
    with pytest.raises(UserError, match="measured on another device.*--allow-foreign-table"):
        load_table(foreign, device=CPU)
    load_table(foreign, device=CPU, allow_foreign=True)
    assert "another device" in capsys.readouterr().err


@pytest.mark.parametrize("mangle, message", [
    (lambda text: text[: len(text) // 2], "not valid JSON"),
    (lambda text: json.dumps({**json.loads(text), "version": 0}), "schema version 0"),
    (lambda text: json.dumps({**json.loads(text), "format": "x"}), "not a latency table"),
    (lambda text: json.dumps({**json.loads(text), "entries": {"stem": {"median_ms": "fast"}}}), "'stem' is malformed"),
])
def test_corrupt_tables_get_clear_errors(tmp_path: Path, fast_table: Path, mangle, message: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(mangle(fast_table.read_text()))
    with pytest.raises(UserError, match=message):
        load_table(bad)


def test_table_for_builds_then_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path))
    config = get_space("mbv3").config
    path = default_table_path(config, fingerprint(CPU, DEFAULT_BATCH_SIZE))
    calls = []
    real_build = build_table

    def quick_build(*args, **kwargs):
        calls.append(1)
        return real_build(*args, **{**kwargs, "warmup": 0, "repeats": 1, "progress": False})

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


def test_cli_build_and_show(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    built = run_module("search.latency", "build", "--device", "cpu", "--warmup", "0", "--repeats", "1",
                       "--out", str(out))
    assert f"wrote {out}" in built.stdout and "146/146 units" in built.stdout
    shown = run_module("search.latency", "show", str(out))
    assert "\"batch_size\": 4" in shown.stdout and "predicted latency: smallest" in shown.stdout
    bad = run_module("search.latency", "build", "--device", "gpu", "--out", str(tmp_path / "x.json"), check=False)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "unknown device" in bad.stderr
