"""The weight-sharing supernet and the plain subnets extracted from it.

:class:`Supernet` holds the largest weight of every layer; ``set_active(arch)`` picks the subnet that
``forward`` computes. :meth:`Supernet.extract` returns a :class:`Subnet`, a plain ``nn.Module`` made of
standard torch layers whose parameter names are those of the supernet, holding copies of the sliced weights:
it needs nothing of this project to run or to export to TorchScript, and its output equals the supernet's.
"""
from __future__ import annotations

from typing import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from supernet.kernels import announce
from supernet.layers import (ElasticBatchNorm2d, ElasticDepthwiseConv2d, ElasticPointwiseConv2d,
                             ElasticSqueezeExcite, activation, centre_kernel, make_divisible)
from supernet.space import Arch, Space, SpaceConfig, StageConfig


def _stem(config: SpaceConfig) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(config.in_channels, config.stem_channels, 3, config.stem_stride, 1, bias=False),
        nn.BatchNorm2d(config.stem_channels),
        nn.Hardswish(inplace=True)]
    if config.first_block:
        layers.append(MBConv(config.stem_channels, StageConfig(config.stem_channels, 1), 1, kernel=3, expand=1))
    return nn.Sequential(*layers)


def _classifier(config: SpaceConfig) -> nn.Module:
    """The last linear layer, after MobileNetV3's pooled feature layer where the space has one."""
    if not config.feature_channels:
        return nn.Linear(config.head_channels, config.num_classes)
    return nn.Sequential(nn.Linear(config.head_channels, config.feature_channels, bias=False),
                         nn.Hardswish(inplace=True), nn.Linear(config.feature_channels, config.num_classes))


def _head(config: SpaceConfig) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(config.stages[-1].width, config.head_channels, 1, bias=False),
        nn.BatchNorm2d(config.head_channels),
        nn.Hardswish(inplace=True))


def _stage_inputs(config: SpaceConfig) -> list[int]:
    """Input channel count of every stage."""
    return [config.stem_channels] + [stage.width for stage in config.stages[:-1]]


class ElasticMBConv(nn.Module):
    """Inverted residual block (expand 1x1, depthwise kxk, optional SE, project 1x1) at its largest size."""

    def __init__(self, in_channels: int, stage: StageConfig, stride: int, max_kernel: int, max_expand: int):
        super().__init__()
        hidden = in_channels * max_expand
        self.expand_conv = ElasticPointwiseConv2d(in_channels, hidden)
        self.expand_bn = ElasticBatchNorm2d(hidden)
        self.expand_act = activation(stage.activation)
        self.dw_conv = ElasticDepthwiseConv2d(hidden, max_kernel, stride)
        self.dw_bn = ElasticBatchNorm2d(hidden)
        self.dw_act = activation(stage.activation)
        self.se = ElasticSqueezeExcite(hidden) if stage.use_se else nn.Identity()
        self.project_conv = ElasticPointwiseConv2d(hidden, stage.width)
        self.project_bn = ElasticBatchNorm2d(stage.width)
        self.residual = stride == 1 and in_channels == stage.width

    def forward(self, x: torch.Tensor, kernel: int, expand: int) -> torch.Tensor:
        y = self.expand_act(self.expand_bn(self.expand_conv(x, x.shape[1] * expand)))
        y = self.se(self.dw_act(self.dw_bn(self.dw_conv(y, kernel))))
        y = self.project_bn(self.project_conv(y))
        return x + y if self.residual else y


class SqueezeExcite(nn.Module):
    """Static MobileNetV3 squeeze-and-excite, parameter names as in :class:`ElasticSqueezeExcite`."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        mid = make_divisible(channels / reduction)
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.expand = nn.Conv2d(mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.relu(self.reduce(x.mean((2, 3), keepdim=True)))
        return x * F.hardsigmoid(self.expand(scale))


class MBConv(nn.Module):
    """Static inverted residual block, parameter names as in :class:`ElasticMBConv`."""

    def __init__(self, in_channels: int, stage: StageConfig, stride: int, kernel: int, expand: int):
        super().__init__()
        hidden = in_channels * expand
        if expand == 1:  # no expansion: the depthwise conv reads the input directly (MobileNetV3's first block)
            self.expand_conv, self.expand_bn, self.expand_act = nn.Identity(), nn.Identity(), nn.Identity()
        else:
            self.expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self.expand_bn = nn.BatchNorm2d(hidden)
            self.expand_act = activation(stage.activation)
        self.dw_conv = nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False)
        self.dw_bn = nn.BatchNorm2d(hidden)
        self.dw_act = activation(stage.activation)
        self.se = SqueezeExcite(hidden) if stage.use_se else nn.Identity()
        self.project_conv = nn.Conv2d(hidden, stage.width, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(stage.width)
        self.residual = stride == 1 and in_channels == stage.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand_act(self.expand_bn(self.expand_conv(x)))
        y = self.se(self.dw_act(self.dw_bn(self.dw_conv(y))))
        y = self.project_bn(self.project_conv(y))
        if self.residual:
            return x + y
        return y


def init_weights(model: nn.Module) -> nn.Module:
    """Fresh weights as in MobileNetV3: Kaiming (fan-out) convolutions, N(0, 0.01) linear layers, zero biases.

    The supernet starts from these; so does a subnet trained from scratch, for a like-for-like comparison.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


class Subnet(nn.Module):
    """A plain network for one architecture; ``arch`` is kept as its canonical string."""

    def __init__(self, config: SpaceConfig, arch: Mapping[str, int]):
        super().__init__()
        space = Space(config)
        arch = space.validate(arch)
        self.arch = space.to_string(arch)
        self.stem = _stem(config)
        stages: list[nn.Sequential] = [nn.Sequential() for _ in config.stages]
        inputs = _stage_inputs(config)
        for s, b, kernel, expand in space.blocks(arch):
            stage = config.stages[s]
            in_channels = inputs[s] if b == 0 else stage.width
            stages[s].append(MBConv(in_channels, stage, stage.stride if b == 0 else 1, kernel, expand))
        self.stages = nn.ModuleList(stages)
        self.head = _head(config)
        self.classifier = _classifier(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.classifier(self.head(x).mean((2, 3)))


class Supernet(nn.Module):
    """All subnets of a space in one set of weights; ``forward`` runs the active one."""

    def __init__(self, config: SpaceConfig):
        super().__init__()
        self.config = config
        self.space = Space(config)
        self.stem = _stem(config)
        inputs = _stage_inputs(config)
        self.stages = nn.ModuleList(
            nn.ModuleList(
                ElasticMBConv(inputs[s] if b == 0 else stage.width, stage, stage.stride if b == 0 else 1,
                              max(config.kernels), max(config.expands))
                for b in range(self.space.max_depth))
            for s, stage in enumerate(config.stages))
        self.head = _head(config)
        self.classifier = _classifier(config)
        self._reset_parameters()
        self.active: Arch = {}
        self._active_blocks: list[tuple[int, int, int, int]] = []
        self.set_active(self.space.largest())

    def _reset_parameters(self) -> None:
        init_weights(self)

    def set_active(self, arch: Mapping[str, int]) -> Arch:
        """Make ``arch`` the subnet that ``forward`` computes; returns the validated architecture."""
        self.active = self.space.validate(arch)
        self._active_blocks = list(self.space.blocks(self.active))
        return self.active

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        announce()  # once per process: which path the elastic ops run
        x = self.stem(x)
        for s, b, kernel, expand in self._active_blocks:
            x = self.stages[s][b](x, kernel, expand)
        return self.classifier(self.head(x).mean((2, 3)))

    @torch.no_grad()
    def extract(self, arch: Mapping[str, int] | None = None) -> Subnet:
        """A plain :class:`Subnet` for ``arch`` (default: the active one) with copies of the sliced weights."""
        subnet = Subnet(self.config, self.active if arch is None else arch)
        source = self.state_dict()
        subnet.load_state_dict({key: slice_like(source[key], value.shape)
                                for key, value in subnet.state_dict().items()})
        return subnet.train(self.training)


def slice_like(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Cut ``tensor`` down to ``shape`` as the elastic layers do: leading channels, central kernel window."""
    if tensor.dim() == 4 and tensor.shape[-1] != shape[-1]:
        tensor = centre_kernel(tensor, shape[-1])
    return tensor[tuple(slice(0, n) for n in shape)].clone()


def _conv_out(size: int, stride: int) -> int:
    """Spatial size after a "same"-padded odd-kernel convolution."""
    return (size - 1) // stride + 1


class _HeadUnit(nn.Module):
    def __init__(self, config: SpaceConfig):
        super().__init__()
        self.head = _head(config)
        self.classifier = _classifier(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(x).mean((2, 3)))


Unit = tuple[str, Callable[[], nn.Module], tuple[int, int, int]]


def units(config: SpaceConfig) -> Iterator[Unit]:
    """Every piece that a subnet is made of, for timing one by one: ``(key, build, input shape)``.

    Keys are ``"stem"``, ``"head"`` and ``"stage{s}.block{b}.k{kernel}e{expand}"``; a subnet is the
    sequence :func:`supernet.family.unit_keys` names (the mbv3 family's unit costs). ``build()`` returns a freshly initialised module in eval mode.
    """
    size = config.input_size
    yield "stem", lambda: _stem(config).eval(), (config.in_channels, size, size)
    size = _conv_out(size, config.stem_stride)
    inputs = _stage_inputs(config)
    for s, stage in enumerate(config.stages):
        for b in range(max(config.depths)):
            channels, stride = (inputs[s], stage.stride) if b == 0 else (stage.width, 1)
            for kernel in config.kernels:
                for expand in config.expands:
                    def build(c=channels, st=stage, sd=stride, k=kernel, e=expand) -> nn.Module:
                        return MBConv(c, st, sd, k, e).eval()
                    yield f"stage{s + 1}.block{b}.k{kernel}e{expand}", build, (channels, size, size)
            size = _conv_out(size, stride)
    yield "head", lambda: _HeadUnit(config).eval(), (config.stages[-1].width, size, size)
