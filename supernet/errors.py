"""The one exception type that user-facing code raises for bad input.

CLIs catch :class:`UserError` and print its message on one line with exit status 2, so a wrong flag, a
malformed architecture or a foreign checkpoint never ends in a traceback. Anything else is a bug.
"""
from __future__ import annotations

import gc
import sys
from typing import Callable, NoReturn, Sequence


class UserError(Exception):
    """Bad input from the user: the message names the thing and says what to do."""


def check_flags(values: object, positive: Sequence[str] = (), non_negative: Sequence[str] = ()) -> None:
    """Refuse the first of the named flags (attributes of an argparse namespace or a config) that is out of range."""
    for name in positive:
        if getattr(values, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(values, name)}")
    for name in non_negative:
        if getattr(values, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must not be negative, got {getattr(values, name)}")


def run_cli(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> NoReturn:
    """Run a CLI ``main`` and turn :class:`UserError` into a one-line message and exit status 2.

    The message is printed once the traceback and the frames it held are freed (out of the ``except`` block,
    and collected: context managers on the way make cycles), so that a progress bar the error interrupted has
    closed and redrawn itself first; otherwise the message is glued to the bar and the bar redrawn after it.
    """
    try:
        main(argv)
    except UserError as err:
        message = f"error: {err}"
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    else:
        sys.exit(0)
    gc.collect()
    print(message, file=sys.stderr)
    sys.exit(2)
