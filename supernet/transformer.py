"""The ``transformer`` family: an elastic transformer encoder for sentence classification, searched as HAT and
AutoFormer search it.

A network embeds a sentence's token ids at a shared width ``embed`` (plus learned positions), runs ``layers``
pre-norm encoder layers, each with its own number of attention ``heads`` (of ``head_dim`` each) and
feed-forward width ``ffn``, then a final layer norm, the mean over the sentence's words and a linear classifier.
The supernet holds the largest of everything; a subnet takes the leading slices (the first ``embed`` columns
of every embedding and norm, the first heads, the first feed-forward units), as ``mbv3`` slices channels.

An architecture is a flat dict::

    {"embed": 128, "layers": 3, "layer1.heads": 4, "layer1.ffn": 512, "layer2.heads": 2, ...}

with every layer's keys always present (those beyond ``layers`` do not change the network); its canonical string
lists the used layers: ``"e128|h4f512-h2f256-h4f128"``.

The shared width is a global choice every layer's cost depends on, so the additive view
(:class:`supernet.family.SlotLayout`) has one mode per embedding width: one group of ``max(layers)`` slots, a
slot's choice ``mode x heads x ffn``, the embedding and classifier charged to the first layer's slot.

This module imports no torch: the search core stays importable without it.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Mapping, Sequence

from supernet.errors import UserError
from supernet.family import SlotLayout, Unit, UnitCosts, register_family, register_space
from supernet.frontend import TokenConfig
from supernet.space import ChoiceSpace, _option_index, index_list, malformed_config

Arch = dict[str, int]

LIMITS = {"embed": 4096, "layers": 48, "heads": 64, "ffn": 16384, "head_dim": 512, "num_classes": 100_000,
          "options": 8}
MAX_WEIGHTS = 5 * 10 ** 8  # 2 GB of float32 weights, as for the other families


def _options(name: str, values: Any, limit: int) -> None:
    if not (isinstance(values, tuple) and 1 <= len(values) <= LIMITS["options"]
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= limit for v in values)
            and list(values) == sorted(set(values))):
        raise ValueError(f"{name} must be 1 to {LIMITS['options']} increasing whole numbers in 1..{limit}, "
                         f"got {values!r}")


@dataclass(frozen=True)
class TransformerConfig:
    """An elastic encoder: the options of the shared embedding width, the number of layers, and each layer's
    heads and feed-forward width; ``tokens`` says what sentences look like (vocabulary size, length)."""

    family: ClassVar[str] = "transformer"
    name: str
    embeds: tuple[int, ...]
    layers: tuple[int, ...]
    heads: tuple[int, ...]
    ffns: tuple[int, ...]
    head_dim: int = 32
    tokens: TokenConfig = field(default_factory=TokenConfig)
    num_classes: int = 2
    dropout: float = 0.1

    def __post_init__(self) -> None:
        """Refuse what no network can be built from, before anything is built (a corrupt or crafted file)."""
        if not isinstance(self.name, str):
            raise ValueError("name must be text")
        for name, values, limit in (("embeds", self.embeds, LIMITS["embed"]), ("layers", self.layers, LIMITS["layers"]),
                                    ("heads", self.heads, LIMITS["heads"]), ("ffns", self.ffns, LIMITS["ffn"])):
            _options(name, values, limit)
        for key in ("head_dim", "num_classes"):
            value = getattr(self, key)
            if not (isinstance(value, int) and not isinstance(value, bool) and 0 < value <= LIMITS[key]):
                raise ValueError(f"{key} must be a whole number in 1..{LIMITS[key]}, got {value!r}")
        if not isinstance(self.tokens, TokenConfig):
            raise ValueError("tokens must be a TokenConfig")
        if not (isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if len(self.embeds) * len(self.heads) * len(self.ffns) > 127:
            raise ValueError("embeds x heads x ffns options must be at most 127 (the sampler's int8 codes)")
        if self.largest_weights() > MAX_WEIGHTS:
            raise ValueError(f"its supernet would hold about {self.largest_weights():.2g} weights, more than the "
                             f"{MAX_WEIGHTS:.0g} this tool builds")

    def largest_weights(self) -> int:
        e, a, f = max(self.embeds), max(self.heads) * self.head_dim, max(self.ffns)
        per_layer = 4 * e * a + 2 * e * f
        return (self.tokens.vocab_size + self.tokens.max_len) * e + max(self.layers) * per_layer + e * self.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One input: a sentence's ``max_len`` token ids, as ``(1, 1, max_len)``."""
        return (1, 1, self.tokens.max_len)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "") -> "TransformerConfig":
        """Rebuild from :meth:`to_dict` output; ``source`` names the file in the one-line error."""
        try:
            fields = dict(data)
            if fields.pop("family", cls.family) != cls.family:
                raise ValueError(f"it is of family {data['family']!r}, not {cls.family!r}")
            for key in ("embeds", "layers", "heads", "ffns"):
                if isinstance(fields.get(key), list):
                    fields[key] = tuple(fields[key])
            if isinstance(fields.get("tokens"), Mapping):
                fields["tokens"] = TokenConfig(**fields["tokens"])
            return cls(**fields)
        except (KeyError, TypeError, ValueError) as err:
            raise malformed_config(err, source) from None


class TransformerSpace(ChoiceSpace):
    """The architectures of an elastic encoder as named categorical choices (see the module doc and
    :class:`supernet.space.ChoiceSpace`)."""

    def __init__(self, config: TransformerConfig):
        self.config = config
        self.max_layers = max(config.layers)
        self.choices: dict[str, tuple[int, ...]] = {"embed": config.embeds, "layers": config.layers}
        for i in range(1, self.max_layers + 1):
            self.choices[f"layer{i}.heads"] = config.heads
            self.choices[f"layer{i}.ffn"] = config.ffns

    @property
    def num_stages(self) -> int:
        """A subnet's ``stages`` are its layers; the largest has ``max(layers)``."""
        return self.max_layers

    # ---- validation and strings -------------------------------------------------------------------
    def layers(self, arch: Arch) -> Iterator[tuple[int, int, int]]:
        """``(index, heads, ffn)`` of the used layers of a validated ``arch``."""
        for i in range(arch["layers"]):
            yield i, arch[f"layer{i + 1}.heads"], arch[f"layer{i + 1}.ffn"]

    def to_string(self, arch: Mapping[str, Any]) -> str:
        """Canonical string: equal for two dicts exactly when they describe the same network."""
        arch = self.validate(arch)
        return f"e{arch['embed']}|" + "-".join(f"h{h}f{f}" for _, h, f in self.layers(arch))

    _LAYER = re.compile(r"h([0-9]{1,4})f([0-9]{1,6})")

    def from_string(self, text: str) -> Arch:
        """Parse :meth:`to_string` output; layers beyond the depth take the smallest options."""
        if not isinstance(text, str):
            raise UserError(f"an architecture string must be text, got {type(text).__name__}")
        example = self.to_string(self.smallest())
        embed, bar, rest = text.strip().partition("|")
        if not bar or not re.fullmatch(r"e[0-9]{1,5}", embed):
            raise UserError(f"architecture string {text!r} must start with the embedding width, 'e<width>|' "
                            f"(expected e.g. {example!r})")
        parts = rest.split("-") if rest else []
        if len(parts) > self.max_layers:
            raise UserError(f"architecture string {text!r} has {len(parts)} layers, space {self.name!r} at most "
                            f"{self.max_layers}")
        arch: dict[str, Any] = {"embed": int(embed[1:]), "layers": len(parts)}
        for i in range(self.max_layers):
            heads, ffn = min(self.config.heads), min(self.config.ffns)
            if i < len(parts):
                match = self._LAYER.fullmatch(parts[i])
                if not match:
                    raise UserError(f"architecture string {text!r}: layer {parts[i]!r} is not of the form "
                                    "'h<heads>f<ffn>'")
                heads, ffn = int(match.group(1)), int(match.group(2))
            arch[f"layer{i + 1}.heads"], arch[f"layer{i + 1}.ffn"] = heads, ffn
        return self.validate(arch)

    def size(self) -> int:
        """Number of distinct networks (unused layers do not count)."""
        per_layer = len(self.config.heads) * len(self.config.ffns)
        return len(self.config.embeds) * sum(per_layer ** d for d in self.config.layers)

    def enumerate(self) -> Iterator[Arch]:
        """Every distinct network once (unused layers at the smallest options), in a fixed order."""
        pairs = [f"h{h}f{f}" for h in self.config.heads for f in self.config.ffns]
        for embed in self.config.embeds:
            for depth in self.config.layers:
                for layers in itertools.product(pairs, repeat=depth):
                    yield self.from_string(f"e{embed}|" + "-".join(layers))

    def encode(self, arch: Mapping[str, Any]) -> list[float]:
        """Numeric features for surrogate models: the embedding width's and the depth's ranks, then per layer
        the heads' and feed-forward width's ranks in (0, 1] when the layer is used and 0 when it is not."""
        arch = self.validate(arch)
        c = self.config
        out = [c.embeds.index(arch["embed"]) / max(len(c.embeds) - 1, 1),
               c.layers.index(arch["layers"]) / max(len(c.layers) - 1, 1)]
        for i in range(self.max_layers):
            used = i < arch["layers"]
            out.append((c.heads.index(arch[f"layer{i + 1}.heads"]) + 1) / len(c.heads) if used else 0.0)
            out.append((c.ffns.index(arch[f"layer{i + 1}.ffn"]) + 1) / len(c.ffns) if used else 0.0)
        return out

    # ---- the additive view (supernet.family.SlotLayout) -------------------------------------------------
    def layout(self) -> SlotLayout:
        """One group of ``max(layers)`` slots; a slot's choice is embedding mode x heads x feed-forward width."""
        c = self.config
        return SlotLayout(groups=1, depths=c.layers, choices=len(c.embeds) * len(c.heads) * len(c.ffns),
                          split=len(c.ffns), modes=len(c.embeds))

    def _choice(self, arch: Arch, heads: int, ffn: int) -> tuple[int, int]:
        """The slot's two code digits: ``mode x heads`` index and feed-forward index."""
        c = self.config
        return c.embeds.index(arch["embed"]) * len(c.heads) + c.heads.index(heads), c.ffns.index(ffn)

    def slots(self, arch: Mapping[str, Any]) -> Iterator[tuple[int, int, int]]:
        """``(0, layer, choice)`` of every used layer of a validated ``arch`` (see :meth:`layout`)."""
        split = len(self.config.ffns)
        for i, heads, ffn in self.layers(arch):
            first, second = self._choice(arch, heads, ffn)
            yield 0, i, first * split + second

    def to_codes(self, arch: Mapping[str, Any]) -> list[int]:
        """The sampler's code: the depth index, then per layer slot its two digits (unused ones keep their
        values, in the network's mode)."""
        arch = self.validate(arch)
        codes = [self.config.layers.index(arch["layers"])]
        for i in range(self.max_layers):
            codes.extend(self._choice(arch, arch[f"layer{i + 1}.heads"], arch[f"layer{i + 1}.ffn"]))
        return codes

    def from_codes(self, codes: Sequence[int]) -> Arch:
        """Inverse of :meth:`to_codes`: the mode is the first layer's; a used layer of another mode, or a code
        of another shape, is a one-line error."""
        codes = index_list(codes)
        c = self.config
        if len(codes) != self.layout().width:
            raise UserError(f"an encoded architecture of space {self.name!r} has {self.layout().width} codes, "
                            f"got {len(codes)}")
        depth = c.layers[_option_index(codes[0], "layers", len(c.layers))]
        mode = _option_index(codes[1], "layer1 mode x heads", len(c.embeds) * len(c.heads)) // len(c.heads)
        arch: dict[str, Any] = {"embed": c.embeds[mode], "layers": depth}
        for i in range(self.max_layers):
            first = _option_index(codes[1 + 2 * i], f"layer{i + 1} mode x heads", len(c.embeds) * len(c.heads))
            if i < depth and first // len(c.heads) != mode:
                raise UserError(f"encoded architecture of space {self.name!r}: layer {i + 1} is of another "
                                "embedding width than layer 1")
            arch[f"layer{i + 1}.heads"] = c.heads[first % len(c.heads)]
            arch[f"layer{i + 1}.ffn"] = c.ffns[_option_index(codes[2 + 2 * i], f"layer{i + 1} ffn", len(c.ffns))]
        return self.validate(arch)


@register_space("tfm-sst2")
def tfm_sst2() -> TransformerConfig:
    """An elastic encoder for SST-2 sentiment (binary): widths 64-128, 1-4 layers, 1-4 heads of 32, feed-forward
    128-512, sentences of up to 64 words from a vocabulary of 16,000 (SST-2's training split has 14,817)."""
    return TransformerConfig(name="tfm-sst2", embeds=(64, 96, 128), layers=(1, 2, 3, 4), heads=(1, 2, 4),
                             ffns=(128, 256, 512))


class TransformerFamily:
    """Elastic transformer encoders: :mod:`supernet.transformer_model` builds the networks."""

    name = "transformer"
    default_sampling = "sandwich"
    default_optimizer = "adamw"  # SGD's steps spike the loss of a transformer trained from scratch

    def config_from_dict(self, data: Mapping[str, Any], source: str) -> TransformerConfig:
        return TransformerConfig.from_dict(data, source)

    def space(self, config: TransformerConfig) -> TransformerSpace:
        return TransformerSpace(config)

    def supernet(self, config: TransformerConfig) -> Any:
        from supernet.transformer_model import TransformerSupernet
        return TransformerSupernet(config)

    def subnet(self, config: TransformerConfig, arch: Mapping[str, Any]) -> Any:
        from supernet.transformer_model import TransformerSubnet
        return TransformerSubnet(config, arch)

    def units(self, config: TransformerConfig) -> Iterator[Unit]:
        from supernet.transformer_model import units
        return units(config)

    def unit_costs(self, config: TransformerConfig) -> UnitCosts:
        """Every layer slot costs its layer at the mode's width; the first (always used) also the embedding
        and the head at that width."""
        slots = {}
        for m, e in enumerate(config.embeds):
            for hi, h in enumerate(config.heads):
                for fi, f in enumerate(config.ffns):
                    choice = (m * len(config.heads) + hi) * len(config.ffns) + fi
                    for b in range(max(config.layers)):
                        fixed = ((f"embed.e{e}", 1), (f"head.e{e}", 1)) if b == 0 else ()
                        slots[(0, b, choice)] = ((f"layer.e{e}.h{h}.f{f}", 1), *fixed)
        return UnitCosts((), slots)


register_family(TransformerFamily())
