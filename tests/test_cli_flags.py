"""Every command's flags: each has a description and says its default in ``--help``; no abbreviation is taken
for a flag; a misspelt flag is named with the closest real one, before any missing-flag complaint."""
from __future__ import annotations

import argparse
import importlib

import pytest

from supernet.errors import ArgumentParser
from tests.conftest import run_module

COMMANDS = ("supernet.train", "search.evolve", "search.bo", "search.dnas", "search.retrain", "search.ensemble",
            "search.export", "search.report", "search.latency", "search.predictor")


def parsers(module: str, monkeypatch: pytest.MonkeyPatch) -> list[argparse.ArgumentParser]:
    """The parser ``module.main`` builds (and its sub-commands'), caught as it starts parsing."""
    caught: list[argparse.ArgumentParser] = []

    def catch(self: ArgumentParser, args=None, namespace=None):
        caught.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(ArgumentParser, "parse_known_args", catch)
    with pytest.raises(SystemExit):
        importlib.import_module(module).main([])
    found = list(caught)
    for parser in caught:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                found.extend(action.choices.values())
    return found


@pytest.mark.parametrize("module", COMMANDS)
def test_every_flag_has_a_description_and_its_default(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for parser in parsers(module, monkeypatch):
        assert parser.description, f"{parser.prog} has no description"
        parser.format_help()
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            text = formatter._get_help_string(action)
            flag = f"{parser.prog} {action.option_strings[0]}"
            assert text.split("(default")[0].strip(), f"{flag} has no description"
            switch = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
            if not (action.required or switch or getattr(action, "one_required", False)):
                assert "default" in text, f"{flag} does not say its default"


@pytest.mark.slow
def test_misspelt_and_abbreviated_flags_are_named_with_the_closest() -> None:
    misspelt = run_module("search.evolve", "--latncy-ms", "10", check=False)
    assert misspelt.returncode == 2
    assert "unrecognized argument --latncy-ms (did you mean --latency-ms?)" in misspelt.stderr
    abbreviated = run_module("search.evolve", "--latency", "10", check=False)
    assert "unrecognized argument --latency (did you mean --latency-ms?)" in abbreviated.stderr
    assert len(abbreviated.stderr.strip().splitlines()) == 1


def test_a_library_message_is_shortened_at_a_boundary() -> None:
    from supernet.errors import gist

    long = "PytorchStreamReader failed reading zip archive: failed finding central directory " * 4
    short = gist(long + "\nsecond line")
    assert len(short) <= 164 and short.endswith(" ...") and long.startswith(short[:-4])
    assert long[len(short) - 4] == " ", "cut mid-word"
    assert gist("One sentence here. " * 12).endswith("here.")
    assert gist("  short  \nmore") == "short"
