"""Search spaces: named categorical choices describing every subnet of a supernet.

An architecture is a flat, labelled, JSON-serialisable dict with one key per choice::

    {"stage1.depth": 3, "stage1.block0.kernel": 5, "stage1.block0.expand": 4, ...}

Every key is always present, so a search algorithm can treat the space as plain named categorical choices;
the values of blocks beyond a stage's depth do not change the network. The canonical string form lists the
active blocks only (``"k5e4-k3e6-k7e3|k3e3-k3e3|..."``: stages split by ``|``, blocks by ``-``), so two dicts
describe the same network exactly when their strings are equal: the string is the cache key everywhere.

This module is the ``mbv3`` family's choices (its supernet and subnets are in :mod:`supernet.model`); spaces
of every family are registered by name (:func:`supernet.family.register_space`) and built with
:func:`get_space`.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import operator
import random
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

from supernet.errors import UserError
from supernet.family import (SlotLayout, Unit, UnitCosts, get_space, list_spaces, register_family,  # noqa: F401
                             register_space)
from supernet.frontend import LogMelConfig

Arch = dict[str, int]


@dataclass(frozen=True)
class StageConfig:
    """One elastic stage: ``width`` output channels, ``stride`` in its first block."""

    width: int
    stride: int
    use_se: bool = False
    activation: str = "relu"  # "relu" or "hswish"


# The most a space config may ask for: far beyond the registered spaces (mbv3-imagenet: 5 stages of depth 4,
# kernel 7, expand 6, 1280 channels, 224 pixels, 1000 classes), far below what would hang or exhaust memory.
SPACE_LIMITS = {"stages": 16, "depths": 8, "kernels": 8, "expands": 8, "depth": 32, "kernel": 15, "expand": 16,
                "stride": 4, "channels": 8192, "in_channels": 64, "input_size": 4096, "num_classes": 100_000}
MAX_WEIGHTS = 5 * 10 ** 8  # 2 GB of float32 weights


@dataclass(frozen=True)
class SpaceConfig:
    """Everything needed to rebuild a space and its supernet; saved in every checkpoint and table.

    ``first_block`` adds MobileNetV3's fixed first block after the stem (3x3 depthwise, no expansion,
    residual); ``feature_channels`` > 0 adds its pooled feature layer (linear to that width, h-swish) before
    the classifier. Neither is searched.

    ``frontend`` makes it a network on raw audio: its first layer turns waveforms into a one-channel log-mel
    spectrogram (:class:`supernet.audio.LogMel`), so ``in_channels`` is 1 and ``input_size`` is the clip's length
    in samples (``frontend.samples``); without one, inputs are ``in_channels`` x ``input_size`` x ``input_size``
    images.
    """

    family: ClassVar[str] = "mbv3"
    name: str
    in_channels: int
    input_size: int
    num_classes: int
    stem_channels: int
    stem_stride: int
    stages: tuple[StageConfig, ...]
    head_channels: int
    depths: tuple[int, ...] = (2, 3, 4)
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int, ...] = (3, 4, 6)
    first_block: bool = False
    feature_channels: int = 0
    frontend: LogMelConfig | None = None

    def __post_init__(self) -> None:
        """Refuse a config no supernet can be built from: what a corrupt or hand-edited file may hold."""
        sizes = [self.in_channels, self.input_size, self.num_classes, self.stem_channels, self.stem_stride,
                 self.head_channels, *self.depths, *self.kernels, *self.expands,
                 *(n for stage in self.stages for n in (stage.width, stage.stride))]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
            raise ValueError("every size, stride and option must be a positive integer")
        if not (self.stages and self.depths and self.kernels and self.expands):
            raise ValueError("stages, depths, kernels and expands must not be empty")
        if not all(s.activation in ("relu", "hswish") and isinstance(s.use_se, bool) for s in self.stages):
            raise ValueError("a stage's activation must be 'relu' or 'hswish' and use_se true or false")
        if not (isinstance(self.name, str) and isinstance(self.first_block, bool)
                and isinstance(self.feature_channels, int) and self.feature_channels >= 0):
            raise ValueError("name must be text, first_block true or false and feature_channels >= 0")
        if self.frontend is not None and not (isinstance(self.frontend, LogMelConfig) and self.in_channels == 1
                                              and self.input_size == self.frontend.samples):
            raise ValueError("an audio front end takes one channel of input_size = frontend.samples samples")
        self._check_bounds()

    def _check_bounds(self) -> None:
        """Refuse a config that asks for more than any supernet here can be (a crafted file asking for depth
        100000 once kept a process building blocks for minutes): each size within :data:`SPACE_LIMITS`, odd
        kernels, and at most :data:`MAX_WEIGHTS` weights in the largest subnet, all before anything is built."""
        counts = {"stages": len(self.stages), "depths": len(self.depths), "kernels": len(self.kernels),
                  "expands": len(self.expands)}
        values = {"depth": self.depths, "kernel": self.kernels, "expand": self.expands,
                  "stride": (self.stem_stride, *(s.stride for s in self.stages)),
                  "channels": (self.stem_channels, self.head_channels, self.feature_channels,
                               *(s.width for s in self.stages)),
                  "in_channels": (self.in_channels,), "input_size": (self.input_size,) if self.frontend is None else (),
                  "num_classes": (self.num_classes,)}
        for name, count in counts.items():
            if count > SPACE_LIMITS[name]:
                raise ValueError(f"{count} {name} are more than the {SPACE_LIMITS[name]} a space may have")
        for name, numbers in values.items():
            if numbers and max(numbers) > SPACE_LIMITS[name]:
                raise ValueError(f"{name} {max(numbers)} is more than the {SPACE_LIMITS[name]} a space may ask for")
        if any(k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernel sizes must be odd, got {list(self.kernels)}")
        if self.largest_weights() > MAX_WEIGHTS:
            raise ValueError(f"its largest subnet would hold about {self.largest_weights():.2g} weights, more "
                             f"than the {MAX_WEIGHTS:.0g} this tool builds")

    def largest_weights(self) -> int:
        """An upper estimate of the weights of the largest subnet (pointwise, depthwise and squeeze-excite
        convolutions, stem, head and classifier); cheap to compute from the config alone."""
        depth, kernel, expand = max(self.depths), max(self.kernels), max(self.expands)
        total, width = self.in_channels * self.stem_channels * 9, self.stem_channels
        for stage in self.stages:
            for _ in range(depth):
                hidden = width * expand
                total += width * hidden + hidden * kernel ** 2 + hidden * hidden // 2 + hidden * stage.width
                width = stage.width
        features = self.feature_channels or self.head_channels
        return total + width * self.head_channels + self.head_channels * features + features * self.num_classes

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, **dataclasses.asdict(self)}

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one input: an image, or a clip of audio as ``(1, 1, samples)``."""
        if self.frontend is not None:
            return (1, 1, self.frontend.samples)
        return (self.in_channels, self.input_size, self.input_size)

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of what the stem's convolution sees (audio: the spectrogram)."""
        return self.input_shape if self.frontend is None else self.frontend.feature_shape

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "") -> "SpaceConfig":
        """Rebuild from :meth:`to_dict` output (lists from JSON become tuples); ``source`` names the file in
        the one-line error about a malformed or oversized config."""
        try:
            fields = dict(data)
            if fields.pop("family", cls.family) != cls.family:
                raise ValueError(f"it is of family {data['family']!r}, not {cls.family!r}")
            fields["stages"] = tuple(StageConfig(**s) for s in fields["stages"])
            for key in ("depths", "kernels", "expands"):
                fields[key] = tuple(fields[key])
            if fields.get("frontend") is not None:
                fields["frontend"] = LogMelConfig(**fields["frontend"])
            return cls(**fields)
        except (KeyError, TypeError, ValueError) as err:
            raise malformed_config(err, source) from None


class ChoiceSpace:
    """What every space made of named categorical choices shares: ``choices`` maps each key to its options, in
    a fixed order, and ``to_string`` names the network a dict describes. ``sample``, ``mutate`` and
    ``crossover`` take an explicit :class:`random.Random` so that every caller controls its own seed."""

    config: Any
    choices: dict[str, tuple[Any, ...]]

    @property
    def name(self) -> str:
        return self.config.name

    def validate(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        """Return a clean copy of ``arch`` in key order, or raise :class:`UserError` naming the bad entry."""
        return check_choices(self.choices, arch, self.name)

    def to_string(self, arch: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def parse(self, value: str | Mapping[str, Any]) -> dict[str, Any]:
        """Accept a canonical string, a JSON object text, or a dict; return a validated dict."""
        return parse_arch(self, value)

    # ---- special members ------------------------------------------------------------------------
    def _constant(self, pick: Callable[[tuple[Any, ...]], Any]) -> dict[str, Any]:
        return {key: pick(options) for key, options in self.choices.items()}

    def largest(self) -> dict[str, Any]:
        return self._constant(max)

    def smallest(self) -> dict[str, Any]:
        return self._constant(min)

    # ---- sampling and variation -----------------------------------------------------------------
    def sample(self, rng: random.Random) -> dict[str, Any]:
        """Every key drawn uniformly and independently from its options."""
        return {key: rng.choice(options) for key, options in self.choices.items()}

    def mutate(self, arch: Mapping[str, Any], rng: random.Random, prob: float = 0.1) -> dict[str, Any]:
        """Redraw each key with probability ``prob``; at least one active choice always changes."""
        arch = self.validate(arch)
        child = {key: (rng.choice(opts) if rng.random() < prob else arch[key]) for key, opts in self.choices.items()}
        while self.to_string(child) == self.to_string(arch):
            key = rng.choice(list(self.choices))
            child[key] = rng.choice(self.choices[key])
        return child

    def crossover(self, a: Mapping[str, Any], b: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
        """Each key taken from either parent with equal probability."""
        a, b = self.validate(a), self.validate(b)
        return {key: (a[key] if rng.random() < 0.5 else b[key]) for key in self.choices}

    def to_indices(self, arch: Mapping[str, Any]) -> list[int]:
        """Numeric encoding: the option index of every key, in key order."""
        arch = self.validate(arch)
        return [options.index(arch[key]) for key, options in self.choices.items()]

    def from_indices(self, indices: Sequence[int]) -> dict[str, Any]:
        """Inverse of :meth:`to_indices`: the architecture whose option indices, in key order, are ``indices``.

        ``indices`` is a list, tuple or 1-D array of whole numbers (Python or NumPy integers; not floats,
        bools or strings), each in range for its key; anything else is a one-line :class:`UserError`.
        """
        return arch_from_indices(self.choices, indices, self.name)


class Space(ChoiceSpace):
    """The architectures of one ``mbv3`` supernet, as named categorical choices (see :class:`ChoiceSpace`)."""

    def __init__(self, config: SpaceConfig):
        self.config = config
        self.max_depth = max(config.depths)
        self.choices: dict[str, tuple[int, ...]] = {}
        for s in range(len(config.stages)):
            self.choices[f"stage{s + 1}.depth"] = config.depths
            for b in range(self.max_depth):
                self.choices[f"stage{s + 1}.block{b}.kernel"] = config.kernels
                self.choices[f"stage{s + 1}.block{b}.expand"] = config.expands

    @property
    def num_stages(self) -> int:
        return len(self.config.stages)

    # ---- validation and canonical forms -------------------------------------------------------
    def blocks(self, arch: Arch) -> Iterator[tuple[int, int, int, int]]:
        """Yield ``(stage, block, kernel, expand)`` for the active blocks of a validated ``arch``."""
        for s in range(self.num_stages):
            for b in range(arch[f"stage{s + 1}.depth"]):
                yield s, b, arch[f"stage{s + 1}.block{b}.kernel"], arch[f"stage{s + 1}.block{b}.expand"]

    def layout(self) -> SlotLayout:
        """Stages of blocks: each stage uses its depth's first blocks; a block's choice is kernel x expand."""
        c = self.config
        return SlotLayout(self.num_stages, c.depths, len(c.kernels) * len(c.expands), len(c.expands))

    def slots(self, arch: Mapping[str, Any]) -> Iterator[tuple[int, int, int]]:
        """``(stage, block, choice)`` of every active block of a validated ``arch`` (see :meth:`layout`)."""
        c = self.config
        for s, b, k, e in self.blocks(arch):
            yield s, b, c.kernels.index(k) * len(c.expands) + c.expands.index(e)

    def to_codes(self, arch: Mapping[str, Any]) -> list[int]:
        """The sampler's code of ``arch``: its option indices in key order (:meth:`to_indices`)."""
        return self.to_indices(arch)

    def from_codes(self, codes: Sequence[int]) -> Arch:
        return self.from_indices(codes)

    def to_string(self, arch: Mapping[str, Any]) -> str:
        """Canonical string: equal for two dicts exactly when they describe the same network."""
        arch = self.validate(arch)
        stages: list[list[str]] = [[] for _ in range(self.num_stages)]
        for s, _, k, e in self.blocks(arch):
            stages[s].append(f"k{k}e{e}")
        return "|".join("-".join(blocks) for blocks in stages)

    _BLOCK = re.compile(r"k([0-9]{1,4})e([0-9]{1,4})")  # ASCII digits, few enough for int(); see fullmatch below

    def from_string(self, text: str) -> Arch:
        """Parse :meth:`to_string` output; blocks beyond a stage's depth take the smallest options."""
        if not isinstance(text, str):
            raise UserError(f"an architecture string must be text, got {type(text).__name__}")
        parts = text.strip().split("|")
        if len(parts) != self.num_stages:
            raise UserError(
                f"architecture string {text!r} has {len(parts)} stages, space {self.name!r} has "
                f"{self.num_stages} (expected e.g. {self.to_string(self.smallest())!r})")
        arch: dict[str, Any] = {}
        for s, part in enumerate(parts):
            blocks = part.split("-") if part else []
            arch[f"stage{s + 1}.depth"] = len(blocks)
            for b in range(self.max_depth):
                kernel, expand = min(self.config.kernels), min(self.config.expands)
                if b < len(blocks):
                    match = self._BLOCK.fullmatch(blocks[b])
                    if not match:
                        raise UserError(
                            f"architecture string {text!r}: block {blocks[b]!r} is not of the form 'k<kernel>e<expand>'")
                    kernel, expand = int(match.group(1)), int(match.group(2))
                arch[f"stage{s + 1}.block{b}.kernel"] = kernel
                arch[f"stage{s + 1}.block{b}.expand"] = expand
        if any(arch[f"stage{s + 1}.depth"] > self.max_depth for s in range(self.num_stages)):
            bad = next(s for s in range(self.num_stages) if arch[f"stage{s + 1}.depth"] > self.max_depth)
            raise UserError(f"architecture string {text!r}: stage{bad + 1} has more than {self.max_depth} blocks")
        return self.validate(arch)

    def size(self) -> int:
        """Number of distinct networks (inactive blocks do not count)."""
        per_block = len(self.config.kernels) * len(self.config.expands)
        per_stage = sum(per_block ** d for d in self.config.depths)
        return per_stage ** self.num_stages

    def encode(self, arch: Mapping[str, Any]) -> list[float]:
        """Numeric features for surrogate models: each stage's depth rank, then per block slot the kernel and
        expand ranks in (0, 1] when the block is active and 0 when it is not (so inactive choices add no noise)."""
        arch = self.validate(arch)
        c = self.config
        out: list[float] = []
        for s in range(self.num_stages):
            depth = arch[f"stage{s + 1}.depth"]
            out.append(c.depths.index(depth) / max(len(c.depths) - 1, 1))
            for b in range(self.max_depth):
                active = b < depth
                out.append((c.kernels.index(arch[f"stage{s + 1}.block{b}.kernel"]) + 1) / len(c.kernels) if active else 0.0)
                out.append((c.expands.index(arch[f"stage{s + 1}.block{b}.expand"]) + 1) / len(c.expands) if active else 0.0)
        return out

    def enumerate(self) -> Iterator[Arch]:
        """Every distinct network once (inactive blocks at the smallest options), in a fixed order."""
        pairs = [(k, e) for k in self.config.kernels for e in self.config.expands]
        stage_options = [blocks for d in self.config.depths for blocks in itertools.product(pairs, repeat=d)]
        for stages in itertools.product(stage_options, repeat=self.num_stages):
            yield self.from_string("|".join("-".join(f"k{k}e{e}" for k, e in blocks) for blocks in stages))

def parse_arch(space: Any, value: str | Mapping[str, Any]) -> dict[str, Any]:
    """``space.validate`` of a dict or of a JSON object text, else ``space.from_string`` of the text: the
    ``parse`` of every space, with one-line errors for what is neither."""
    if isinstance(value, Mapping):
        return space.validate(value)
    if not isinstance(value, str):  # e.g. a number where a results or measurements file should hold an arch
        raise UserError(f"an architecture must be a string or a dict of choices, got {type(value).__name__}")
    text = value.strip()
    if text.startswith("{"):
        try:
            return space.validate(json.loads(text))
        except json.JSONDecodeError as err:
            raise UserError(f"architecture JSON is malformed: {err}") from None
        except ValueError:  # an integer over Python's int-string conversion limit (4,300 digits)
            raise UserError("architecture JSON holds an integer of thousands of digits; no choice is that "
                            "large") from None
        except RecursionError:
            raise UserError("architecture JSON is nested too deeply to be an architecture") from None
    return space.from_string(text)


def index_list(value: Any) -> list[Any]:
    """A list, tuple or 1-D array of option indices as a list; text, a dict or a number is a one-line error."""
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__len__") or not hasattr(value, "__iter__"):
        raise UserError(f"an encoded architecture must be a list of option indices, got {type(value).__name__}")
    return list(value)


def arch_from_indices(choices: Mapping[str, Sequence[Any]], indices: Any, space_name: str) -> dict[str, Any]:
    """The architecture whose option indices, in the key order of ``choices``, are ``indices``; anything but
    one in-range whole number per key is a one-line :class:`UserError`."""
    indices = index_list(indices)
    if len(indices) != len(choices):
        raise UserError(f"an encoded architecture of space {space_name!r} has {len(choices)} indices, "
                        f"got {len(indices)}")
    return {key: options[_option_index(index, key, len(options))]
            for (key, options), index in zip(choices.items(), indices)}


def malformed_config(err: Exception, source: str) -> UserError:
    """The one-line error about a malformed or oversized space config read from ``source`` (a file name)."""
    where = f"{source} holds a " if source else ""
    return UserError(f"{where}malformed space config ({err}): was it written by this tool?")


def _option_index(value: Any, key: str, count: int) -> int:
    """``value`` as an option index of ``key`` (which has ``count`` options), or a one-line error."""
    try:
        if isinstance(value, bool):
            raise TypeError
        index = operator.index(value)
    except TypeError:
        raise UserError(f"option index of {key} must be a whole number, got {type(value).__name__}") from None
    if not 0 <= index < count:
        raise UserError(f"option index {_brief(index)} of {key} is outside [0, {count})")
    return index


def _brief(value: Any) -> str:
    """``repr(value)``, except for an integer too long to print (Python refuses over 4,300 digits)."""
    return "(a huge integer)" if isinstance(value, int) and abs(value) >= 10 ** 100 else repr(value)


_MISSING = object()


def _is_option(value: Any, options: tuple[Any, ...]) -> bool:
    """Whether ``value`` is one of ``options`` and of its kind (``True`` is not the option ``1``)."""
    if value not in options:
        return False
    return type(value) is type(options[options.index(value)]) or any(
        type(value) is type(o) and value == o for o in options)


def check_choices(choices: Mapping[str, tuple[Any, ...]], arch: Any, space_name: str) -> dict[str, Any]:
    """``arch`` as a clean dict in the key order of ``choices``, or a :class:`UserError` naming the bad entry.

    A value must be one of its key's options and of the same kind (``True`` is not the option ``1``).
    """
    if not isinstance(arch, Mapping):
        raise UserError(f"an architecture must be a dict of choices, got {type(arch).__name__}")
    if len(arch) == len(choices):  # searches check millions: the common, valid case first, in C-speed steps
        clean = {key: arch.get(key, _MISSING) for key in choices}
        if all(_is_option(value, choices[key]) for key, value in clean.items()):
            return clean
    unknown = [k for k in arch if k not in choices]
    if unknown:
        raise UserError(f"architecture key {unknown[0]!r} is not in space {space_name!r}")
    clean: dict[str, Any] = {}
    for key, options in choices.items():
        if key not in arch:
            raise UserError(f"architecture is missing key {key!r} (space {space_name!r})")
        value = arch[key]
        if not _is_option(value, options):
            raise UserError(f"architecture value {key}={_brief(value)} is not one of {list(options)}")
        clean[key] = value
    return clean


@register_space("mbv3")
def mbv3() -> SpaceConfig:
    """MobileNetV3-style space for 28x28 greyscale images (Fashion-MNIST): 4 elastic stages.

    Early stages use ReLU without squeeze-excite, late ones h-swish with squeeze-excite, as in MobileNetV3.
    """
    return SpaceConfig(
        name="mbv3",
        in_channels=1,
        input_size=28,
        num_classes=10,
        stem_channels=16,
        stem_stride=2,
        stages=(
            StageConfig(width=16, stride=1),
            StageConfig(width=24, stride=2),
            StageConfig(width=40, stride=2, use_se=True, activation="hswish"),
            StageConfig(width=64, stride=1, use_se=True, activation="hswish"),
        ),
        head_channels=256,
    )


@register_space("mbv3-imagenet")
def mbv3_imagenet() -> SpaceConfig:
    """The MobileNetV3 supernet of the literature (Once-for-All, width 1.0) for 224x224 RGB, 1000 classes.

    Stem 16 (stride 2) and a fixed first block, five elastic stages of depth 2-4, kernels 3/5/7, expands
    3/4/6; head 960, pooled features 1280.
    """
    return SpaceConfig(
        name="mbv3-imagenet",
        in_channels=3,
        input_size=224,
        num_classes=1000,
        stem_channels=16,
        stem_stride=2,
        stages=(
            StageConfig(width=24, stride=2),
            StageConfig(width=40, stride=2, use_se=True),
            StageConfig(width=80, stride=2, activation="hswish"),
            StageConfig(width=112, stride=1, use_se=True, activation="hswish"),
            StageConfig(width=160, stride=2, use_se=True, activation="hswish"),
        ),
        head_channels=960,
        first_block=True,
        feature_channels=1280,
    )


@register_space("mbv3-fsdd")
def mbv3_fsdd() -> SpaceConfig:
    """The ``mbv3`` space on raw 8 kHz audio (the Free Spoken Digit Dataset's 10 digits): one-second clips
    become 40 x 61 log-mel spectrograms inside the network, then the same 4 elastic stages."""
    frontend = LogMelConfig()
    return dataclasses.replace(mbv3(), name="mbv3-fsdd", input_size=frontend.samples, frontend=frontend)


class Mbv3Family:
    """MobileNetV3-style elastic stages (depth, kernel, expand): :mod:`supernet.model` builds the networks."""

    name = "mbv3"
    default_sampling = "sandwich"
    default_optimizer = "sgd"

    def config_from_dict(self, data: Mapping[str, Any], source: str) -> SpaceConfig:
        return SpaceConfig.from_dict(data, source)

    def space(self, config: SpaceConfig) -> Space:
        return Space(config)

    def supernet(self, config: SpaceConfig) -> Any:
        from supernet.model import Supernet
        return Supernet(config)

    def subnet(self, config: SpaceConfig, arch: Mapping[str, Any]) -> Any:
        from supernet.model import Subnet
        return Subnet(config, arch)

    def units(self, config: SpaceConfig) -> Iterator[Unit]:
        from supernet.model import units
        return units(config)

    def unit_costs(self, config: SpaceConfig) -> UnitCosts:
        """Stem and head always; block ``b`` of stage ``s`` with choice ``c`` costs its own unit."""
        slots = {}
        for s in range(len(config.stages)):
            for b in range(max(config.depths)):
                for ki, k in enumerate(config.kernels):
                    for ei, e in enumerate(config.expands):
                        slots[(s, b, ki * len(config.expands) + ei)] = ((f"stage{s + 1}.block{b}.k{k}e{e}", 1),)
        return UnitCosts((("stem", 1), ("head", 1)), slots)


register_family(Mbv3Family())
