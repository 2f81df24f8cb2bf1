"""The exceptions that user-facing code raises for bad input and for a diverged training run.

CLIs catch :class:`UserError` and print its message on one line with exit status 2, so a wrong flag, a
malformed architecture or a foreign checkpoint never ends in a traceback; :class:`Diverged` likewise, with exit
status 3. Anything else is a bug. :class:`ArgumentParser` gives argparse's own errors (unknown flag, bad value)
the same one-line form, and :class:`Number` (:func:`int_range`, :func:`float_range` and the named ranges below) is
the ``type=`` of every numeric flag, so a NaN, an infinity, a negative count or an out-of-range seed is refused at
parse time, before any data is read or model built.
"""
from __future__ import annotations

import argparse
import difflib
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NoReturn, Sequence

from tqdm import tqdm


class UserError(Exception):
    """Bad input from the user: the message names the thing and says what to do, on one line.

    Messages quote what the user gave (a key, a value, a decoder's complaint), which may hold line breaks;
    they are joined here so that the one-line promise does not depend on every caller escaping them.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).splitlines()))


def gist(text: str, limit: int = 160) -> str:
    """The first line of a library's message, shortened at a sentence or word boundary (never mid-word)."""
    line = (text.strip().splitlines() or [""])[0].strip()
    if len(line) <= limit:
        return line
    cut = line[:limit]
    end = cut.rfind(". ")
    if end >= limit // 2:
        return cut[:end + 1]
    return cut[:cut.rfind(" ")].rstrip(",;:") + " ..." if " " in cut else cut + " ..."


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Every optional flag's help ends with its default, unless it already names one or has none to show (a
    switch, a required flag, one of a required group)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        switch = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction,
                                     argparse._VersionAction, argparse._SubParsersAction))
        if (not action.option_strings or switch or action.required or getattr(action, "one_required", False)
                or action.default is argparse.SUPPRESS or "default" in text):
            return text
        shown = "none" if action.default is None or action.default == "" else "%(default)s"
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line, ``error: PROG: MESSAGE (see --help)``, exit status 2.

    argparse prints the whole usage block before its message; on a wrong flag the message is what matters,
    and every other bad input of these CLIs already reads ``error: ...`` on one line. Sub-commands inherit it.
    Besides: no abbreviations (``--latency 10`` is not silently ``--latency-ms``); a misspelt flag is named,
    with the closest real one, even where argparse would first complain of a missing required flag; and
    every flag's help ends with its default.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)
        self._given: list[str] = []

    def format_help(self) -> str:
        for group in self._mutually_exclusive_groups:  # one of them must be given: no default to show
            for action in group._group_actions:
                action.one_required = group.required  # type: ignore[attr-defined]
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        unknown = self._unknown_flags()
        if unknown and ("required" in message or "unrecognized" in message):
            message = "unrecognized argument " + "; ".join(self._suggest(flag) for flag in unknown)
        self.exit(2, f"error: {self.prog}: {' '.join(message.splitlines())} (see --help)\n")

    def _unknown_flags(self) -> list[str]:
        known = self._option_string_actions
        return [arg for arg in self._given if arg.startswith("--") and arg != "--" and arg.split("=")[0] not in known]

    def _suggest(self, flag: str) -> str:
        close = difflib.get_close_matches(flag.split("=")[0], list(self._option_string_actions), n=1, cutoff=0.6)
        return f"{flag} (did you mean {close[0]}?)" if close else flag

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        """As argparse's, but an argument holding a NUL byte is refused: no path or value can hold one (a
        shell cannot even pass it), and the system calls a path reaches would raise ``ValueError``."""
        given = sys.argv[1:] if args is None else list(args)
        self._given = [arg for arg in given if isinstance(arg, str)]
        for arg in given:
            if isinstance(arg, str) and "\x00" in arg:
                self.error(f"argument {arg!r} holds a NUL byte")
        return super().parse_known_args(args, namespace)


class Diverged(Exception):
    """Training stopped because its loss kept coming out non-finite; the last good checkpoint is intact.

    CLIs print its message on one line and exit with status 3, so a script can tell it from bad input (2).
    """


FLOAT32_MAX = 3.4028234663852886e38
"""The largest finite float32: a float flag ends up in float32 arithmetic (weights, latencies), so beyond it
(1e308, say) it would be an infinity there."""
COUNT_MAX = 2**31 - 1
"""The largest count any flag may ask for (what a C ``int`` holds), so that no count overflows an argument of
torch or OpenMP with a traceback; flags with a natural bound have a tighter one."""
DRAWN_MAX = 100_000
"""The most architectures a flag may have drawn at once (calibration or validation subnets, a BO pool): they
are held in a list, and 2**31 of them would exhaust memory long before an error message."""
SEED_LIMIT = 2**32
"""Seeds lie in ``[0, 2**32)``: what numpy, ``random`` and ``torch.manual_seed`` all accept, with room for the
derived seeds (``seed * 1000 + epoch`` and ``* 1_000_003 + batch`` for the data order) to stay below torch's
``2**64``."""


@dataclass(frozen=True)
class Number:
    """The type and range of a numeric flag: an argparse ``type=`` that parses and checks a value in one step.

    ``low`` and ``high`` are inclusive unless ``above`` / ``below`` make them strict. A value out of range, NaN
    or infinite is refused with argparse's one-line ``argument --FLAG: ...`` error. :func:`check_ranges` applies
    the same ranges to values that came another way (a config built in code, or read back to resume), so each
    flag states its range once.
    """

    kind: type
    low: float
    high: float
    above: bool = False
    below: bool = False

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except (ValueError, OverflowError):  # also int() of more than 4300 digits
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text[:40]!r}") from None
        if not self.contains(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text[:40]!r}")
        return value

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a number of this kind (an int for a count) inside the range."""
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float else int):
            return False
        if not math.isfinite(value):
            return False
        return ((value > self.low) if self.above else (value >= self.low)) and \
            ((value < self.high) if self.below else (value <= self.high))

    def describe(self) -> str:
        """The range in words: ``an integer from 1 to 2147483647``, ``a number above 0 and at most 3.4e+38``."""
        what = "an integer" if self.kind is int else "a number"
        low, high = (f"{v}" if self.kind is int else f"{v:.3g}" for v in (self.low, self.high))
        if not (self.above or self.below):
            return f"{what} from {low} to {high}"
        return f"{what} {'above' if self.above else 'at least'} {low} and {'below' if self.below else 'at most'} {high}"


def int_range(low: int = 1, high: int = COUNT_MAX) -> Number:
    """An integer flag from ``low`` to ``high`` (a count of steps, images, subnets...)."""
    return Number(int, low, high)


def float_range(low: float = -FLOAT32_MAX, high: float = FLOAT32_MAX, *, above: bool = False,
                below: bool = False) -> Number:
    """A finite float flag from ``low`` to ``high`` (strictly ``above`` / ``below`` when asked)."""
    return Number(float, low, high, above, below)


positive_float = float_range(0.0, above=True)
"""A learning rate, a latency budget, a bound on FLOPs: finite and above 0."""
non_negative_float = float_range(0.0)
"""A weight decay, an exploration margin: finite and at least 0."""
unit_interval = float_range(0.0, 1.0)
"""A probability, a label smoothing: from 0 to 1."""
random_seed = int_range(0, SEED_LIMIT - 1)
"""A random seed, from 0 to 2**32 - 1."""


def check_ranges(values: object, ranges: Mapping[str, Number]) -> None:
    """Refuse the first attribute of ``values`` (a config) outside its flag's range in ``ranges``, in one line."""
    for name, number in ranges.items():
        value = getattr(values, name)
        if not number.contains(value):
            raise UserError(f"--{name.replace('_', '-')} must be {number.describe()}, got {value!r}")


def run_cli(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> NoReturn:
    """Run a CLI ``main``; :class:`UserError` and :class:`Diverged` end in a one-line message and exit status 2
    and 3.

    Progress bars the error interrupted are closed first, so the message is the last line, on its own, rather
    than glued to a bar that is redrawn after it. An :class:`OSError` about a named file that no check turned
    into a :class:`UserError` (a path the system cannot even look up, say) is still one line naming the file:
    it is the user's file or the machine's state, never this tool's bug.
    """
    try:
        main(argv)
    except UserError as err:
        message, status = f"error: {err}", 2
    except OSError as err:
        if err.filename is None:
            raise
        name = str(err.filename)
        name = name if len(name) <= 200 else f"{name[:200]}... ({len(name)} characters)"
        message, status = f"error: cannot use {name}: {err.strerror or err}; check the path", 2
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
