"""Every numeric flag of every CLI is checked for finiteness and range at parse time (issue 15, point 7).

A NaN ``--lr`` used to train a model of NaNs; ``--batch-size 1000000000`` or ``--threads 10**20`` ended in a
traceback; a seed of 2**64 in torch's overflow error. Each numeric flag now has a
:class:`~supernet.errors.Number` as its argparse ``type=``, so the refusal is argparse's one line naming the
flag, before any data is read or model built.

Three parts: every numeric flag of every CLI (found by building each CLI's real parser) has a ``Number``
type, and is fed the values just outside its range plus NaN, infinities and huge numbers, in process; the
configs built in code (or read back to resume) check the same ranges; and a representative subset goes
through real ``python -m`` commands for the one-line, exit 2, no-traceback promise end to end.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import search.bo
import search.ensemble
import search.evolve
import search.export
import search.latency
import search.report
import search.retrain
import supernet.train
from search.retrain import RETRAIN_RANGES, RetrainConfig
from supernet.errors import (FLOAT32_MAX, ArgumentParser, Number, UserError, float_range, int_range, positive_float,
                             random_seed, unit_interval)
from supernet.train import TRAIN_RANGES, TrainConfig, train
from tests.conftest import run_module

CLIS: dict[str, Callable[[list[str] | None], Any]] = {
    "supernet.train": supernet.train.main, "search.evolve": search.evolve.main, "search.bo": search.bo.main,
    "search.retrain": search.retrain.main, "search.ensemble": search.ensemble.main,
    "search.export": search.export.main, "search.report": search.report.main, "search.latency": search.latency.main}
REQUIRED = {  # what each CLI (or sub-command) needs besides the flag under test
    "search.evolve": ["--latency-ms", "10"], "search.bo": ["--latency-ms", "10"],
    "search.retrain": ["--arch", "k3e3-k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3"],
    "search.ensemble": ["results.json", "--latency-ms", "10"], "search.export": ["--arch", "x"]}


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def parser_of(module: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The real parser a CLI builds, taken at its ``parse_args`` call (so nothing after it runs)."""
    def capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        raise _Captured(self)
    with monkeypatch.context() as patch:
        patch.setattr(ArgumentParser, "parse_args", capture)
        with pytest.raises(_Captured) as captured:
            CLIS[module]([])
    return captured.value.parser


def numeric_flags(parser: argparse.ArgumentParser, command: list[str]) -> list[tuple[list[str], str, Any]]:
    """``(command words, flag, type)`` of every option with a ``type=`` other than ``str``, sub-commands too."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += numeric_flags(sub, command + [name])
        elif action.option_strings and action.type not in (None, str):
            found.append((command, action.option_strings[0], action.type))
    return found


@pytest.fixture(scope="module")
def every_flag() -> list[tuple[str, list[str], str, Any]]:
    patch = pytest.MonkeyPatch()
    try:
        return [(module, words, flag, kind) for module in CLIS
                for words, flag, kind in numeric_flags(parser_of(module, patch), [])]
    finally:
        patch.undo()


def test_every_numeric_flag_states_its_range(every_flag: list[tuple[str, list[str], str, Any]]) -> None:
    """No bare ``type=int`` / ``type=float`` is left, so no numeric flag takes NaN, inf or a negative count."""
    bare = [f"{module} {' '.join(words)} {flag}" for module, words, flag, kind in every_flag
            if not isinstance(kind, Number)]
    assert not bare, f"numeric flags without a Number type: {bare}"
    assert len(every_flag) >= 68  # the CLIs' numeric flags were all found (68 when written)


def out_of_range(number: Number) -> list[str]:
    """NaN, the infinities, 1e308 and the values just outside ``number``'s range (for integers also 2**64)."""
    values = ["nan", "inf", "-inf", "1e308", "-1e308"]
    if number.kind is int:
        values += [str(int(number.low) - 1), str(int(number.high) + 1), str(2**64), str(-2**64), "1.5", "9" * 5000]
    else:
        values += [repr(number.low) if number.above else repr(number.low - 1e-3),
                   repr(number.high) if number.below else repr(number.high + 1e-3) if number.high < FLOAT32_MAX
                   else "1e39"]
    return values


def test_every_numeric_flag_refuses_what_is_out_of_range(every_flag: list[tuple[str, list[str], str, Any]],
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    """In process, through each CLI's own parser: exit 2 and one ``error:`` line naming the flag, for every
    flag and every bad value (several hundred cases; an interpreter start each would take minutes)."""
    parsers = {module: parser_of(module, monkeypatch) for module in CLIS}
    cases = 0
    for module, words, flag, number in every_flag:
        for value in out_of_range(number):
            argv = [*words, *REQUIRED.get(module, []), f"{flag}={value}"]  # = form: "-1" is not taken for a flag
            with pytest.raises(SystemExit) as exit_:
                parsers[module].parse_args(argv)
            err = capsys.readouterr().err
            assert exit_.value.code == 2, (module, argv)
            assert len(err.splitlines()) == 1 and err.startswith("error: "), (module, argv, err)
            assert f"argument {flag}: " in err and ("must be " in err or "expected " in err), err
            cases += 1
    assert cases > 400


def test_every_numeric_flag_takes_the_ends_of_its_range(every_flag: list[tuple[str, list[str], str, Any]],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The ranges are not tighter than the engine: both ends (or values just inside an open end) parse."""
    parsers = {module: parser_of(module, monkeypatch) for module in CLIS}
    for module, words, flag, number in every_flag:
        for end, strict in ((number.low, number.above), (number.high, number.below)):
            value = end if not strict else (end + 1e-6 if end == number.low else end - 1e-6)
            args = parsers[module].parse_args([*words, *REQUIRED.get(module, []), f"{flag}={value}"])
            assert getattr(args, flag[2:].replace("-", "_")) == number.kind(value), (module, flag, value)


@pytest.mark.parametrize("number, good, bad", [
    (positive_float, ["1e-30", "0.1", "3.4e38"], ["0", "-0.0", "nan", "inf", "1e308", "-1", "abc", ""]),
    (unit_interval, ["0", "0.5", "1"], ["1.0001", "-1e-9", "nan", "inf"]),
    (float_range(0.0, 1.0, below=True), ["0", "0.999"], ["1", "nan"]),
    (random_seed, ["0", str(2**32 - 1)], [str(2**32), str(2**64), "-1", "1e3", "0.5", "nan"]),
    (int_range(), ["1", str(2**31 - 1), " 7 ", "1_000"], ["0", str(2**31), "-5", "9" * 5000]),
])
def test_number_types(number: Number, good: list[str], bad: list[str]) -> None:
    for text in good:
        assert number.contains(number(text)), text
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError) as err:
            number(text)
        assert "\n" not in str(err.value) and number.describe() in str(err.value)


def test_seeds_up_to_the_limit_are_accepted_by_every_seeded_library() -> None:
    """The seed range is what torch, numpy and random all take, with the data order's derived seeds."""
    import random

    import numpy
    top = int(random_seed.high)
    torch.manual_seed(top * 1000 * 1_000_003 + 10**6)  # supernet.data: (seed * 1000 + epoch) * 1_000_003 + batch
    numpy.random.default_rng(top)
    random.Random(top)
    with pytest.raises((RuntimeError, ValueError)):
        numpy.random.seed(top + 1)  # one past: what the limit guards against


@pytest.mark.parametrize("field, value", [
    ("lr", math.nan), ("lr", -0.1), ("momentum", 1.0), ("weight_decay", math.inf), ("label_smoothing", 1.5),
    ("seed", 2**64), ("batch_size", 0), ("epochs", 1.5), ("subset", -1), ("lr", 1e308), ("val_size", True)])
def test_configs_built_in_code_check_the_same_ranges(field: str, value: Any) -> None:
    """TrainConfig.validate (also what a resumed run's stored config goes through) and RetrainConfig.validate."""
    with pytest.raises(UserError, match=f"--{field.replace('_', '-')} must be "):
        dataclasses.replace(TrainConfig(), **{field: value}).validate()
    if field in RETRAIN_RANGES and not (field == "lr" and value == 0.0):  # lr 0: the default, for retraining
        with pytest.raises(UserError, match=f"--{field.replace('_', '-')} must be "):
            RetrainConfig(arch="", **{field: value}).validate()


def test_every_numeric_config_field_has_a_range() -> None:
    for config, ranges in ((TrainConfig, TRAIN_RANGES), (RetrainConfig, RETRAIN_RANGES)):
        numeric = {f.name for f in dataclasses.fields(config) if f.type in ("int", "float")}
        assert numeric == set(ranges), config


def test_a_subset_larger_than_the_data_is_refused(tmp_path: Path, fake_data: Path) -> None:
    config = TrainConfig(data=str(fake_data), out=str(tmp_path), val_size=64, subset=257)
    with pytest.raises(UserError, match=r"--subset 257 is more than the 256 training images"):
        train(config, command=["pytest"])
    assert not (tmp_path / "config.json").exists()


# ---- end to end: real commands ---------------------------------------------------------------------
SUBPROCESS_CASES = [
    (["supernet.train", "--lr", "nan"], "--lr"),
    (["supernet.train", "--momentum", "nan"], "--momentum"),
    (["supernet.train", "--weight-decay", "nan"], "--weight-decay"),
    (["supernet.train", "--label-smoothing", "1.5"], "--label-smoothing"),
    (["supernet.train", "--seed", str(2**64)], "--seed"),
    (["search.evolve", "--latency-ms", "10", "--batch-size", "1000000000"], "--batch-size"),
    (["search.bo", "--latency-ms", "10", "--threads", str(10**20)], "--threads"),
    (["search.evolve", "--latency-ms", "1e308"], "--latency-ms"),
    (["search.retrain", "--arch", "x", "--lr", "inf"], "--lr"),
    (["search.ensemble", "results.json", "--latency-ms", "10", "--max-members", "0"], "--max-members"),
    (["search.export", "--arch", "x", "--calibration-size", "-1"], "--calibration-size"),
    (["search.latency", "build", "--batch-size", str(10**20)], "--batch-size"),
    (["search.latency", "validate", "--seed", "-1"], "--seed"),
]


@pytest.mark.parametrize("args, flag", SUBPROCESS_CASES, ids=[" ".join(a)[:50] for a, _ in SUBPROCESS_CASES])
@pytest.mark.slow
def test_bad_numbers_end_in_one_line_through_the_real_command(tmp_path: Path, args: list[str], flag: str) -> None:
    result = run_module(*args, "--out", str(tmp_path / "out"), cwd=tmp_path, check=False,
                        env={"ONESHOT_CACHE": str(tmp_path / "cache")})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"argument {flag}: must be " in lines[0], lines
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
