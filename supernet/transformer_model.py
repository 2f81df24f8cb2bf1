"""The elastic transformer supernet of :mod:`supernet.transformer` and the plain encoders extracted from it.

:class:`TransformerSupernet` holds the largest of every layer; ``set_active(arch)`` picks the subnet that
``forward`` computes from the leading slices of the weights. :meth:`TransformerSupernet.extract` returns a
:class:`TransformerSubnet` of standard torch layers with the supernet's parameter names and copies of the sliced
weights: it scripts and exports without this project, and its output equals the supernet's.

Both take token ids ``[N, 1, 1, max_len]`` or ``[N, max_len]`` (float or integer; id 0 pads). Padded words are
masked out of attention and of the mean over the sentence, so a sentence's logits do not depend on how much
padding follows it; the supernet also drops the padding columns that no sentence of the batch uses, which
makes training on short sentences fast without changing a result.
"""
from __future__ import annotations

from typing import Callable, Iterator, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from supernet.kernels import dropout_add
from supernet.model import slice_like
from supernet.text import PAD
from supernet.transformer import Arch, TransformerConfig, TransformerSpace

MASKED = -1e4  # added to the attention scores of padding: exp() underflows to 0, a sentence of pads stays finite


class Attend(nn.Module):
    """Scaled dot-product attention of ``q, k, v`` ``[N, heads, L, head_dim]`` under an additive mask ``bias``
    ``[N, 1, 1, L]``; a module of its own so that thop counts its multiply-adds (:func:`count_attend`). torch's
    fused kernel: 1.3-2.5 times the speed of two matrix products and a softmax here, and 1.8 times in training."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # The mask in q's dtype: torch's CPU kernel given float64 q, k, v and a float32 mask of 64 words returned
        # values off by 4 (torch 2.13).
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))


def count_attend(module: Attend, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    """thop's count of :class:`Attend`: the two matrix products, ``2 * N * heads * L * L * head_dim``."""
    q = inputs[0]
    module.total_ops += torch.tensor([2.0 * q.numel() * q.shape[-2]], dtype=torch.float64)


THOP_OPS = {Attend: count_attend}


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    n, length, width = x.shape
    return x.view(n, length, heads, width // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    n, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(n, length, heads * dim)


def token_ids(x: torch.Tensor) -> torch.Tensor:
    """int64 ids ``[N, L]`` of a batch of ``[N, 1, 1, L]`` or ``[N, L]`` token ids (float or integer)."""
    return x.reshape(x.shape[0], -1).long()


def mask_bias(ids: torch.Tensor) -> torch.Tensor:
    """``[N, 1, 1, L]``: 0 for words, :data:`MASKED` for padding (id :data:`supernet.text.PAD`, 0)."""
    return (ids == 0).to(torch.float32).mul(-1e4)[:, None, None, :]  # literals: TorchScript reads no globals


def mean_words(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``[N, E]``: the mean of ``x`` ``[N, L, E]`` over each sentence's words (padding left out)."""
    keep = (ids != 0).to(x.dtype).unsqueeze(-1)
    return (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)


# ---- the plain encoder ------------------------------------------------------------------------------
class Embedding(nn.Module):
    """Token and learned position embeddings at one width."""

    def __init__(self, vocab_size: int, max_len: int, embed: int):
        super().__init__()
        self.token = nn.Embedding(vocab_size, embed)
        self.position = nn.Parameter(torch.zeros(max_len, embed))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token(ids) + self.position[:ids.shape[1]]


class EncoderLayer(nn.Module):
    """A pre-norm encoder layer: ``x + attention(norm(x))``, then ``x + ffn(norm(x))`` (GELU)."""

    def __init__(self, embed: int, heads: int, ffn: int, head_dim: int, dropout: float):
        super().__init__()
        width = heads * head_dim
        self.heads = heads
        self.norm1 = nn.LayerNorm(embed)
        self.q, self.k, self.v = nn.Linear(embed, width), nn.Linear(embed, width), nn.Linear(embed, width)
        self.attend = Attend()
        self.out = nn.Linear(width, embed)
        self.norm2 = nn.LayerNorm(embed)
        self.fc1 = nn.Linear(embed, ffn)
        self.fc2 = nn.Linear(ffn, embed)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        heads = self.heads
        q, k, v = _split_heads(self.q(y), heads), _split_heads(self.k(y), heads), _split_heads(self.v(y), heads)
        x = x + self.dropout(self.out(_merge_heads(self.attend(q, k, v, bias))))
        return x + self.dropout(self.fc2(F.gelu(self.fc1(self.norm2(x)))))


class TransformerSubnet(nn.Module):
    """A plain encoder for one architecture; ``arch`` is kept as its canonical string. ``stages`` are its layers,
    ``head`` the final norm, ``classifier`` the linear layer on the mean over the words."""

    def __init__(self, config: TransformerConfig, arch: Mapping[str, int]):
        super().__init__()
        space = TransformerSpace(config)
        arch = space.validate(arch)
        self.arch = space.to_string(arch)
        embed = arch["embed"]
        self.embed = Embedding(config.tokens.vocab_size, config.tokens.max_len, embed)
        self.stages = nn.ModuleList(EncoderLayer(embed, heads, ffn, config.head_dim, config.dropout)
                                    for _, heads, ffn in space.layers(arch))
        self.head = nn.LayerNorm(embed)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(embed, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = token_ids(x)
        bias = mask_bias(ids)
        h = self.embed(ids)
        for layer in self.stages:
            h = layer(h, bias)
        return self.classifier(self.dropout(mean_words(self.head(h), ids)))


def init_weights(model: nn.Module) -> nn.Module:
    """Normal(0, 0.02) embeddings, positions and linear weights, zero biases (BERT's initialisation)."""
    for name, parameter in model.named_parameters():
        if name.endswith("position") or parameter.dim() == 2:
            nn.init.normal_(parameter, 0.0, 0.02)
        elif name.endswith("bias"):
            nn.init.zeros_(parameter)
    return model


# ---- the elastic supernet ---------------------------------------------------------------------------
Pair = tuple[torch.Tensor, torch.Tensor]  # a layer's (weight, bias), sliced


class LayerWeights(NamedTuple):
    """One encoder layer's weights sliced to a subnet's width, heads and feed-forward width."""
    heads: int
    norm1: Pair
    q: Pair
    k: Pair
    v: Pair
    out: Pair
    norm2: Pair
    fc1: Pair
    fc2: Pair


class SubnetWeights(NamedTuple):
    """Every weight the active subnet uses, as leading slices of the supernet's parameters."""
    token: torch.Tensor
    position: torch.Tensor
    layers: list[LayerWeights]
    head: Pair
    classifier: Pair


def _slice(layer: nn.Linear | nn.LayerNorm, out: int, width: int | None = None) -> Pair:
    """The leading ``out`` outputs (and ``width`` inputs) of a linear layer's or a norm's weight and bias."""
    weight = layer.weight[:out] if width is None else layer.weight[:out, :width]
    return weight, layer.bias[:out]


def _norm(x: torch.Tensor, w: Pair) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), w[0], w[1], 1e-5)  # nn.LayerNorm's default eps, which every norm here has


class ElasticEncoderLayer(EncoderLayer):
    """:class:`EncoderLayer` at the largest width, heads and feed-forward width; :meth:`weights` slices it to a
    subnet's, and ``forward`` runs on such slices, so that one forward can reuse slices made before. Its residual
    dropouts run as :func:`supernet.kernels.dropout_add` (the same distribution as ``nn.Dropout``, 8 times
    faster on the CPU)."""

    def weights(self, embed: int, heads: int, ffn: int) -> LayerWeights:
        """This layer's weights for width ``embed``, the leading ``heads`` heads and ``ffn`` feed-forward units."""
        width = heads * (self.q.out_features // self.heads)
        qkv = (_slice(proj, width, embed) for proj in (self.q, self.k, self.v))
        return LayerWeights(heads, _slice(self.norm1, embed), *qkv, _slice(self.out, embed, width),
                            _slice(self.norm2, embed), _slice(self.fc1, ffn, embed), _slice(self.fc2, embed, ffn))

    def forward(self, x: torch.Tensor, bias: torch.Tensor, w: LayerWeights) -> torch.Tensor:  # type: ignore[override]
        y = _norm(x, w.norm1)
        q, k, v = (_split_heads(F.linear(y, *proj), w.heads) for proj in (w.q, w.k, w.v))
        x = self._residual(x, _merge_heads(self.attend(q, k, v, bias)), w.out)
        return self._residual(x, F.gelu(F.linear(_norm(x, w.norm2), *w.fc1)), w.fc2)

    def _residual(self, x: torch.Tensor, h: torch.Tensor, w: Pair) -> torch.Tensor:
        """``x + dropout(linear(h))``: the dropout kernel in training, else one GEMM that accumulates onto a copy
        of ``x`` (``addmm``), which saves the plain layer's separate addition and its buffer (7% of the pair)."""
        if self.training and self.dropout.p > 0.0:
            return dropout_add(x, F.linear(h, *w), self.dropout.p, True)
        if x.numel() < 1 << 16:  # a few sentences: the buffer saved is worth less than three more dispatches
            return x + F.linear(h, *w)
        out = torch.addmm(x.reshape(-1, x.shape[-1]), h.reshape(-1, h.shape[-1]), w[0].t())
        return out.add_(w[1]).view(x.shape)


class TransformerSupernet(nn.Module):
    """Every encoder of a space in one set of weights; ``forward`` runs the active one.

    A forward slices the active subnet's weights from the parameters (views, no copies); without autograd
    (evaluation, search) the slices are kept until the active subnet changes or the parameters are moved or
    replaced, because making them is a tenth of a millisecond, a tenth of a forward at batch 1.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.space = TransformerSpace(config)
        embed = max(config.embeds)
        self.embed = Embedding(config.tokens.vocab_size, config.tokens.max_len, embed)
        self.stages = nn.ModuleList(ElasticEncoderLayer(embed, max(config.heads), max(config.ffns), config.head_dim,
                                                        config.dropout) for _ in range(self.space.max_layers))
        self.head = nn.LayerNorm(embed)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(embed, config.num_classes)
        init_weights(self)
        self.active: Arch = {}
        self._views: SubnetWeights | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: module._forget_views())
        self.set_active(self.space.largest())

    def set_active(self, arch: Mapping[str, int]) -> Arch:
        """Make ``arch`` the subnet that ``forward`` computes; returns the validated architecture."""
        self.active = self.space.validate(arch)
        self._forget_views()
        return self.active

    def _forget_views(self) -> None:
        self._views = None

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        self._forget_views()  # .to(), .half(), .cuda() may put the parameters in new tensors
        return super()._apply(fn, recurse)

    def weights(self) -> SubnetWeights:
        """The active subnet's slices of the parameters (kept between forwards only without autograd)."""
        if self._views is not None and not torch.is_grad_enabled():
            return self._views
        embed = self.active["embed"]
        layers = [self.stages[i].weights(embed, heads, ffn) for i, heads, ffn in self.space.layers(self.active)]
        views = SubnetWeights(self.embed.token.weight[:, :embed], self.embed.position[:, :embed], layers,
                              _slice(self.head, embed), _slice(self.classifier, self.config.num_classes, embed))
        if not torch.is_grad_enabled():
            self._views = views
        return views

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = token_ids(x)
        ids = ids[:, :max(int((ids != PAD).sum(1).max()), 1)] if ids.numel() else ids  # padding is only at the end
        w = self.weights()
        bias = mask_bias(ids)
        h = F.embedding(ids, w.token) + w.position[:ids.shape[1]]
        for layer, layer_weights in zip(self.stages, w.layers):
            h = layer(h, bias, layer_weights)
        return F.linear(self.dropout(mean_words(_norm(h, w.head), ids)), *w.classifier)

    @torch.no_grad()
    def extract(self, arch: Mapping[str, int] | None = None) -> TransformerSubnet:
        """A plain :class:`TransformerSubnet` for ``arch`` (default: the active one) with copies of the sliced
        weights."""
        subnet = TransformerSubnet(self.config, self.active if arch is None else arch)
        source = self.state_dict()
        subnet.load_state_dict({key: slice_like(source[key], value.shape)
                                for key, value in subnet.state_dict().items()})
        return subnet.train(self.training)


# ---- units for latency tables and FLOPs counts ------------------------------------------------------
class _EmbedUnit(nn.Module):
    def __init__(self, config: TransformerConfig, embed: int):
        super().__init__()
        self.embed = Embedding(config.tokens.vocab_size, config.tokens.max_len, embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(token_ids(x))


class _LayerUnit(nn.Module):
    def __init__(self, layer: EncoderLayer):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x, x.new_zeros(1, 1, 1, 1))


class _HeadUnit(nn.Module):
    def __init__(self, embed: int, num_classes: int):
        super().__init__()
        self.head = nn.LayerNorm(embed)
        self.classifier = nn.Linear(embed, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(x).mean(1))


Unit = tuple[str, Callable[[], nn.Module], tuple[int, ...]]


def units(config: TransformerConfig) -> Iterator[Unit]:
    """Every piece an encoder is made of, for timing and counting one by one: ``(key, build, input shape)``.

    ``"embed.e{E}"`` takes the token ids ``(1, 1, max_len)``; ``"layer.e{E}.h{h}.f{f}"`` and ``"head.e{E}"``
    take hidden states ``(max_len, E)``. ``build()`` returns a fresh module in eval mode.
    """
    length = config.tokens.max_len
    for e in config.embeds:
        yield f"embed.e{e}", (lambda e=e: _EmbedUnit(config, e).eval()), config.input_shape
        for h in config.heads:
            for f in config.ffns:
                def build(e: int = e, h: int = h, f: int = f) -> nn.Module:
                    return _LayerUnit(EncoderLayer(e, h, f, config.head_dim, config.dropout)).eval()
                yield f"layer.e{e}.h{h}.f{f}", build, (length, e)
        yield f"head.e{e}", (lambda e=e: _HeadUnit(e, config.num_classes).eval()), (length, e)
