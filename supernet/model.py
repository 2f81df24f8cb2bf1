"""The weight-sharing supernet and the plain subnets extracted from it.

:class:`Supernet` holds the largest weight of every layer; ``set_active(arch)`` picks the subnet that
``forward`` computes. :meth:`Supernet.extract` returns a :class:`Subnet`, a plain ``nn.Module`` made of
standard torch layers whose parameter names are those of the supernet, holding copies of the sliced weights:
it needs nothing of this project to run or to export to TorchScript, and its output equals the supernet's.
:meth:`Supernet.forward_mixed` is the relaxed network of differentiable search (every choice a weighted mix of
its options) and :meth:`Supernet.slot_weights` the matching weights of the additive metric tables.
"""
from __future__ import annotations

from typing import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from supernet.audio import LogMel
from supernet.errors import UserError
from supernet.kernels import announce, mixed_dwconv
from supernet.layers import (ElasticBatchNorm2d, ElasticDepthwiseConv2d, ElasticPointwiseConv2d,
                             ElasticSqueezeExcite, activation, centre_kernel, make_divisible, step_mask)
from supernet.space import Arch, Space, SpaceConfig, StageConfig


def _stem(config: SpaceConfig) -> nn.Sequential:
    """The stem convolution; first the log-mel front end where the space takes audio (so that every subnet and
    every export takes raw waveforms)."""
    layers: list[nn.Module] = [] if config.frontend is None else [LogMel(config.frontend)]
    layers += [
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

    def mixed(self, x: torch.Tensor, kernels: Sequence[int], kernel_weights: torch.Tensor, expands: Sequence[int],
              expand_weights: torch.Tensor) -> torch.Tensor:
        """The relaxed block (Single-Path NAS / FBNet): the largest expansion runs, its depthwise conv is one
        superkernel mixing the centre ``kernels[i]`` windows of the largest weight by ``kernel_weights``
        (``oneshot::mixed_dwconv``), and the hidden channels, after the depthwise conv's batch norm and
        activation, are multiplied by the mask ``sum_i expand_weights[i] * 1[c < in_channels * expands[i]]``
        (the squeeze-excite's reduced channels by the matching mask of their widths).

        Every layer before the mask works channel by channel, so with one-hot weights the leading channels
        are exactly those of ``forward(x, kernel, expand)`` and the rest are zeroed before anything mixes
        channels: the output equals ``forward``'s, in eval and in training mode alike (batch statistics are
        per channel). What differs in training mode is only that the running statistics of the masked-out
        channels move too, where ``forward`` leaves them untouched.
        """
        y = self.expand_act(self.expand_bn(self.expand_conv(x)))
        candidates = [centre_kernel(self.dw_conv.weight, k) for k in kernels]
        y = self.dw_act(self.dw_bn(mixed_dwconv(y, candidates, kernel_weights, self.dw_conv.stride[0])))
        widths = [x.shape[1] * e for e in expands]
        y = y * step_mask(y.shape[1], widths, expand_weights).view(1, -1, 1, 1)
        if isinstance(self.se, ElasticSqueezeExcite):
            y = self.se.mixed(y, widths, expand_weights)
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

    def forward_mixed(self, x: torch.Tensor, weights: Mapping[str, torch.Tensor], *, hard: bool = False) -> torch.Tensor:
        """The relaxed network of differentiable search; ``weights[key]`` is a 1-D tensor over
        ``space.choices[key]`` (same order) for every key. :meth:`set_active` plays no part.

        Each block is :meth:`ElasticMBConv.mixed` under its kernel and expand weights; each stage returns
        ``sum_j w[j] * x_{depths[j]}`` where ``x_d`` is the output of its first ``d`` blocks (each block reads
        the previous block's output, not the mix). One-hot weights give exactly ``forward`` of that
        architecture (up to float rounding of the superkernel). ``hard``: the vectors are one-hot
        straight-through samples (GDAS, FBNet): each stage runs only the blocks of its sampled depth (the
        argmax); deeper depths and the kernel/expand vectors of the blocks not run enter as zero-valued sums,
        as in GDAS, so that every vector gets a gradient; kernels and expansions still mix by the superkernel
        and mask, whose gradients are the true straight-through ones.
        """
        announce()
        w = check_mixed_weights(self.space.choices, weights)
        c = self.config
        x = self.stem(x)
        for s, blocks in enumerate(self.stages):
            name = f"stage{s + 1}"
            depth_weights = w[f"{name}.depth"]
            run = c.depths[int(depth_weights.argmax())] if hard else self.space.max_depth
            outputs = [x]
            for b in range(run):
                outputs.append(blocks[b].mixed(outputs[-1], c.kernels, w[f"{name}.block{b}.kernel"], c.expands,
                                               w[f"{name}.block{b}.expand"]))
            x = sum(wd * outputs[d] for wd, d in zip(depth_weights, c.depths) if d <= run)
            if hard:  # zero-valued terms: the depths and block choices that did not run still get gradients
                unused = [wd for wd, d in zip(depth_weights, c.depths) if d > run]
                for b in range(run, self.space.max_depth):
                    for v in (w[f"{name}.block{b}.kernel"], w[f"{name}.block{b}.expand"]):
                        unused.append(v.sum() - v[int(v.argmax())])
                x = x + sum(unused) if unused else x
        return self.classifier(self.head(x).mean((2, 3)))

    def slot_weights(self, weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``[stages, max depth, kernels * expands]`` over the space's :class:`supernet.family.SlotLayout`:
        ``[s, b, ki * E + ei] = P(block b of stage s runs) * w_kernel[ki] * w_expand[ei]``, where ``P(block b
        runs)`` is the sum of the stage's depth weights of depths above ``b``. With probabilities as
        ``weights``, ``(slot_weights * table.blocks[..., m]).sum() + table.base[m]`` is the expected metric
        ``m`` of a :class:`supernet.sampler.MetricTable`; with one-hot weights, that architecture's metric."""
        w = check_mixed_weights(self.space.choices, weights)
        c, depth = self.config, self.space.max_depth
        stages = []
        for s in range(len(c.stages)):
            depth_weights = w[f"stage{s + 1}.depth"]
            runs = step_mask(depth, c.depths, depth_weights)  # [b]: P(block b runs) = sum of w[d > b]
            choice = torch.stack([torch.outer(w[f"stage{s + 1}.block{b}.kernel"],
                                              w[f"stage{s + 1}.block{b}.expand"]).reshape(-1) for b in range(depth)])
            stages.append(runs[:, None] * choice)
        return torch.stack(stages)

    @torch.no_grad()
    def extract(self, arch: Mapping[str, int] | None = None) -> Subnet:
        """A plain :class:`Subnet` for ``arch`` (default: the active one) with copies of the sliced weights."""
        subnet = Subnet(self.config, self.active if arch is None else arch)
        source = self.state_dict()
        subnet.load_state_dict({key: slice_like(source[key], value.shape)
                                for key, value in subnet.state_dict().items()})
        return subnet.train(self.training)


def check_mixed_weights(choices: Mapping[str, Sequence[object]],
                        weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` in the key order of ``choices`` when it holds, for every key and no other, a 1-D tensor with
    one entry per option; else a one-line :class:`UserError` naming the key."""
    if not isinstance(weights, Mapping):
        raise UserError(f"architecture weights must be a dict of tensors, got {type(weights).__name__}")
    unknown = [key for key in weights if key not in choices]
    if unknown:
        raise UserError(f"architecture weights name {unknown[0]!r}, which is not a choice of this space")
    out = {}
    for key, options in choices.items():
        value = weights.get(key)
        if not isinstance(value, torch.Tensor) or value.shape != (len(options),):
            got = "nothing" if value is None else f"shape {list(value.shape)}" if isinstance(value, torch.Tensor) \
                else type(value).__name__
            raise UserError(f"architecture weights of {key} must be a 1-D tensor of {len(options)} entries "
                            f"(one per option {list(options)}), got {got}")
        out[key] = value
    return out


def slice_like(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Cut ``tensor`` down to ``shape`` as the elastic layers do: leading channels, central kernel window."""
    if tensor.dim() == 4 and tensor.shape[-1] != shape[-1]:
        tensor = centre_kernel(tensor, shape[-1])
    return tensor[tuple(slice(0, n) for n in shape)].clone()


def _conv_shape(shape: tuple[int, int], stride: int) -> tuple[int, int]:
    """The spatial shape after a convolution of ``stride`` padded to keep the size at stride 1."""
    return (_conv_out(shape[0], stride), _conv_out(shape[1], stride))


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
    yield "stem", lambda: _stem(config).eval(), config.input_shape
    size = _conv_shape(config.feature_shape[1:], config.stem_stride)
    inputs = _stage_inputs(config)
    for s, stage in enumerate(config.stages):
        for b in range(max(config.depths)):
            channels, stride = (inputs[s], stage.stride) if b == 0 else (stage.width, 1)
            for kernel in config.kernels:
                for expand in config.expands:
                    def build(c=channels, st=stage, sd=stride, k=kernel, e=expand) -> nn.Module:
                        return MBConv(c, st, sd, k, e).eval()
                    yield f"stage{s + 1}.block{b}.k{kernel}e{expand}", build, (channels, *size)
            size = _conv_shape(size, stride)
    yield "head", lambda: _HeadUnit(config).eval(), (config.stages[-1].width, *size)
