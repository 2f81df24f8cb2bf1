"""NAS-Bench-201's networks: the weight-sharing supernet, the plain subnet of one cell, and their units.

The layers are the benchmark's (AutoDL-Projects ``cell_operations``/``TinyNetwork``): ReLU-Conv-BN
convolutions, a zero op (``x * 0``), identity, 3x3 average pooling (stride 1, padding not counted), a 3x3
stem conv with batch norm, and between stages the residual reduction block (a ResNet basic block of stride
2 whose shortcut is 2x2 average pooling then a 1x1 conv). Every cell position of the supernet holds a
:class:`MixedOp` per edge (all five ops); :meth:`NB201Supernet.extract` copies the chosen op of every edge
into an :class:`NB201Subnet`, which is made of standard torch layers under the same parameter names, runs
and scripts without this project, and computes exactly what the supernet computes for that cell.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from supernet.kernels import mixed_edge
from supernet.model import init_weights
from supernet.nb201 import EDGES, KEYS, OPS, Arch, NB201Config, NB201Space


class ReLUConvBN(nn.Sequential):
    """ReLU, convolution (no bias), batch norm: the benchmark's convolution op and block half."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(out_channels))


class Zero(nn.Module):
    """The ``none`` op: zeros of the input's shape (as ``x * 0``, so that gradients and NaNs behave as the
    benchmark's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(op: str, channels: int) -> nn.Module:
    """A fresh ``op`` of :data:`supernet.nb201.OPS` from ``channels`` to ``channels`` at stride 1."""
    if op == "none":
        return Zero()
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if op == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 op {op!r}")


def _fusable(bn1: nn.BatchNorm2d, bn3: nn.BatchNorm2d) -> bool:
    """Whether two batch norms step alike, so that one fused call can stand for both: affine, with running
    statistics, in the same mode, with the same eps, momentum and (for a cumulative momentum) batch count."""
    return (bn1.affine and bn3.affine and bn1.track_running_stats and bn3.track_running_stats
            and bn1.running_mean is not None and bn3.running_mean is not None and bn1.training == bn3.training
            and bn1.eps == bn3.eps and bn1.momentum == bn3.momentum
            and (bn1.momentum is not None or bool(bn1.num_batches_tracked == bn3.num_batches_tracked)))


def _batch_norm_step(bn: nn.BatchNorm2d) -> float:
    """What ``nn.BatchNorm2d.forward`` does before normalising: in training, count the batch; returns the
    running-statistics factor (``momentum``, or ``1 / batches`` for a cumulative average)."""
    if not bn.training:
        return 0.0
    bn.num_batches_tracked.add_(1)
    return 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum


class MixedOp(nn.ModuleDict):
    """One edge of the supernet: all five candidate ops by name; ``forward`` runs the one it is given."""

    def __init__(self, channels: int):
        super().__init__({op: make_op(op, channels) for op in OPS})

    def forward(self, x: torch.Tensor, op: str) -> torch.Tensor:
        return self[op](x)

    def mixed(self, x: torch.Tensor, weights: torch.Tensor, *, fused: bool = True) -> torch.Tensor:
        """``sum_k weights[k] * op_k(x)`` over the five ops in :data:`supernet.nb201.OPS` order (DARTS' mixed
        edge); differentiable in ``x``, the ops' parameters and ``weights``; the batch norms move their running
        statistics in training as when each op runs alone.

        ``fused``: one :func:`supernet.kernels.mixed_edge` call (the C++ kernel where built) whenever the two
        batch norms are standard ones in the same mode; otherwise, or with ``fused=False``, the ops one by one.
        """
        bn1, bn3 = self["nor_conv_1x1"][2], self["nor_conv_3x3"][2]
        if not (fused and _fusable(bn1, bn3) and weights.shape == (len(OPS),)):
            return sum(w * self[op](x) for w, op in zip(weights, OPS))
        factor = _batch_norm_step(bn1)
        _batch_norm_step(bn3)
        return mixed_edge(x, weights, self["nor_conv_1x1"][1].weight, self["nor_conv_3x3"][1].weight,
                          bn1.weight, bn1.bias, bn1.running_mean, bn1.running_var,
                          bn3.weight, bn3.bias, bn3.running_mean, bn3.running_var, bn1.training, factor, bn1.eps)

    def hard(self, x: torch.Tensor, weights: torch.Tensor, index: int) -> torch.Tensor:
        """The edge under a one-hot straight-through ``weights`` (GDAS): only op ``index`` runs; the other
        weights are zero in value but added so that their gradients flow (as GDAS does)."""
        out = weights[index] * self[OPS[index]](x)
        return out + (weights.sum() - weights[index])


class SearchCell(nn.Module):
    """A supernet cell: a :class:`MixedOp` per edge, in :data:`supernet.nb201.KEYS` order."""

    def __init__(self, channels: int):
        super().__init__()
        self.edges = nn.ModuleList(MixedOp(channels) for _ in EDGES)

    def forward(self, x: torch.Tensor, ops: Sequence[str]) -> torch.Tensor:
        nodes = [x]
        for (target, source), edge, op in zip(EDGES, self.edges, ops):
            y = edge(nodes[source], op)
            if target == len(nodes):
                nodes.append(y)
            else:
                nodes[target] = nodes[target] + y
        return nodes[-1]


    def mixed(self, x: torch.Tensor, weights: Sequence[torch.Tensor], hard: bool = False) -> torch.Tensor:
        """The cell with every edge a weighted mix of its ops (``weights[k]`` for edge ``k``, OPS order);
        ``hard``: each weight vector is one-hot (straight-through) and only its op runs."""
        nodes = [x]
        for (target, source), edge, w in zip(EDGES, self.edges, weights):
            y = edge.hard(nodes[source], w, int(w.argmax())) if hard else edge.mixed(nodes[source], w)
            if target == len(nodes):
                nodes.append(y)
            else:
                nodes[target] = nodes[target] + y
        return nodes[-1]


class InferCell(nn.Module):
    """A static cell: edge ``k`` holds only its op, under the op's name (``edges.k.<op>``) as in the supernet."""

    def __init__(self, channels: int, ops: Sequence[str]):
        super().__init__()
        self.edges = nn.ModuleList(nn.Sequential(OrderedDict([(op, make_op(op, channels))])) for op in ops)
        self.sources = [source for _, source in EDGES]
        self.targets = [target for target, _ in EDGES]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for k, edge in enumerate(self.edges):
            y = edge(nodes[self.sources[k]])
            if self.targets[k] == len(nodes):
                nodes.append(y)
            else:
                nodes[self.targets[k]] = nodes[self.targets[k]] + y
        return nodes[-1]


class ResidualReduction(nn.Module):
    """The benchmark's reduction block between stages: a ResNet basic block of stride 2 whose shortcut is
    2x2 average pooling then a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv_a = ReLUConvBN(in_channels, out_channels, 3, stride=2)
        self.conv_b = ReLUConvBN(out_channels, out_channels, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2),
                                        nn.Conv2d(in_channels, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class Normalize(nn.Module):
    """Fixed per-channel normalisation of pixels in [0, 1], ``(x - mean) / std``: the network's first layer,
    so training, evaluation and every exported model take plain pixels. Not a parameter, not in the state
    dict: the config holds the statistics."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("scale", 1.0 / torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.scale


def _stem(config: NB201Config) -> nn.Sequential:
    return nn.Sequential(Normalize(config.mean, config.std),
                         nn.Conv2d(config.in_channels, config.channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(config.channels))


def _head(config: NB201Config) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Batch norm and ReLU, global average pooling, linear classifier: the end of every network, as the
    ``head``, ``pool`` and ``classifier`` attributes of its module."""
    channels = config.stage_channels()[-1]
    return (nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True)), nn.AdaptiveAvgPool2d(1),
            nn.Linear(channels, config.num_classes))


class Head(nn.Module):
    """The :func:`_head` layers alone (the ``head`` unit)."""

    def __init__(self, config: NB201Config):
        super().__init__()
        self.head, self.pool, self.classifier = _head(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.head(x)), 1))


def _cells(config: NB201Config, cell: Callable[[int], nn.Module]) -> nn.ModuleList:
    """The benchmark's sequence: N cells, reduction, N cells, reduction, N cells (``cell(channels)``)."""
    layers: list[nn.Module] = []
    widths = config.stage_channels()
    for t, width in enumerate(widths):
        if t:
            layers.append(ResidualReduction(widths[t - 1], width))
        layers.extend(cell(width) for _ in range(config.cells))
    return nn.ModuleList(layers)


class NB201Subnet(nn.Module):
    """The plain network of one cell (NAS-Bench-201's ``TinyNetwork``); ``arch`` is its raw benchmark string."""

    __jit_unused_properties__ = ["stages"]  # a view for training code, not part of the scripted network

    def __init__(self, config: NB201Config, arch: Mapping[str, str]):
        super().__init__()
        space = NB201Space(config)
        arch = space.validate(arch)
        self.arch = space.arch_string(arch)
        self.stem = _stem(config)
        self.cells = _cells(config, lambda width: InferCell(width, [arch[key] for key in KEYS]))
        self.head, self.pool, self.classifier = _head(config)
        self._stage_cells = config.cells

    @property
    def stages(self) -> list[nn.Sequential]:
        """The three stages in order, each its cells after the reduction block that leads into it (the
        first has none), as the subnet contract names them (``search.retrain --mode last-stages``). A view
        of :attr:`cells`, not registered, so parameter names stay ``cells.<k>.*``."""
        cells, n = list(self.cells), self._stage_cells + 1  # a stage after the first: reduction + cells
        return [nn.Sequential(*cells[max(0, t * n - 1):(t + 1) * n - 1]) for t in range(3)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.classifier(torch.flatten(self.pool(self.head(x)), 1))


class NB201Supernet(nn.Module):
    """Every cell in one set of weights: each edge of each cell position holds all five ops; ``forward``
    runs the active cell in every position."""

    def __init__(self, config: NB201Config):
        super().__init__()
        self.config = config
        self.space = NB201Space(config)
        self.stem = _stem(config)
        self.cells = _cells(config, SearchCell)
        self.head, self.pool, self.classifier = _head(config)
        init_weights(self)
        self.active: Arch = {}
        self._ops: list[str] = []
        self.set_active(self.space.largest())

    def set_active(self, arch: Mapping[str, str]) -> Arch:
        """Make ``arch`` the cell that ``forward`` computes; returns the validated architecture."""
        self.active = self.space.validate(arch)
        self._ops = [self.active[key] for key in KEYS]
        return self.active

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x, self._ops) if isinstance(cell, SearchCell) else cell(x)
        return self.classifier(torch.flatten(self.pool(self.head(x)), 1))

    def forward_mixed(self, x: torch.Tensor, weights: Mapping[str, torch.Tensor], *, hard: bool = False) -> torch.Tensor:
        """The relaxed network of differentiable search: every edge of every cell mixes its five ops by
        ``weights[key]`` (one vector per :data:`supernet.nb201.KEYS` entry, in OPS order, shared by all cells
        as in NAS-Bench-201's DARTS); ``hard``: the vectors are one-hot straight-through samples (GDAS) and
        only the sampled op of each edge runs. :meth:`set_active` plays no part."""
        edge_weights = [weights[key] for key in KEYS]
        x = self.stem(x)
        for cell in self.cells:
            x = cell.mixed(x, edge_weights, hard) if isinstance(cell, SearchCell) else cell(x)
        return self.classifier(torch.flatten(self.pool(self.head(x)), 1))

    def slot_weights(self, weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``[groups, slots, choices]`` of the space's :class:`supernet.family.SlotLayout`: how much each slot
        runs each choice under ``weights`` (an edge's op probabilities), for expected metrics."""
        return torch.stack([weights[key] for key in KEYS]).unsqueeze(1)

    @torch.no_grad()
    def extract(self, arch: Mapping[str, str] | None = None) -> NB201Subnet:
        """A plain :class:`NB201Subnet` for ``arch`` (default: the active one) with copies of its weights."""
        subnet = NB201Subnet(self.config, self.active if arch is None else arch)
        source = self.state_dict()
        subnet.load_state_dict({key: source[key].clone() for key in subnet.state_dict()})
        return subnet.train(self.training)


Unit = tuple[str, Callable[[], nn.Module], tuple[int, int, int]]


def units(config: NB201Config) -> Iterator[Unit]:
    """Every piece a network is made of, for timing and counting one by one: ``(key, build, input shape)``.

    Keys are ``"stem"``, ``"stage{t}.{op}"`` (one op at stage ``t``'s shape), ``"reduction1"``,
    ``"reduction2"`` and ``"head"``; :func:`supernet.family.unit_keys` says how often each runs in a cell's
    network. ``build()`` returns a fresh module in eval mode.
    """
    widths, sizes = config.stage_channels(), config.stage_sizes()
    yield "stem", lambda: _stem(config).eval(), (config.in_channels, sizes[0], sizes[0])
    for t, (width, size) in enumerate(zip(widths, sizes), start=1):
        if t > 1:
            def reduction(c_in: int = widths[t - 2], c_out: int = width) -> nn.Module:
                return ResidualReduction(c_in, c_out).eval()
            yield f"reduction{t - 1}", reduction, (widths[t - 2], sizes[t - 2], sizes[t - 2])
        for op in OPS:
            def build(o: str = op, c: int = width) -> nn.Module:
                return make_op(o, c).eval()
            yield f"stage{t}.{op}", build, (width, size, size)
    yield "head", lambda: Head(config).eval(), (widths[-1], sizes[-1], sizes[-1])
