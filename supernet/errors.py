"""The exceptions that user-facing code raises for bad input and for a diverged training run.

CLIs catch :class:`UserError` and print its message on one line with exit status 2, so a wrong flag, a
malformed architecture or a foreign checkpoint never ends in a traceback; :class:`Diverged` likewise, with exit
status 3. Anything else is a bug. :class:`ArgumentParser` gives argparse's own errors (unknown flag, bad value)
the same one-line form.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn, Sequence

from tqdm import tqdm


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


class Diverged(Exception):
    """Training stopped because its loss kept coming out non-finite; the last good checkpoint is intact.

    CLIs print its message on one line and exit with status 3, so a script can tell it from bad input (2).
    """


def check_flags(values: object, positive: Sequence[str] = (), non_negative: Sequence[str] = ()) -> None:
    """Refuse the first of the named flags (attributes of an argparse namespace or a config) that is out of range."""
    for name in positive:
        if getattr(values, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(values, name)}")
    for name in non_negative:
        if getattr(values, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must not be negative, got {getattr(values, name)}")


def run_cli(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> NoReturn:
    """Run a CLI ``main``; :class:`UserError` and :class:`Diverged` end in a one-line message and exit status 2
    and 3.

    Progress bars the error interrupted are closed first, so the message is the last line, on its own, rather
    than glued to a bar that is redrawn after it.
    """
    try:
        main(argv)
    except UserError as err:
        message, status = f"error: {err}", 2
    except Diverged as err:
        message, status = f"error: {err}", 3
    except KeyboardInterrupt:
        _close_progress_bars()
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    else:
        sys.exit(0)
    _close_progress_bars()
    print(message, file=sys.stderr)
    sys.exit(status)


def _close_progress_bars() -> None:
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
