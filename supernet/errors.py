"""The one exception type that user-facing code raises for bad input.

CLIs catch :class:`UserError` and print its message on one line with exit status 2, so a wrong flag, a
malformed architecture or a foreign checkpoint never ends in a traceback. Anything else is a bug.
"""
from __future__ import annotations

import sys
from typing import Callable, NoReturn, Sequence


class UserError(Exception):
    """Bad input from the user: the message names the thing and says what to do."""


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
    and 3."""
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Diverged as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(3)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(0)
