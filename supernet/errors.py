"""The one exception type that user-facing code raises for bad input.

CLIs catch :class:`UserError` and print its message on one line with exit status 2, so a wrong flag, a
malformed architecture or a foreign checkpoint never ends in a traceback. Anything else is a bug.
"""
from __future__ import annotations

import sys
from typing import Callable, NoReturn


class UserError(Exception):
    """Bad input from the user: the message names the thing and says what to do."""


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
