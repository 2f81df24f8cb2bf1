"""Every CLI, driven with generated flags and files: one line, a documented exit status, never a traceback.

Each command starts from a cheap argument list that works (tiny data, the tiny supernet, a fast table, a
small search's results). Hypothesis then changes one to three of its flags, taken from the command's own
argparse parser so that a new flag is fuzzed without editing this file: a flag is set to a generated value
(nonsense numbers such as ``nan``, ``1e308`` and ``2**64``, words, huge strings, and paths to bad files: empty,
random bytes, a truncated checkpoint, JSON of the wrong shape, a folder, a FIFO, a missing path), dropped,
given twice, or an unknown flag is added. Each run happens in process through :func:`run_cli`, as
``python -m`` would run it, in a fresh folder; whatever the arguments, it must

- exit 0 (the arguments were fine), 2 (bad input, a failed write) or 3 (training diverged);
- on a non-zero exit, print exactly one ``error:`` line, as the last line, and no traceback;
- leave no temporary file behind, and raise nothing but ``SystemExit``.

A run that is still working after :data:`BUDGET_S` seconds was given arguments it accepted; it is stopped
and counted as such. CI runs :data:`EXAMPLES` cases per command with a fixed seed; a longer run by hand:
``ONESHOT_FUZZ_EXAMPLES=500 ONESHOT_FUZZ_SEED=7 python -m pytest tests/reliability/test_cli_fuzz.py``. The
counts of each outcome are printed at the end of each command's test (``-s`` shows them).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import importlib
import io
import json
import os
import random
import shutil
import signal
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from supernet.errors import ArgumentParser, run_cli
from supernet.space import get_space

EXAMPLES = int(os.environ.get("ONESHOT_FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("ONESHOT_FUZZ_SEED", "0"))
BUDGET_S = 20
EXIT_STATUSES = {0, 2, 3}
SPACE = get_space("mbv3")
SMALLEST = SPACE.to_string(SPACE.smallest())

SEARCH = ["--checkpoint", "CKPT", "--data", "DATA", "--table", "TABLE", "--evaluations", "2", "--calibration-size",
          "16", "--verify", "1", "--latency-ms", "BUDGET", "--out", "OUT"]
# Each command's cheap working arguments. Placeholders in capitals are replaced by the files made below.
COMMANDS: dict[str, list[str]] = {
    "supernet.train": ["--data", "DATA", "--epochs", "1", "--batch-size", "64", "--val-size", "64",
                       "--calib-size", "32", "--stop-after", "1", "--out", "OUT"],
    "search.evolve": [*SEARCH, "--population", "2", "--tournament", "2", "--children", "1"],
    "search.bo": [*SEARCH, "--initial", "2"],
    "search.retrain": ["--arch", SMALLEST, "--checkpoint", "CKPT", "--data", "DATA", "--epochs", "1",
                       "--stop-after", "1", "--batch-size", "32", "--subset", "64", "--out", "OUT"],
    "search.ensemble": ["RESULTS", "--latency-ms", "BUDGET2", "--max-members", "2", "--out", "OUT"],
    "search.export": ["--arch", SMALLEST, "--checkpoint", "CKPT", "--data", "DATA", "--table", "TABLE",
                      "--calibration-size", "16", "--out", "OUT/subnet.pt"],
    "search.report": ["RESULTS", "--out", "OUT/report.md"],
    "search.latency build": ["build", "--warmup", "0", "--repeats", "1", "--calibration-subnets", "3",
                             "--keep-busy", "--out", "OUT/table.json"],
    "search.latency validate": ["validate", "--table", "TABLE", "--subnets", "2", "--out", "OUT"],
    "search.latency calibrate": ["calibrate", "TABLE_COPY", "MEASURED", "--out", "OUT/table.json"],
    "search.latency show": ["show", "TABLE"],
}
NUMBERS = ["nan", "inf", "-inf", "1e308", "-1e308", "-1", "0", "-0", "1", "3", "0.5", "1e-300", "1e9", "1e20",
           str(2 ** 64), str(2 ** 63 - 1), "9" * 5000]
WORDS = ["", " ", "abc", "cpu", "cuda:0", "cuda:99", "tpu", "cpu:10", "cpu:abc,cpu:", "☃", "x" * 300, "-", "--",
         "eager", "{}", "[]", '{"a": 1}', SMALLEST, SMALLEST.replace("k3", "k9"), "k3e3|k3e3"]
FILES = ["EMPTY", "RANDOM", "TRUNCATED_CKPT", "JSON_LIST", "WRONG_RESULTS", "FOLDER", "FIFO", "MISSING", "CKPT",
         "TABLE", "RESULTS", "DATA"]
UNKNOWN = ["--no-such-flag", "--latency", "--latncy-ms", "-x", "--out=", "--seed=nan"]


# ---- the files the arguments name ---------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path, fake_data: Path, fast_table: Path) -> dict[str, str]:
    """Good and bad files for the placeholders, made once; commands get their own copies where they write."""
    from search.latency import load_table
    from tests.conftest import run_module

    root = tmp_path_factory.mktemp("fuzz-files")
    table = json.loads(fast_table.read_text())
    table["correction"] = {"scale": 1.0, "offset_ms": 0.0, "points": 0, "source": "test"}  # never non-positive
    (root / "table.json").write_text(json.dumps(table))
    loaded = load_table(root / "table.json")
    space = SPACE
    budget = (loaded.predict(space.smallest()) + loaded.predict(space.largest())) / 2
    search = root / "search"
    run_module("search.evolve", *[_fill(a, {"CKPT": str(tiny_run / "final.pt"), "DATA": str(fake_data),
                                            "TABLE": str(root / "table.json"), "BUDGET": f"{budget:.3f}",
                                            "OUT": str(search)}) for a in COMMANDS["search.evolve"]])
    blob = (tiny_run / "final.pt").read_bytes()
    (root / "truncated.pt").write_bytes(blob[:len(blob) // 2])
    (root / "empty").write_bytes(b"")
    (root / "random").write_bytes(random.Random(0).randbytes(2048))
    (root / "list.json").write_text("[1, 2, 3]")
    results = json.loads((search / "results.json").read_text())
    results["winners"] = "none"
    (root / "wrong-results.json").write_text(json.dumps(results))
    (root / "folder").mkdir()
    os.mkfifo(root / "fifo")
    measured = [{"arch": SPACE.to_string(SPACE.sample(random.Random(i))), "latency_ms": 5.0 + i} for i in range(3)]
    (root / "measured.json").write_text(json.dumps(measured))
    return {"CKPT": str(tiny_run / "final.pt"), "DATA": str(fake_data), "TABLE": str(root / "table.json"),
            "RESULTS": str(search / "results.json"), "BUDGET": f"{budget:.3f}", "BUDGET2": f"{2 * budget:.3f}",
            "MEASURED": str(root / "measured.json"), "TRUNCATED_CKPT": str(root / "truncated.pt"),
            "EMPTY": str(root / "empty"), "RANDOM": str(root / "random"), "JSON_LIST": str(root / "list.json"),
            "WRONG_RESULTS": str(root / "wrong-results.json"), "FOLDER": str(root / "folder"),
            "FIFO": str(root / "fifo"), "MISSING": str(root / "no-such-file")}


def _fill(arg: str, values: dict[str, str]) -> str:
    """``arg`` with a placeholder (a whole argument, or the part before ``/``) replaced by its value."""
    head, _, tail = arg.partition("/")
    if head in values:
        return values[head] + ("/" + tail if tail else "")
    return arg


# ---- the flags each command takes, from its own parser --------------------------------------------
class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def _parser_of(command: str) -> argparse.ArgumentParser:
    """The argparse parser ``command`` builds (its sub-command's, for ``search.latency build``)."""
    module, _, sub = command.partition(" ")

    def capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Parsed(self)

    original = ArgumentParser.parse_args
    ArgumentParser.parse_args = capture  # type: ignore[method-assign]
    try:
        importlib.import_module(module).main([])
    except _Parsed as parsed:
        parser = parsed.parser
    finally:
        ArgumentParser.parse_args = original  # type: ignore[method-assign]
    if sub:
        (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = commands.choices[sub]
    return parser


def _flags(parser: argparse.ArgumentParser) -> list[tuple[str, bool]]:
    """Every option of ``parser`` but ``--help`` (and ``--no-X`` halves), with whether it takes a value."""
    flags = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        flags.append((max(action.option_strings, key=len), action.nargs != 0))
    return flags


def _positionals(base: list[str], parser: argparse.ArgumentParser) -> list[int]:
    """Indices in ``base`` of the positional arguments (after a sub-command name, if any)."""
    takes_value = {option: action.nargs != 0 for action in parser._actions for option in action.option_strings}
    indices, i = [], 0
    while i < len(base):
        if base[i].startswith("--"):
            i += 2 if takes_value.get(base[i], True) else 1
        else:
            indices.append(i)
            i += 1
    return indices


# ---- generated argument lists ------------------------------------------------------------------
VALUES = st.sampled_from(NUMBERS) | st.sampled_from(WORDS) | st.sampled_from(FILES) | st.text(max_size=20)


def _without(argv: list[str], flag: str, takes_value: bool) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        if argv[i] == flag:
            i += 2 if takes_value else 1
        else:
            out.append(argv[i])
            i += 1
    return out


@st.composite
def arguments(draw: st.DrawFn, command: str) -> list[str]:
    """The command's working arguments with one to three edits."""
    parser = _parser_of(command)
    argv = list(COMMANDS[command])
    flags = _flags(parser)
    for _ in range(draw(st.integers(1, 3))):
        edits = ["set", "set", "set", "drop", "twice"] if flags else []
        edit = draw(st.sampled_from([*edits, "positional", "unknown"]))
        flag, takes_value = draw(st.sampled_from(flags)) if edit in edits else ("", False)
        if edit == "positional":
            where = [i for i in _positionals(argv, parser) if argv[i] != command.partition(" ")[2]]
            if where:
                argv[draw(st.sampled_from(where))] = draw(VALUES)
        elif edit == "unknown":
            argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(UNKNOWN)))
        elif edit == "drop":
            argv = _without(argv, flag, takes_value)
        else:
            if edit == "set":
                argv = _without(argv, flag, takes_value)
            argv += [flag, draw(VALUES)] if takes_value else [flag]
    return argv


# ---- one run ---------------------------------------------------------------------------------
class _Budget(BaseException):
    """Raised in a run still working after BUDGET_S seconds: its arguments were accepted."""


@contextlib.contextmanager
def _time_budget(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise _Budget()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run(command: str, argv: list[str], folder: Path) -> tuple[int | None, str]:
    """Run ``command`` in process on ``argv`` in ``folder``: its exit status (None: still working) and stderr."""
    module = importlib.import_module(command.partition(" ")[0])
    err, out = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), _time_budget(BUDGET_S):
            run_cli(module.main, argv)
    except SystemExit as exit_:
        return (exit_.code if isinstance(exit_.code, int) else 1), err.getvalue()
    except _Budget:
        return None, err.getvalue()
    finally:
        os.chdir(cwd)
        torch.set_num_threads(1)
    raise AssertionError("run_cli returned instead of exiting")


def check(command: str, argv: list[str], status: int | None, stderr: str, folder: Path) -> str:
    """Assert the promises on one run; return its outcome for the tally."""
    shown = f"python -m {command.partition(' ')[0]} {' '.join(argv)}"
    assert "Traceback" not in stderr, f"{shown} printed a traceback:\n{stderr[-3000:]}"
    leftovers = [p for p in folder.rglob("*.tmp")]
    assert not leftovers, f"{shown} left temporary files: {leftovers}"
    if status is None:
        return "accepted, still working"
    assert status in EXIT_STATUSES, f"{shown} exited {status}, not one of {sorted(EXIT_STATUSES)}:\n{stderr[-3000:]}"
    if status == 0:
        return "exit 0"
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], \
        f"{shown} exited {status} without exactly one final error line:\n{stderr[-3000:]}"
    return f"exit {status}"


def _case_folder(root: Path, files: dict[str, str]) -> dict[str, str]:
    """A fresh folder under ``root`` for one run: the placeholder values, with OUT and a table to calibrate."""
    (root / "out").mkdir(parents=True)
    shutil.copy(files["TABLE"], root / "table.json")
    return {**files, "OUT": str(root / "out"), "TABLE_COPY": str(root / "table.json")}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.slow
def test_the_arguments_fuzzing_starts_from_work(command: str, files: dict[str, str], tmp_path: Path) -> None:
    """Each command's unedited arguments exit 0: edits are then one to three steps from a working call."""
    values = _case_folder(tmp_path, files)
    filled = [_fill(a, values) for a in COMMANDS[command]]
    status, stderr = run(command, filled, tmp_path)
    assert status == 0, f"python -m {command} {' '.join(filled)} exited {status}:\n{stderr[-3000:]}"


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.slow
def test_every_cli_answers_generated_arguments_in_one_line(command: str, files: dict[str, str],
                                                           tmp_path: Path) -> None:
    tally: collections.Counter[str] = collections.Counter()
    counter = iter(range(10 ** 9))

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(argv=arguments(command))
    def case(argv: list[str]) -> None:
        folder = tmp_path / f"case{next(counter)}"
        values = _case_folder(folder, files)
        filled = [_fill(a, values) for a in argv]
        status, stderr = run(command, filled, folder)
        tally[check(command, filled, status, stderr, folder)] += 1

    case()
    print(f"\n{command}: {sum(tally.values())} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))


@pytest.mark.parametrize("command, argv", [
    ("search.latency show", ["show", "FIFO"]),
    ("search.export", ["--subnet", "FIFO", "--out", "OUT/subnet.pt"]),
    ("search.report", ["FIFO", "--out", "OUT/report.md"]),
    ("search.latency calibrate", ["calibrate", "TABLE_COPY", "x" * 300, "--out", "OUT/table.json"]),
    ("search.report", ["RESULTS", "--retrain", "9" * 5000, "--out", "OUT/report.md"]),
    ("search.latency calibrate", ["calibrate", "TABLE_COPY", "MEASURED", "--out", "\x00"]),
])
def test_inputs_that_cannot_be_read_are_one_line(command: str, argv: list[str], files: dict[str, str],
                                                 tmp_path: Path) -> None:
    """Found by the fuzz: a FIFO given as an input blocked the read for ever; a name too long for the system
    and a NUL byte in a path ended in tracebacks from pathlib."""
    values = _case_folder(tmp_path, files)
    filled = [_fill(a, values) for a in argv]
    status, stderr = run(command, filled, tmp_path)
    assert status == 2, f"{command} {filled}: {status} {stderr[-2000:]}"
    check(command, filled, status, stderr, tmp_path)
