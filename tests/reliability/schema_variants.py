"""Wrong-schema variants of a valid JSON document: every key dropped, every value of the wrong kind.

Used to check that a reader refuses (in one line) or copes with every shape a hand edit or another tool could
leave, instead of tripping over a ``KeyError`` or ``TypeError`` in whatever consumes the document.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Iterator

Path = tuple[Any, ...]  # keys and list indices from the root

# What a value of each kind is replaced with: the other JSON kinds, and numbers no measurement can be.
WRONG = {
    "dict": ([], "x", None, 5),
    "list": ({}, "x", None, 5),
    "str": (5, None, [], {"a": 1}),
    "bool": ("yes", None, 2),
    "number": ("1.5", None, True, [], math.nan, math.inf, -1, 0),
    "null": ("x", [], {}),
}


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {dict: "dict", list: "list", str: "str"}[type(value)]


def nodes(document: Any, path: Path = (), keys_per_object: int = 3) -> Iterator[Path]:
    """Paths to the values of ``document``: every key of small objects, the first ``keys_per_object`` of a
    large one (an architecture's 36 choices all look alike) and the first item of a list."""
    yield path
    if isinstance(document, dict):
        keys = list(document) if len(document) <= 8 else list(document)[:keys_per_object]
        for key in keys:
            yield from nodes(document[key], (*path, key), keys_per_object)
    elif isinstance(document, list) and document:
        yield from nodes(document[0], (*path, 0), keys_per_object)


def replaced(document: Any, path: Path, value: Any, drop: bool = False) -> Any:
    """A deep copy of ``document`` with the value at ``path`` replaced by ``value`` (or dropped)."""
    result = copy.deepcopy(document)
    parent = result
    for key in path[:-1]:
        parent = parent[key]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return result


def variants(document: Any) -> Iterator[tuple[str, Any]]:
    """``(description, variant)`` for every key dropped and every value replaced by each wrong kind."""
    for path in nodes(document):
        if not path:
            continue
        name = "".join(f"[{k!r}]" for k in path)
        here = document
        for key in path:
            here = here[key]
        if isinstance(path[-1], str):
            yield f"drop {name}", replaced(document, path, None, drop=True)
        for wrong in WRONG[kind(here)]:
            yield f"{name} = {wrong!r}", replaced(document, path, wrong)
        if isinstance(here, list) and here:
            yield f"{name} emptied", replaced(document, path, [])
