"""What a search algorithm needs of a space, and a space built from a plain dict of choices.

Algorithms in :mod:`search.strategies` see only :class:`SearchSpace`: named categorical choices with
``sample``, ``mutate``, ``crossover``, a canonical string (two dicts naming the same network compare equal)
and a numeric ``encode`` for surrogate models. The supernet's :class:`supernet.space.Space` is one;
:class:`CategoricalSpace` makes one from ``{"name": [options, ...], ...}`` for your own problem::

    space = CategoricalSpace({"lr": [0.01, 0.1, 1.0], "layers": [2, 4, 8], "act": ["relu", "gelu"]})
"""
from __future__ import annotations

import itertools
import json
import random
from typing import Any, Iterator, Mapping, Protocol, Sequence

from supernet.errors import UserError
from supernet.space import check_choices

Arch = dict[str, Any]


class SearchSpace(Protocol):
    """Named categorical choices; every method takes its randomness from the caller's ``rng``."""

    choices: Mapping[str, Sequence[Any]]

    def sample(self, rng: random.Random) -> Arch: ...
    def mutate(self, arch: Mapping[str, Any], rng: random.Random, prob: float = ...) -> Arch: ...
    def crossover(self, a: Mapping[str, Any], b: Mapping[str, Any], rng: random.Random) -> Arch: ...
    def to_string(self, arch: Mapping[str, Any]) -> str: ...
    def encode(self, arch: Mapping[str, Any]) -> list[float]: ...
    def size(self) -> int: ...


class CategoricalSpace:
    """Every combination of ``choices`` (name -> options) is an architecture; all keys always count."""

    def __init__(self, choices: Mapping[str, Sequence[Any]], name: str = "custom"):
        if not choices or not all(isinstance(k, str) for k in choices):
            raise UserError("a space needs at least one choice, named by a string")
        for key, options in choices.items():
            if isinstance(options, (str, bytes)) or len(options) == 0 or len(set(map(_hashable, options))) != len(options):
                raise UserError(f"choice {key!r} needs a non-empty list of distinct options, got {options!r}")
        self.name = name
        self.choices: dict[str, tuple[Any, ...]] = {k: tuple(v) for k, v in choices.items()}

    def validate(self, arch: Mapping[str, Any]) -> Arch:
        return check_choices(self.choices, arch, self.name)

    def sample(self, rng: random.Random) -> Arch:
        return {key: rng.choice(options) for key, options in self.choices.items()}

    def mutate(self, arch: Mapping[str, Any], rng: random.Random, prob: float = 0.1) -> Arch:
        """Redraw each key with probability ``prob``; at least one key always changes (if any can)."""
        arch = self.validate(arch)
        child = {key: (rng.choice(opts) if rng.random() < prob else arch[key]) for key, opts in self.choices.items()}
        movable = [k for k, opts in self.choices.items() if len(opts) > 1]
        if child == arch and movable:
            key = rng.choice(movable)
            child[key] = rng.choice([o for o in self.choices[key] if o != arch[key]])
        return child

    def crossover(self, a: Mapping[str, Any], b: Mapping[str, Any], rng: random.Random) -> Arch:
        a, b = self.validate(a), self.validate(b)
        return {key: (a[key] if rng.random() < 0.5 else b[key]) for key in self.choices}

    def to_string(self, arch: Mapping[str, Any]) -> str:
        return json.dumps(self.validate(arch), sort_keys=True, default=str)

    def encode(self, arch: Mapping[str, Any]) -> list[float]:
        """Numeric options as their rank scaled to [0, 1]; other options one-hot."""
        arch = self.validate(arch)
        out: list[float] = []
        for key, options in self.choices.items():
            index = options.index(arch[key])
            if all(isinstance(o, (int, float)) and not isinstance(o, bool) for o in options):
                out.append(index / max(len(options) - 1, 1))
            else:
                out.extend(float(i == index) for i in range(len(options)))
        return out

    def size(self) -> int:
        count = 1
        for options in self.choices.values():
            count *= len(options)
        return count

    def enumerate(self) -> Iterator[Arch]:
        """Every architecture, in a fixed order."""
        keys = list(self.choices)
        for values in itertools.product(*self.choices.values()):
            yield dict(zip(keys, values))


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str)
