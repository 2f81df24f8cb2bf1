"""Shape checks of JSON documents this tool wrote and reads back: a wrong shape is one line naming the field.

A file edited by hand, truncated by another tool or written by something else may hold any JSON: a list where
a dict belongs, a string where a number belongs, a missing key. Each reader states the shape it relies on once,
as a *schema*, and :func:`check` compares a document with it before any field is used, so the consumer never
trips over a ``KeyError`` or ``TypeError`` deep inside. A schema is made of:

- a :class:`Leaf` (``TEXT``, ``INTEGER``, ``COUNT``, ``NUMBER``, ``POSITIVE``, ``BOOLEAN``, ``CHOICE``, ``ANYTHING``);
- a ``dict`` literal: an object that has at least these keys (extra keys are allowed and not checked);
- a one-element ``list`` literal ``[schema]``: a list of values of that schema;
- :class:`Each` (an object with any keys, every value of one schema), :class:`Optional` (a key that may be
  absent) and :class:`Nullable` (a value that may be ``null``).

Field names in messages read like Python: ``winners['cpu:10'].verified[0].measured_latency_ms``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

from supernet.errors import UserError


@dataclass(frozen=True)
class Leaf:
    """A value of one kind: ``test`` says whether a value is one, ``name`` says what it must be."""

    name: str
    test: Callable[[Any], bool]


def _is_number(value: Any) -> bool:
    """A finite int or float (JSON also holds NaN, Infinity and integers too big for a float); not a bool."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and (isinstance(value, int) and abs(value) <= 2 ** 64 or isinstance(value, float) and math.isfinite(value)))


TEXT = Leaf("text", lambda v: isinstance(v, str))
INTEGER = Leaf("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and abs(v) <= 2 ** 64)
COUNT = Leaf("a whole number >= 0", lambda v: INTEGER.test(v) and v >= 0)
NUMBER = Leaf("a finite number", _is_number)
POSITIVE = Leaf("a positive finite number", lambda v: _is_number(v) and v > 0)
BOOLEAN = Leaf("true or false", lambda v: isinstance(v, bool))
CHOICE = Leaf("an integer or text", lambda v: INTEGER.test(v) or isinstance(v, str))  # an arch dict's value, of any family
ANYTHING = Leaf("anything", lambda v: True)


@dataclass(frozen=True)
class Each:
    """An object with any keys whose values all have ``schema``; ``required`` keys must be present."""

    schema: Any
    required: tuple[str, ...] = ()


@dataclass(frozen=True)
class Optional:
    """A key of an object that may be absent; when present its value has ``schema``."""

    schema: Any


@dataclass(frozen=True)
class Nullable:
    """A value that may be ``null``; otherwise it has ``schema``."""

    schema: Any


class SchemaError(Exception):
    """Where a document departs from its schema: ``field`` (``a.b[0]``) and what is wrong there."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem


def check(value: Any, schema: Any, field: str = "") -> None:
    """Raise :class:`SchemaError` at the first place ``value`` departs from ``schema``."""
    if isinstance(schema, Nullable):
        if value is not None:
            check(value, schema.schema, field)
    elif isinstance(schema, Leaf):
        if not schema.test(value):
            raise SchemaError(field or "the document", f"must be {schema.name}, got {describe(value)}")
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise SchemaError(field or "the document", f"must be a list, got {describe(value)}")
        for i, item in enumerate(value):
            check(item, schema[0], f"{field}[{i}]")
    elif isinstance(schema, Each):
        _check_object(value, field)
        for key in schema.required:
            if key not in value:
                raise SchemaError(_join(field, key), "is missing")
        for key, item in value.items():
            check(item, schema.schema, _join(field, key))
    elif isinstance(schema, dict):
        _check_object(value, field)
        for key, item_schema in schema.items():
            if key in value:
                check(value[key], item_schema.schema if isinstance(item_schema, Optional) else item_schema,
                      _join(field, key))
            elif not isinstance(item_schema, Optional):
                raise SchemaError(_join(field, key), "is missing")
    else:
        raise TypeError(f"not a schema: {schema!r}")


def check_document(value: Any, schema: Any, what: str, fix: str) -> None:
    """:func:`check`, failing in one :class:`UserError` line: ``{what}: FIELD PROBLEM; {fix}``."""
    try:
        check(value, schema)
    except SchemaError as err:
        raise UserError(f"{what}: {err}; {fix}") from None


def config_schema(cls: type) -> dict[str, Any]:
    """The schema of a config dataclass saved as a dict: each field, when present, of its annotated type.

    Fields left out take their defaults (a file of an older version), so every key is :class:`Optional`.
    """
    leaves = {"int": INTEGER, "float": NUMBER, "bool": BOOLEAN, "str": TEXT, "str | None": Nullable(TEXT)}
    return {f.name: Optional(leaves.get(str(f.type), ANYTHING)) for f in dataclasses.fields(cls)}


def describe(value: Any) -> str:
    """What a value is, briefly: its JSON kind, and the value itself when it is short."""
    kinds = {dict: "an object", list: "a list", str: "text", bool: "a boolean", type(None): "null"}
    kind = kinds.get(type(value), type(value).__name__)
    if isinstance(value, (dict, list)):
        return f"{kind} of {len(value)}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10 ** 20:
        return "an integer too large"
    shown = repr(value)
    return f"{kind} {shown}" if len(shown) <= 40 else f"{kind} {shown[:37]}..."


def _check_object(value: Any, field: str) -> None:
    if not isinstance(value, dict):
        raise SchemaError(field or "the document", f"must be an object, got {describe(value)}")


def _join(field: str, key: Any) -> str:
    """``field.key`` for identifier-like keys, else ``field['key']``."""
    name = str(key)
    if name.isidentifier():
        return f"{field}.{name}" if field else name
    return f"{field}[{name!r}]"
