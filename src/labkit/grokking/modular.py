"""Modular-arithmetic tables for grokking (Power, Burda, Edwards, Babuschkin, Misra, 2022, arXiv:2201.02177).

Every pair (a, b) of residues mod ``p`` (``b != 0`` for division) is one example with label
``a op b mod p``. A seeded permutation splits the full table into a training share and a test share:
the two are disjoint and together complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from labkit import checks
from labkit.data.core import Split
from labkit.grokking.models import check_pairs
from labkit.runtime import check_seed, pick_device

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

    def check(self, name: str = "data") -> ModularSplit:
        """Raise a ``ValueError`` naming ``name`` unless the split is a table mod ``p``: LongTensor pairs (N, 2)
        of operands in ``[0, p)``, LongTensor labels (N,) in ``[0, p)``, a non-empty training part."""
        checks.integer(self.p, f"{name}.p", low=2)
        for part in ("train", "test"):
            x, y = getattr(self, f"{part}_x"), getattr(self, f"{part}_y")
            check_pairs(x, self.p, f"{name}.{part}_x")
            if not isinstance(y, torch.Tensor) or y.dtype != torch.long or tuple(y.shape) != (x.shape[0],):
                got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
                raise ValueError(f"{name}.{part}_y must be a LongTensor of shape ({x.shape[0]},), got {got}")
            checks.class_indices(y, self.p, f"{name}.{part}_y")
        if not self.train_x.shape[0]:
            raise ValueError(f"{name}.train_x is empty: no training pairs")
        if not isinstance(self.op, str) or self.op not in OPS:
            raise ValueError(f"{name}.op must be one of {sorted(OPS)}, got {self.op!r}")
        for part in ("train", "test"):
            x, y = getattr(self, f"{part}_x"), getattr(self, f"{part}_y")
            if self.op == "div":
                if bool((x[:, 1] == 0).any()):
                    raise ValueError(f"{name}.{part}_x divides by 0 (op='div' needs b != 0)")
                inverse = torch.tensor([pow(v, self.p - 2, self.p) if v else 0 for v in range(self.p)],
                                       device=x.device)
                expected = (x[:, 0] * inverse[x[:, 1]]) % self.p
            else:
                expected = OPS[self.op](x[:, 0], x[:, 1], self.p)
            wrong = int((expected != y).sum())
            if wrong:
                raise ValueError(f"{name}.{part}_y: {wrong} of {y.shape[0]} labels are not a {self.op} b mod "
                                 f"{self.p}: a split made with another p or op?")
        return self

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
    check_seed(seed)
    device = pick_device(device)
    if not isinstance(op, str) or op not in OPS:
        raise ValueError(f"op must be one of {sorted(OPS)}, got {op!r}")
    if op == "div" and not _is_prime(p):
        raise ValueError(f"op='div' needs a prime p (every nonzero b invertible), got p={p}")
    checks.number(train_fraction, "train_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
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
