"""Models for modular arithmetic: a one-hot MLP and a one-layer transformer (grokking experiments).

``OneHotMLP`` reads the pair (a, b) as the concatenation of two one-hot vectors; its first linear
layer is therefore a sum of two embedding rows (a gather, no (N, 2p) matmul). ``OneLayerTransformer``
follows Nanda, Chan, Lieberum, Smith, Steinhardt (2023, arXiv:2301.05217): tokens ``a, b, =``, one
attention layer and one ReLU MLP, no layer norm, logits read at the ``=`` position. With a single
layer only that position's query matters, so the forward pass computes attention for the last
position only: exact, and several times cheaper than the full sequence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labkit import checks


class Quadratic(nn.Module):
    """sigma(x) = x^2, the activation of the Li^2 analysis (Tian, 2025)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "quadratic": Quadratic, "silu": nn.SiLU, "tanh": nn.Tanh}


def check_pairs(x: torch.Tensor, p: int, name: str = "x") -> torch.Tensor:
    """``x`` must be a LongTensor (N, 2) of operands in ``[0, p)`` (not on the ``meta`` device).

    The range check is one ``aminmax`` over the batch (about 1% of a forward of the grokking models, see
    ``benchmarks/bench_grokking.py``): without it an operand ``p <= a < 2p`` of the one-hot MLP would be read
    silently from the second operand's table, and the transformer would read ``a = p`` as the ``=`` token.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a LongTensor of (a, b) pairs with shape (N, 2), got {type(x).__name__}")
    if x.dtype != torch.long or x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"{name} must be a LongTensor of (a, b) pairs with shape (N, 2), "
                         f"got {x.dtype} {tuple(x.shape)}")
    if x.device.type == "meta":
        raise ValueError(f"{name} is on the 'meta' device (shapes only, no values): move it to 'cpu' or 'cuda'")
    if x.shape[0]:
        low, high = (int(v) for v in torch.aminmax(x))
        if low < 0 or high >= p:
            raise ValueError(f"{name} must hold operands in [0, {p}) (residues mod p={p}), got values in "
                             f"[{low}, {high}]: data made with another p?")
    return x


def _widths(hidden: Sequence[int]) -> list[int]:
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise TypeError(f"hidden must be a non-empty sequence of positive widths, got {hidden!r}")
    if not hidden:
        raise ValueError("hidden must be a non-empty sequence of positive widths, got []")
    return [checks.positive_int(h, "hidden") for h in hidden]


class OneHotMLP(nn.Module):
    """MLP on one-hot(a) ++ one-hot(b): ``hidden`` widths, then ``p`` logits (``out`` to override).

    ``embedding`` (2p, hidden[0]) holds the first layer's weight transposed: rows 0..p-1 embed the
    first operand, rows p..2p-1 the second. ``operand_embeddings()`` returns them as (2, p, width).
    """

    def __init__(self, p: int, *, hidden: Sequence[int] = (128, 128), out: int | None = None,
                 activation: str = "relu", bias: bool = True):
        super().__init__()
        checks.integer(p, "p", low=2)
        hidden = _widths(hidden)
        if out is not None:
            checks.positive_int(out, "out")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__}")
        self.p = p
        first = nn.Linear(2 * p, hidden[0], bias=bias)  # same init as the one-hot linear layer
        self.embedding = nn.Parameter(first.weight.detach().t().contiguous())
        self.bias = nn.Parameter(first.bias.detach().clone()) if bias else None
        self.act = _ACTIVATIONS[activation]()
        layers: list[nn.Module] = []
        for w_in, w_out in zip(hidden[:-1], hidden[1:], strict=True):
            layers += [nn.Linear(w_in, w_out, bias=bias), _ACTIVATIONS[activation]()]
        layers.append(nn.Linear(hidden[-1], out or p, bias=bias))
        self.head = nn.Sequential(*layers)

    def hidden_features(self, x: torch.Tensor) -> torch.Tensor:
        """The first hidden layer's activations (N, hidden[0])."""
        check_pairs(x, self.p)
        offsets = torch.tensor([0, self.p], device=x.device)
        h = F.embedding_bag(x + offsets, self.embedding, mode="sum")  # E[a] + E[p + b], fused
        if self.bias is not None:
            h = h + self.bias
        return self.act(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden_features(x))

    def operand_embeddings(self) -> torch.Tensor:
        """The first layer's weights as (2, p, width): one embedding table per operand."""
        return self.embedding.reshape(2, self.p, -1)


class OneLayerTransformer(nn.Module):
    """Nanda et al.'s one-layer transformer on ``a, b, =`` computing only the ``=`` position.

    ``d_model`` residual width, ``n_heads`` heads, ``d_mlp`` ReLU MLP width; vocabulary p + 1 (token p
    is ``=``), ``p`` output logits. ``forward_full`` runs the whole causal sequence (for checking).
    """

    def __init__(self, p: int, *, d_model: int = 128, n_heads: int = 4, d_mlp: int = 512):
        super().__init__()
        checks.integer(p, "p", low=2)
        for value, name in ((d_model, "d_model"), (n_heads, "n_heads"), (d_mlp, "d_mlp")):
            checks.positive_int(value, name)
        if d_model % n_heads:
            raise ValueError(f"d_model must be divisible by n_heads, got d_model={d_model}, n_heads={n_heads}")
        self.p, self.n_heads, self.d_head = p, n_heads, d_model // n_heads
        scale = 1.0 / math.sqrt(d_model)
        self.W_E = nn.Parameter(torch.randn(p + 1, d_model) * scale)
        self.W_pos = nn.Parameter(torch.randn(3, d_model) * scale)
        self.W_Q = nn.Parameter(torch.randn(d_model, d_model) * scale)
        self.W_K = nn.Parameter(torch.randn(d_model, d_model) * scale)
        self.W_V = nn.Parameter(torch.randn(d_model, d_model) * scale)
        self.W_O = nn.Parameter(torch.randn(d_model, d_model) * scale)
        self.mlp_in = nn.Linear(d_model, d_mlp)
        self.mlp_out = nn.Linear(d_mlp, d_model)
        self.W_U = nn.Parameter(torch.randn(d_model, p) * scale)

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        check_pairs(x, self.p)
        eq = torch.full_like(x[:, :1], self.p)
        tokens = torch.cat([x, eq], dim=1)  # (N, 3)
        return self.W_E[tokens] + self.W_pos  # (N, 3, d)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(*t.shape[:-1], self.n_heads, self.d_head).transpose(-3, -2)  # (N, h, T, dh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        resid = self._residual(x)
        n = resid.shape[0]
        last = resid[:, -1]  # (N, d)
        q = (last @ self.W_Q).reshape(n, self.n_heads, 1, self.d_head)
        k, v = self._heads(resid @ self.W_K), self._heads(resid @ self.W_V)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.d_head), dim=-1)  # (N, h, 1, 3)
        z = (att @ v).flatten(1)  # heads concatenated (an empty batch too)
        h = last + z @ self.W_O
        h = h + self.mlp_out(torch.relu(self.mlp_in(h)))
        return h @ self.W_U

    def forward_full(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at every position (N, 3, p) with causal attention: the textbook computation."""
        resid = self._residual(x)
        n, t, _ = resid.shape
        q, k, v = (self._heads(resid @ w) for w in (self.W_Q, self.W_K, self.W_V))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        att = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
        z = (att @ v).transpose(1, 2).flatten(2)
        h = resid + z @ self.W_O
        h = h + self.mlp_out(torch.relu(self.mlp_in(h)))
        return h @ self.W_U

    def operand_embeddings(self) -> torch.Tensor:
        """The token embeddings of the residues 0..p-1 as (1, p, d_model) (shared by both operands)."""
        return self.W_E[: self.p].unsqueeze(0)
