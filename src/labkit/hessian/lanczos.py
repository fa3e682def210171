"""One Lanczos iteration, reused by the eigen-solver (``top_eigenvalues``) and by stochastic Lanczos
quadrature (``spectral_density``).

Lanczos (1950) builds an orthonormal basis ``Q`` of the Krylov space ``span{v, H v, H^2 v, ...}`` in which
``H`` is the tridiagonal ``T`` of ``alphas`` (diagonal) and ``betas`` (off-diagonal). Full
reorthogonalisation (classical Gram-Schmidt, repeated when it removed much: Daniel, Gragg, Kaufman and
Stewart 1976) keeps the Ritz values free of the spurious copies plain Lanczos makes in floating point.
Krylov bases are kept in float64 whatever the operator's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from labkit import checks
from labkit.hessian.protocol import Operator, as_operator

StopRule = Callable[[list[float], list[float], float], bool]

_DGKS = 1 / math.sqrt(2)  # a second Gram-Schmidt pass when the first removed more than this share of the norm
_NON_FINITE = "the operator returned non-finite values (NaN/inf): is the loss finite at these parameters?"


@dataclass(frozen=True)
class LanczosResult:
    """One Lanczos run: ``H Q = Q (T + E) + residual e_m^T`` for the basis ``Q = basis`` (P, m).

    ``alphas`` (m,) and ``betas`` (m - 1,) are the tridiagonal ``T`` (float64); ``last_beta`` the norm of
    the next Lanczos vector (0.0 when the Krylov space closed: ``invariant``). ``residual`` is that next
    vector, unnormalised (norm ``beta``, rounding-sized when ``invariant``), and ``coefficients[j]`` the
    components the reorthogonalisation of step ``j`` removed (the columns of the rounding-sized upper
    triangular ``E``), so the relation holds for the products actually computed and gives true Ritz
    residuals without another product. Unpacks as the 4-tuple ``(alphas, betas, basis, last_beta)``.
    """

    alphas: torch.Tensor
    betas: torch.Tensor
    basis: torch.Tensor
    last_beta: float
    invariant: bool
    beta: float
    residual: torch.Tensor
    coefficients: tuple[torch.Tensor, ...]

    @property
    def steps(self) -> int:
        return len(self.alphas)

    def __iter__(self) -> Iterator[Any]:  # the 4-tuple of the earlier releases
        return iter((self.alphas, self.betas, self.basis, self.last_beta))

    def __getitem__(self, i: int) -> Any:
        return (self.alphas, self.betas, self.basis, self.last_beta)[i]

    def __len__(self) -> int:
        return 4

    def tridiagonal(self) -> torch.Tensor:
        """``T`` as a dense (m, m) float64 matrix."""
        return torch.from_numpy(tridiagonal_np(self.alphas.tolist(), self.betas.tolist()))

    def reorthogonalization(self) -> torch.Tensor:
        """``E``: column ``j`` holds the coefficients step ``j``'s reorthogonalisation removed."""
        m = self.steps
        e = torch.zeros(m, m, dtype=torch.float64, device=self.basis.device)
        for j, c in enumerate(self.coefficients):
            e[: len(c), j] = c
        return e

    def ritz(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenpairs (ascending, float64) of ``T``: Ritz values and the coordinates of the Ritz vectors."""
        return torch.linalg.eigh(self.tridiagonal())


def tridiagonal_np(alphas: list[float], betas: list[float], *, upper_only: bool = False) -> np.ndarray:
    """The Lanczos tridiagonal as a numpy array (only its upper triangle filled if ``upper_only``)."""
    m = len(alphas)
    t = np.zeros((m, m))
    t.flat[:: m + 1] = alphas
    if m > 1:
        t.flat[1 :: m + 1] = betas[: m - 1]
        if not upper_only:
            t.flat[m :: m + 1] = betas[: m - 1]
    return t


def product(op: Operator, v: torch.Tensor, *, check: bool = True) -> torch.Tensor:
    """``op.matvec(v)`` with ``v`` cast to the operator's dtype, returned in float64; non-finite raises."""
    out = op.matvec(v.to(op.dtype)).to(torch.float64)
    if check and not torch.isfinite(out).all():
        raise FloatingPointError(_NON_FINITE)
    return out


def orthogonalize(w: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """``w`` minus its components along ``basis``'s orthonormal columns (Gram-Schmidt twice, float64)."""
    if basis is None or basis.shape[1] == 0:
        return w
    for _ in range(2):
        w = w - basis @ (basis.T @ w)
    return w


def krylov(
    mv: Callable[[torch.Tensor], torch.Tensor],
    v0: torch.Tensor,
    steps: int,
    *,
    reorthogonalize: bool = True,
    stop_when: StopRule | None = None,
) -> LanczosResult:
    """Lanczos on a product function ``mv`` (float64 in, float64 out): the loop behind :func:`lanczos`."""
    n = v0.numel()
    q = v0.to(torch.float64)
    q = q / torch.linalg.vector_norm(q)
    cap = min(steps, 16)  # basis vectors as contiguous rows, grown by doubling
    rows = torch.empty(cap, n, dtype=torch.float64, device=q.device)
    rows[0] = q
    q = rows[0]
    alphas: list[float] = []
    betas: list[float] = []
    coeffs: list[torch.Tensor] = []
    beta, scale = 0.0, 0.0

    def result(m: int, w: torch.Tensor, invariant: bool) -> LanczosResult:
        return LanczosResult(
            alphas=torch.tensor(alphas, dtype=torch.float64),
            betas=torch.tensor(betas, dtype=torch.float64),
            basis=rows[:m].T,
            last_beta=0.0 if invariant else beta,
            invariant=invariant,
            beta=beta,
            residual=w,
            coefficients=tuple(coeffs),
        )

    for j in range(steps):
        w = mv(q)
        alpha = float(torch.dot(q, w))
        w = torch.add(w, q, alpha=-alpha)
        if j > 0:
            w.sub_(rows[j - 1], alpha=beta)
        if reorthogonalize:
            # classical Gram-Schmidt against every basis vector, repeated when it removed much
            # ("twice is enough")
            basis = rows[: j + 1]
            before = float(torch.linalg.vector_norm(w))
            c = torch.mv(basis, w)
            w.addmv_(basis.T, c, alpha=-1.0)
            beta = float(torch.linalg.vector_norm(w))
            if beta < _DGKS * before:
                c2 = torch.mv(basis, w)
                w.addmv_(basis.T, c2, alpha=-1.0)
                c = c + c2
                beta = float(torch.linalg.vector_norm(w))
            coeffs.append(c)
        else:
            beta = float(torch.linalg.vector_norm(w))
        if not (math.isfinite(beta) and math.isfinite(alpha)):
            raise FloatingPointError(_NON_FINITE)
        alphas.append(alpha)
        m = j + 1
        scale = max(scale, abs(alpha))
        if beta <= 1e-10 * (scale or 1.0) or m == n:
            return result(m, w, True)
        if m == steps or (stop_when is not None and stop_when(alphas, betas, beta)):
            return result(m, w, False)
        betas.append(beta)
        if m == rows.shape[0]:
            grown = torch.empty(min(steps, 2 * m), n, dtype=torch.float64, device=rows.device)
            grown[:m] = rows
            rows = grown
        q = torch.div(w, beta, out=rows[m])
    raise AssertionError("unreachable")  # pragma: no cover


def lanczos(
    op: Operator,
    v0: torch.Tensor,
    steps: int,
    *,
    reorthogonalize: bool = True,
    stop_when: StopRule | None = None,
) -> LanczosResult:
    """Run ``steps`` Lanczos iterations of ``op`` from ``v0`` (full reorthogonalisation by default).

    Returns a :class:`LanczosResult`, which unpacks as ``alphas, betas, basis (P, m), last_beta``. Stops
    early on an invariant subspace (``last_beta`` 0) or when ``stop_when(alphas, betas, last_beta)``
    returns True (checked each iteration, with the lists of coefficients so far). Non-finite products
    raise ``FloatingPointError``.
    """
    op = as_operator(op)
    if not isinstance(v0, torch.Tensor):
        raise TypeError(f"v0 must be a flat tensor of length {op.numel} (op.numel), got {type(v0).__name__}")
    if v0.ndim != 1 or v0.numel() != op.numel:
        raise ValueError(f"v0 must be a flat vector of length {op.numel} (op.numel), got {tuple(v0.shape)}")
    if v0.is_complex() or v0.dtype == torch.bool:
        raise TypeError(f"v0 must be a real vector, got dtype {v0.dtype}")
    checks.tensor(v0, "v0")
    if not bool(v0.ne(0).any()):
        raise ValueError("v0 must be non-zero (the Krylov space of a zero vector is empty)")
    checks.positive_int(steps, "steps")
    return krylov(lambda v: product(op, v, check=False), v0, steps, reorthogonalize=reorthogonalize,
                  stop_when=stop_when)


__all__ = ["LanczosResult", "lanczos"]
