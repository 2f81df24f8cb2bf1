"""Architectures as feature vectors for learned predictors: one-hot per group depth and per slot choice.

Any space of the package has a :class:`supernet.family.SlotLayout`: ``groups`` groups (mbv3: stages; nb201:
edges), each using the first ``depth`` of its slots, each used slot holding one of ``choices`` options. A
network is encoded, group by group, as the one-hot of its depth followed by, for every slot, the one-hot of
its choice, or all zeros where the slot is beyond the group's depth. So a shallow stage's inactive blocks
encode as absent (whatever values the dict holds for them), and two dicts naming the same network encode
alike. mbv3 (4 stages, depths 2-4, 3 kernels x 3 expands): ``4 * (3 + 4 * 9) = 156`` features.

The encoding works on the sampler's int8 codes (:func:`supernet.sampler.encode`, :func:`supernet.sampler.sample`)
and is vectorised, so scoring 100,000 sampled codes is one tensor operation; :func:`features` takes
architecture dicts and first puts each in its canonical form (the network its string names), which is what
makes the isomorphic cells of nb201 encode alike.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from supernet.errors import UserError
from supernet.family import SlotLayout, Space
from supernet.sampler import encode


def width(layout: SlotLayout) -> int:
    """Features per network: per group, its depth's one-hot and every slot's choice one-hot."""
    return layout.groups * (len(layout.depths) + layout.max_depth * layout.choices)


def spec(layout: SlotLayout) -> dict[str, Any]:
    """The encoding as plain data, saved with a predictor: what its inputs mean."""
    return {"kind": "one-hot depth per group, one-hot choice per active slot", "groups": layout.groups,
            "depths": list(layout.depths), "choices": layout.choices, "split": layout.split, "width": width(layout)}


def features_from_codes(layout: SlotLayout, codes: torch.Tensor) -> torch.Tensor:
    """float32 features ``[N, width]`` of int8 codes ``[N, groups * layout.width]`` in ``layout``.

    Codes are taken as they are: slots beyond a group's depth are ignored, so any code of an mbv3 network
    encodes that network; a code out of range is a one-line error.
    """
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.shape[1] != layout.groups * layout.width:
        shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise UserError(f"encoded architectures must be a [N, {layout.groups * layout.width}] integer tensor "
                        f"(supernet.sampler.encode), got {shape}")
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise UserError(f"encoded architectures must be integers, got a {codes.dtype} tensor")
    grouped = codes.long().reshape(len(codes), layout.groups, layout.width)
    depth_index = grouped[:, :, 0]
    digits = grouped[:, :, 1:].reshape(len(codes), layout.groups, layout.max_depth, 2)
    first = layout.choices // layout.split
    limits = ((depth_index, len(layout.depths), "depth index"), (digits[..., 0], first, "first choice digit"),
              (digits[..., 1], layout.split, "second choice digit"))
    for values, count, name in limits:
        if values.numel() and (values.min() < 0 or values.max() >= count):
            raise UserError(f"encoded architectures hold a {name} outside 0..{count - 1}; encode them with "
                            "supernet.sampler.encode")
    depth = torch.tensor(layout.depths)[depth_index]  # [N, G]
    active = torch.arange(layout.max_depth) < depth[..., None]  # [N, G, D]
    choice = torch.nn.functional.one_hot(digits[..., 0] * layout.split + digits[..., 1], layout.choices)
    slots = (choice * active[..., None]).reshape(len(codes), layout.groups, layout.max_depth * layout.choices)
    depth_hot = torch.nn.functional.one_hot(depth_index, len(layout.depths))
    return torch.cat([depth_hot, slots], dim=2).reshape(len(codes), width(layout)).float()


def features(space: Space, archs: Iterable[Mapping[str, Any]]) -> torch.Tensor:
    """float32 features ``[N, width]`` of architecture dicts (each validated and made canonical first)."""
    canonical = [space.parse(space.to_string(arch)) for arch in archs]
    return features_from_codes(space.layout(), encode(space, canonical))
