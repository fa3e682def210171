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


class Quadratic(nn.Module):
    """sigma(x) = x^2, the activation of the Li^2 analysis (Tian, 2025)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "quadratic": Quadratic, "silu": nn.SiLU, "tanh": nn.Tanh}


def _check_pairs(x: torch.Tensor, p: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.long or x.ndim != 2 or x.shape[1] != 2:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a LongTensor of (a, b) pairs with shape (N, 2), got {got}")


class OneHotMLP(nn.Module):
    """MLP on one-hot(a) ++ one-hot(b): ``hidden`` widths, then ``p`` logits (``out`` to override).

    ``embedding`` (2p, hidden[0]) holds the first layer's weight transposed: rows 0..p-1 embed the
    first operand, rows p..2p-1 the second. ``operand_embeddings()`` returns them as (2, p, width).
    """

    def __init__(self, p: int, *, hidden: Sequence[int] = (128, 128), out: int | None = None,
                 activation: str = "relu", bias: bool = True):
        super().__init__()
        hidden = list(hidden)
        if p < 2 or not hidden or any(h < 1 for h in hidden):
            raise ValueError("p must be >= 2 and hidden a non-empty list of positive widths, "
                             f"got p={p}, hidden={hidden}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
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
        _check_pairs(x, self.p)
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
        if p < 2 or d_model < 1 or n_heads < 1 or d_mlp < 1 or d_model % n_heads:
            raise ValueError(f"need p >= 2 and d_model divisible by n_heads, got p={p}, d_model={d_model}, "
                             f"n_heads={n_heads}, d_mlp={d_mlp}")
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
        _check_pairs(x, self.p)
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
        z = (att @ v).reshape(n, -1)  # heads concatenated
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
        z = (att @ v).transpose(1, 2).reshape(n, t, -1)
        h = resid + z @ self.W_O
        h = h + self.mlp_out(torch.relu(self.mlp_in(h)))
        return h @ self.W_U

    def operand_embeddings(self) -> torch.Tensor:
        """The token embeddings of the residues 0..p-1 as (1, p, d_model) (shared by both operands)."""
        return self.W_E[: self.p].unsqueeze(0)
