"""Space families: what the rest of the package asks of a kind of search space, and the registry of kinds.

A *family* (``mbv3``, ``nb201``, ...) knows one kind of network: its config, its choices (the flat, labelled
arch dict and canonical string), its supernet and the static subnet extracted from it, and the *units* that
latency tables time and FLOPs/params tables count. Everything outside a family (training, latency tables, the
sampler, search, export) goes through the functions below and never spells a family's key format, so a new
kind of space is one new module that calls :func:`register_family` and :func:`register_space`.

Additive metrics (latency, FLOPs, params) share one layout, :class:`SlotLayout`: a network is ``groups``
groups of slots; each group uses the first ``depth`` of its ``max(depths)`` slots and each used slot holds one
of ``choices`` options. ``mbv3`` is stages of blocks (depth elastic, choice = kernel x expand); ``nb201`` is six
edges of one slot each (choice = op). A family maps every (group, slot, choice) and the fixed part of the
network to the units they cost (:class:`UnitCosts`), so one table, one sampler and one scorer serve all.

This module imports no torch: the search core stays importable without it.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

from supernet.errors import UserError

Arch = dict[str, Any]
Unit = tuple[str, Callable[[], Any], tuple[int, ...]]  # (key, build a module in eval mode, input shape w/o batch)

BUILTIN = ("supernet.space", "supernet.nb201", "supernet.transformer")  # modules whose import registers the built-in families


@dataclass(frozen=True)
class SlotLayout:
    """The additive view of a space: ``groups`` groups, each using ``depth`` (one of ``depths``) of its
    ``max(depths)`` slots, each used slot one of ``choices`` options.

    Encoded architectures (the sampler's int8 codes) hold per group the depth index, then per slot two
    digits ``choice // split`` and ``choice % split`` (``mbv3``: kernel and expand index; ``split`` = 1 where
    a choice is one option).

    ``modes`` > 1 adds one global choice that every slot's cost depends on (the text space's shared embedding
    width): a slot's choice is ``mode * mode_choices + c`` and every used slot of a network carries the same
    mode. Group 0's first slot (always used) also carries the cost of the mode's fixed parts (embedding,
    classifier), so tables stay additive and the scorer stays as it is; the sampler draws the mode first
    (weighted by its networks, or those in a latency window), then the rest within it.
    """

    groups: int
    depths: tuple[int, ...]
    choices: int
    split: int = 1
    modes: int = 1

    def __post_init__(self) -> None:
        if self.modes < 1 or self.choices % self.modes or (self.choices // self.modes) % self.split:
            raise ValueError(f"SlotLayout: {self.choices} choices are not {self.modes} modes of whole digit pairs "
                             f"(split {self.split})")
        if min(self.depths) < 1:
            raise ValueError("SlotLayout: every depth must be at least 1")

    @property
    def mode_choices(self) -> int:
        """Choices of a slot within one mode."""
        return self.choices // self.modes

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    @property
    def width(self) -> int:
        """Code columns per group."""
        return 1 + 2 * self.max_depth


@dataclass(frozen=True)
class UnitCosts:
    """Which units each part of a network costs: ``base`` always, ``slots[(group, slot, choice)]`` when used.

    Each entry is ``(unit key, count)``: ``nb201``'s op on an edge runs once in each of a stage's cells.
    """

    base: tuple[tuple[str, int], ...]
    slots: Mapping[tuple[int, int, int], tuple[tuple[str, int], ...]] = field(default_factory=dict)


class Space(Protocol):
    """What the package asks of a family's space (beyond :class:`search.space.SearchSpace`)."""

    config: Any
    choices: Mapping[str, Sequence[Any]]
    name: str
    num_stages: int  # the length of a subnet's ``stages``

    def validate(self, arch: Mapping[str, Any]) -> Arch: ...
    def to_string(self, arch: Mapping[str, Any]) -> str: ...
    def parse(self, value: str | Mapping[str, Any]) -> Arch: ...
    def largest(self) -> Arch: ...
    def smallest(self) -> Arch: ...
    def layout(self) -> SlotLayout: ...
    def slots(self, arch: Mapping[str, Any]) -> Iterator[tuple[int, int, int]]: ...
    def to_codes(self, arch: Mapping[str, Any]) -> list[int]: ...
    def from_codes(self, codes: Sequence[int]) -> Arch: ...


class Subnet(Protocol):
    """What the package asks of a family's subnet (an ``nn.Module`` that scripts without this project):
    ``arch``, a string :meth:`Space.parse` reads back; ``stages``, its stages in order (each a module, for
    ``search.retrain --mode last-stages``); ``head`` and ``classifier``, the end of the network
    (``--mode head``)."""

    arch: str
    stages: Sequence[Any]
    head: Any
    classifier: Any


class Family(Protocol):
    """One kind of space: config, choices, supernet, subnet and units."""

    name: str
    default_sampling: str  # the supernet training rule a run of this family uses unless told otherwise
    default_optimizer: str  # the optimizer (supernet.train.OPTIMIZERS) it trains with unless told otherwise

    def config_from_dict(self, data: Mapping[str, Any], source: str) -> Any: ...
    def space(self, config: Any) -> Space: ...
    def supernet(self, config: Any) -> Any: ...
    def subnet(self, config: Any, arch: Mapping[str, Any]) -> Subnet: ...
    def units(self, config: Any) -> Iterator[Unit]: ...
    def unit_costs(self, config: Any) -> UnitCosts: ...


_FAMILIES: dict[str, Family] = {}
_SPACES: dict[str, Callable[[], Any]] = {}
_LOADED = False


def register_family(family: Family) -> Family:
    """Make ``family`` known under ``family.name``; its configs say ``"family": name`` in every file."""
    if family.name in _FAMILIES:
        raise ValueError(f"space family {family.name!r} is registered twice")
    _FAMILIES[family.name] = family
    return family


def register_space(name: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Decorator: register a function returning the config of a named space (of any family)."""

    def wrap(factory: Callable[[], Any]) -> Callable[[], Any]:
        if name in _SPACES:
            raise ValueError(f"space {name!r} is registered twice")
        _SPACES[name] = factory
        return factory

    return wrap


def _load() -> None:
    """Import the built-in families once (their modules register themselves)."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for module in BUILTIN:
            importlib.import_module(module)


def families() -> list[str]:
    _load()
    return sorted(_FAMILIES)


def list_spaces() -> list[str]:
    _load()
    return sorted(_SPACES)


def get_family(name: str) -> Family:
    _load()
    if name not in _FAMILIES:
        raise UserError(f"unknown space family {name!r}; known: {', '.join(families())} (was the file written by "
                        "a newer version of this tool?)")
    return _FAMILIES[name]


def family_of(config: Any) -> Family:
    """The family a config belongs to (every family's config has a ``family`` attribute)."""
    return get_family(config.family)


def get_space(name: str) -> Space:
    """Build a registered space by name."""
    _load()
    if name not in _SPACES:
        raise UserError(f"unknown search space {name!r}; registered: {', '.join(list_spaces())}")
    return space_of(_SPACES[name]())


def config_from_dict(data: Any, source: str = "") -> Any:
    """Rebuild a config written by ``config.to_dict()`` (a checkpoint's or table's ``"space"``); files from
    before families were named hold ``mbv3`` configs. ``source`` names the file in the one-line error."""
    where = f"{source} holds a " if source else ""
    if not isinstance(data, Mapping):
        raise UserError(f"{where}malformed space config (not a JSON object): was it written by this tool?")
    name = data.get("family", "mbv3")
    if not isinstance(name, str):
        raise UserError(f"{where}malformed space config (family {name!r} is not a name)")
    return get_family(name).config_from_dict(data, source)


def space_of(config: Any) -> Space:
    return family_of(config).space(config)


def build_supernet(config: Any) -> Any:
    """The family's supernet of ``config`` with fresh weights."""
    return family_of(config).supernet(config)


def build_subnet(config: Any, arch: Mapping[str, Any]) -> Any:
    """The family's plain static network for ``arch`` with fresh weights."""
    return family_of(config).subnet(config, arch)


def units(config: Any) -> Iterator[Unit]:
    """Every unit a latency table of ``config`` times: ``(key, build, input shape)``."""
    return family_of(config).units(config)


@functools.lru_cache(maxsize=16)
def _unit_costs(config: Any) -> UnitCosts:
    """A config's unit costs, built once: :func:`unit_keys` runs for every architecture a table predicts."""
    return family_of(config).unit_costs(config)


def unit_keys(space: Space, arch: Mapping[str, Any]) -> list[str]:
    """The units that make up ``arch``, each as often as it runs (base first, then every used slot's)."""
    costs = _unit_costs(space.config)
    keys = [key for key, count in costs.base for _ in range(count)]
    for slot in space.slots(space.validate(arch)):
        keys.extend(key for key, count in costs.slots[slot] for _ in range(count))
    return keys


def input_shape(config: Any) -> tuple[int, int, int]:
    """The ``(channels, height, width)`` of one input of ``config``'s networks: an image, or a clip of audio as
    ``(1, 1, samples)`` where the space has an audio front end."""
    shape = getattr(config, "input_shape", None)
    return shape if shape is not None else (config.in_channels, config.input_size, config.input_size)


def audio_frontend(config: Any) -> Any:
    """The space's audio front end (:class:`supernet.frontend.LogMelConfig`), or None where it takes images."""
    return getattr(config, "frontend", None)


def token_input(config: Any) -> Any:
    """The space's token input (:class:`supernet.frontend.TokenConfig`), or None where it takes no text."""
    return getattr(config, "tokens", None)


def input_description(config: Any) -> dict[str, Any]:
    """What an exported network of ``config`` takes, for its metadata: shape, dtype and value range."""
    frontend, text = audio_frontend(config), token_input(config)
    shape = ["N", *input_shape(config)]
    if text is not None:
        return {"shape": shape, "dtype": "float32 or int64", "range": [0, text.vocab_size - 1], "kind": "text",
                "max_len": text.max_len, "pad_id": 0, "unknown_id": 1}
    if frontend is not None:
        return {"shape": shape, "dtype": "float32", "range": [-1.0, 1.0], "kind": "audio",
                "sample_rate": frontend.sample_rate}
    return {"shape": shape, "dtype": "float32", "range": [0.0, 1.0]}


def data_format(config: Any) -> dict[str, Any]:
    """The :func:`supernet.data.load_splits` keywords that describe the inputs of ``config``'s networks."""
    frontend, text = audio_frontend(config), token_input(config)
    if text is not None:
        return {"channels": 1, "size": text.max_len, "text": text}
    if frontend is not None:
        return {"channels": 1, "size": frontend.samples, "audio": frontend}
    return {"channels": config.in_channels, "size": config.input_size}


def example_input(config: Any, n: int, seed: int = 0) -> Any:
    """``n`` made-up inputs of ``config``'s networks, for checking an export against its source: images in
    [0, 1), audio in [-1, 1), or sentences of random token ids (padding after a random length)."""
    import torch  # here: this module imports no torch at import time

    generator = torch.Generator().manual_seed(seed)
    shape = (n, *input_shape(config))
    text = token_input(config)
    if text is not None:
        ids = torch.randint(2, text.vocab_size, shape, generator=generator)
        lengths = torch.randint(1, text.max_len + 1, (n, 1, 1, 1), generator=generator)
        return ids.masked_fill(torch.arange(text.max_len) >= lengths, 0).float()
    x = torch.rand(shape, generator=generator)
    return x * 2 - 1 if audio_frontend(config) is not None else x
