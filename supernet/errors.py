"""The one exception type that user-facing code raises for bad input.

CLIs catch :class:`UserError` and print its message on one line with exit status 2, so a wrong flag, a
malformed architecture or a foreign checkpoint never ends in a traceback. Anything else is a bug.
:class:`ArgumentParser` gives argparse's own errors (unknown flag, bad value) the same one-line form.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn, Sequence


class UserError(Exception):
    """Bad input from the user: the message names the thing and says what to do, on one line.

    Messages quote what the user gave (a key, a value, a decoder's complaint), which may hold line breaks;
    they are joined here so that the one-line promise does not depend on every caller escaping them.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).splitlines()))


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line, ``error: PROG: MESSAGE (see --help)``, exit status 2.

    argparse prints the whole usage block before its message; on a wrong flag the message is what matters,
    and every other bad input of these CLIs already reads ``error: ...`` on one line. Sub-commands inherit it.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {' '.join(message.splitlines())} (see --help)\n")


def check_flags(values: object, positive: Sequence[str] = (), non_negative: Sequence[str] = ()) -> None:
    """Refuse the first of the named flags (attributes of an argparse namespace or a config) that is out of range."""
    for name in positive:
        if getattr(values, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(values, name)}")
    for name in non_negative:
        if getattr(values, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must not be negative, got {getattr(values, name)}")


def run_cli(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> NoReturn:
    """Run a CLI ``main`` and turn :class:`UserError` into a one-line message and exit status 2."""
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(0)
