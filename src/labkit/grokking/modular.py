"""Modular-arithmetic tables for grokking (Power, Burda, Edwards, Babuschkin, Misra, 2022, arXiv:2201.02177).

Every pair (a, b) of residues mod ``p`` (``b != 0`` for division) is one example with label
``a op b mod p``. A seeded permutation splits the full table into a training share and a test share:
the two are disjoint and together complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from labkit.data.core import Split

OPS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
    "div": lambda a, b, p: (a * torch.tensor([pow(int(v), p - 2, p) for v in b.tolist()])) % p,
    "x2+y2": lambda a, b, p: (a * a + b * b) % p,
}


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


@dataclass(repr=False)
class ModularSplit(Split):
    """A :class:`Split` of the table ``a op b mod p``: inputs are LongTensor pairs (N, 2), labels (N,)."""

    p: int
    op: str

    @property
    def num_classes(self) -> int:
        return self.p

    @property
    def train_fraction(self) -> float:
        return self.train_x.shape[0] / (self.train_x.shape[0] + self.test_x.shape[0])

    def __repr__(self) -> str:
        return (f"ModularSplit(p={self.p}, op={self.op!r}, train={self.train_x.shape[0]}, "
                f"test={self.test_x.shape[0]}, device={self.train_x.device})")


def modular_arithmetic(
    p: int,
    *,
    op: str = "add",
    train_fraction: float = 0.4,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> ModularSplit:
    """The full table of ``a op b mod p`` split at random into train and test (Power et al., 2022).

    ``op`` is one of ``"add"``, ``"sub"``, ``"mul"``, ``"div"`` (a * b^-1, b != 0, needs a prime p) and
    ``"x2+y2"``. ``round(train_fraction * N)`` examples go to training (at least one in each part).
    The split depends only on ``(p, op, train_fraction, seed)``.
    """
    if not isinstance(p, int) or isinstance(p, bool) or p < 2:
        raise ValueError(f"p must be an int >= 2, got {p!r}")
    if op not in OPS:
        raise ValueError(f"op must be one of {sorted(OPS)}, got {op!r}")
    if op == "div" and not _is_prime(p):
        raise ValueError(f"op='div' needs a prime p (every nonzero b invertible), got p={p}")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    if op == "div":
        keep = b != 0
        a, b = a[keep], b[keep]
    x = torch.stack([a, b], dim=1)
    y = OPS[op](a, b, p)
    n = x.shape[0]
    n_train = min(max(round(train_fraction * n), 1), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    tr, te = perm[:n_train], perm[n_train:]
    return ModularSplit(x[tr], y[tr], x[te], y[te], p=p, op=op).to(device)
