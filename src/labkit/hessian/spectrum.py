"""Spectra of curvature operators: top eigenpairs, trace and spectral density, matrix-free.

- ``top_eigenvalues``: Lanczos with full reorthogonalisation (default) or power iteration with deflation.
- ``hutchinson_trace``: Hutchinson's estimator with its standard error, or Hutch++ (Meyer et al. 2021).
- ``spectral_density``: stochastic Lanczos quadrature with Gaussian broadening (Ghorbani, Krishnan
  and Xiao, *An Investigation into Neural Net Optimization via Hessian Eigenvalue Density*, ICML 2019;
  Yao et al., *PyHessian*, 2020).

Every function takes any object with ``numel`` and ``matvec(v)`` (e.g. ``HessianOperator``); Krylov
bases are kept in float64 whatever the operator's dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_WHICH = ("largest", "magnitude")


@dataclass
class EigenResult:
    """Top eigenpairs of an operator.

    ``eigenvalues`` (k,) in decreasing order, ``eigenvectors`` (P, k) orthonormal columns,
    ``residuals`` (k,) true relative residuals ``||H v - lambda v|| / |lambda|`` of the products
    computed (not the Lanczos estimate), ``converged`` whether every residual is within ``tol``,
    ``iterations`` and ``matvecs`` spent.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    converged: bool
    iterations: int
    matvecs: int
    method: str


@dataclass
class TraceResult:
    """A trace estimate with its standard error (``samples`` probe vectors; ``values`` their estimates)."""

    estimate: float
    stderr: float
    samples: int
    values: torch.Tensor
    method: str

    def __float__(self) -> float:
        return self.estimate


@dataclass
class DensityResult:
    """A smoothed spectral density on ``grid`` (integrates to 1) and the quadrature behind it.

    ``nodes`` / ``weights`` have shape (vectors, steps): Ritz values and their weights for each probe;
    ``weights`` sum to 1 per probe. ``mean`` is the quadrature estimate of ``trace / P``.
    """

    grid: torch.Tensor
    density: torch.Tensor
    nodes: torch.Tensor
    weights: torch.Tensor
    sigma: float

    @property
    def mean(self) -> float:
        return float((self.nodes * self.weights).sum(dim=1).mean())

    def integral(self) -> float:
        """The trapezoid integral of ``density`` over ``grid`` (about 1 when the grid covers the spectrum)."""
        return float(torch.trapezoid(self.density, self.grid))


def _check_op(op: Any) -> int:
    if not (hasattr(op, "matvec") and hasattr(op, "numel")):
        raise TypeError(
            f"op must be an operator with .matvec(v) and .numel (e.g. HessianOperator), got {type(op).__name__}"
        )
    return int(op.numel)


def _device(op: Any) -> torch.device:
    return getattr(op, "device", torch.device("cpu"))


def _f64(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _mv(op: Any, v: torch.Tensor, *, check: bool = True) -> torch.Tensor:
    dtype = getattr(op, "dtype", v.dtype)
    out = op.matvec(v.to(dtype)).to(torch.float64)
    if check and not torch.isfinite(out).all():
        raise FloatingPointError(
            "the operator returned non-finite values (NaN/inf): is the loss finite at these parameters?"
        )
    return out


def _randn(
    n: int,
    generator: torch.Generator | None,
    device: torch.device,
    *,
    rademacher: bool = False,
    shape: tuple[int, ...] | None = None,
) -> torch.Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    size = shape if shape is not None else (n,)
    if rademacher:
        v = torch.randint(0, 2, size, generator=generator, device=gen_device).to(torch.float64) * 2 - 1
    else:
        v = torch.randn(size, generator=generator, device=gen_device, dtype=torch.float64)
    return v.to(device)


def _orthogonalize(w: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """Classical Gram-Schmidt applied twice (stable enough in float64)."""
    if basis is None or basis.shape[1] == 0:
        return w
    for _ in range(2):
        w = w - basis @ (basis.T @ w)
    return w


@dataclass
class _Krylov:
    """One Lanczos run: ``H Q^T = Q^T (T + E) + residual e_m^T`` for the basis rows ``Q = rows[:m]``.

    ``T`` is the tridiagonal of ``alphas`` / ``betas``; column ``j`` of ``E`` (upper triangular,
    rounding-sized) holds ``coeffs[j]``, the components the reorthogonalisation removed, so the relation
    holds for the products actually computed and ``residual`` (the unnormalised next Lanczos vector, of
    norm ``beta``) gives true Ritz residuals without another product.
    """

    alphas: list[float]
    betas: list[float]
    rows: torch.Tensor
    m: int
    residual: torch.Tensor
    beta: float
    invariant: bool
    coeffs: list[torch.Tensor]

    def extra(self) -> torch.Tensor:
        e = torch.zeros(self.m, self.m, dtype=torch.float64, device=self.rows.device)
        for j, c in enumerate(self.coeffs):
            e[: len(c), j] = c
        return e


_DGKS = 1 / math.sqrt(2)  # a second Gram-Schmidt pass when the first removed more than this share of the norm


def _krylov(
    mv: Any, v0: torch.Tensor, steps: int, *, reorthogonalize: bool = True, stop_when: Any = None
) -> _Krylov:
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
    for j in range(steps):
        w = mv(q)
        alpha = float(torch.dot(q, w))
        w = torch.add(w, q, alpha=-alpha)
        if j > 0:
            w.sub_(rows[j - 1], alpha=beta)
        if reorthogonalize:
            # classical Gram-Schmidt against every basis vector, repeated when it removed much
            # (Daniel, Gragg, Kaufman and Stewart 1976: "twice is enough")
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
            raise FloatingPointError(
                "the operator returned non-finite values (NaN/inf): is the loss finite at these parameters?"
            )
        alphas.append(alpha)
        m = j + 1
        scale = max(scale, abs(alpha))
        if beta <= 1e-10 * (scale or 1.0) or m == n:
            return _Krylov(alphas, betas, rows, m, w, beta, True, coeffs)
        if m == steps or (stop_when is not None and stop_when(alphas, betas, beta)):
            return _Krylov(alphas, betas, rows, m, w, beta, False, coeffs)
        betas.append(beta)
        if m == rows.shape[0]:
            grown = torch.empty(min(steps, 2 * m), n, dtype=torch.float64, device=rows.device)
            grown[:m] = rows
            rows = grown
        q = torch.div(w, beta, out=rows[m])
    raise AssertionError("unreachable")  # pragma: no cover


def lanczos(
    op: Any, v0: torch.Tensor, steps: int, *, reorthogonalize: bool = True, stop_when: Any = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Run ``steps`` Lanczos iterations from ``v0``; return (alphas, betas, basis (P, m), last beta).

    Full reorthogonalisation against every previous basis vector keeps the Ritz values free of the
    spurious copies that plain Lanczos produces in floating point. Stops early on an invariant
    subspace (last beta 0) or when ``stop_when(alphas, betas, last_beta)`` returns True (checked
    each iteration, with the lists of coefficients so far).
    """
    kr = _krylov(lambda v: _mv(op, v, check=False), v0, steps, reorthogonalize=reorthogonalize, stop_when=stop_when)
    basis = kr.rows[: kr.m].T
    return _f64(kr.alphas), _f64(kr.betas), basis, 0.0 if kr.invariant else kr.beta


def _tridiag_np(alphas: list[float], betas: list[float], *, upper_only: bool = False) -> np.ndarray:
    """The Lanczos tridiagonal as a numpy array (only its upper triangle filled if ``upper_only``)."""
    m = len(alphas)
    t = np.zeros((m, m))
    t.flat[:: m + 1] = alphas
    if m > 1:
        t.flat[1 :: m + 1] = betas[: m - 1]
        if not upper_only:
            t.flat[m :: m + 1] = betas[: m - 1]
    return t


def _tridiag_eigh(alphas: torch.Tensor, betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs (ascending, float64) of the Lanczos tridiagonal of ``alphas`` / ``betas``."""
    return torch.linalg.eigh(torch.from_numpy(_tridiag_np(alphas.tolist(), betas.tolist())))


def _select(theta: torch.Tensor, k: int, which: str) -> torch.Tensor:
    key = theta if which == "largest" else theta.abs()
    return torch.argsort(key, descending=True)[:k]


def top_eigenvalues(
    op: Any,
    k: int = 1,
    *,
    method: str = "lanczos",
    max_iter: int | None = None,
    tol: float = 1e-5,
    which: str = "largest",
    generator: torch.Generator | None = None,
) -> EigenResult:
    """The ``k`` top eigenpairs of a symmetric operator (largest algebraic, or largest magnitude).

    ``method="lanczos"`` (default): Lanczos with full reorthogonalisation, stopped when the Ritz
    residual estimate of each of the top ``k`` is below ``tol * |theta|`` (``max_iter`` default
    ``min(P, max(100, 30 k))`` Krylov steps). ``method="power"``: power iteration with deflation (finds
    the largest-magnitude eigenvalues one at a time; ``max_iter`` per eigenvalue, default 1000).
    ``converged`` reports whether every true relative residual ``||H v - theta v|| / |theta|`` is within
    ``tol``; a residual bounds the distance from ``theta`` to the spectrum, so each eigenvalue is then
    within ``tol`` relative error (in practice far closer: about ``tol^2 |theta| / gap``). Lanczos reads
    the residuals off the Lanczos relation of the products it computed, ``H Q s = Q (T + E) s + s_m r``
    (``E``: the reorthogonalisation coefficients), so they cost no extra product. When the Krylov
    space closes before ``k`` pairs (fewer distinct eigenvalues than ``k`` under the start vector),
    Lanczos restarts in the orthogonal complement of the pairs found; that path and power iteration
    end with a Rayleigh-Ritz step on the found subspace and one check product per eigenpair. On a digits MLP the
    defaults reach ~1e-7 relative accuracy on the top three (``benchmarks/bench_hessian.py``), against
    ~1e-3 for PyHessian's power-iteration defaults (Yao et al. 2020, arXiv:1912.07145).
    """
    n = _check_op(op)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if k > n:
        raise ValueError(f"k={k} is larger than the operator dimension {n}")
    if method not in ("lanczos", "power"):
        raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}")
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}, got {which!r}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    if max_iter is not None and (not isinstance(max_iter, int) or max_iter < 1):
        raise ValueError(f"max_iter must be a positive int or None, got {max_iter!r}")
    device = _device(op)
    start = getattr(op, "matvecs", None)
    counter = [0]

    def mv(v: torch.Tensor, check: bool = True) -> torch.Tensor:
        counter[0] += 1
        return _mv(op, v, check=check)

    out_dtype = getattr(op, "dtype", torch.float64)
    if method == "lanczos":
        steps = min(n, max_iter if max_iter is not None else max(100, 30 * k))

        def stop_when(alphas: list[float], betas: list[float], beta: float) -> bool:
            if len(alphas) < k + 1:
                return False
            # the Ritz residual estimate beta |s_m| of each of the top k (small eigh in numpy: cheap per step)
            theta, s = np.linalg.eigh(_tridiag_np(alphas, betas, upper_only=True), UPLO="U")
            idx = slice(-k, None) if which == "largest" else np.argsort(-np.abs(theta), kind="stable")[:k]
            return bool((beta * np.abs(s[-1, idx]) <= tol * np.maximum(np.abs(theta[idx]), 1e-30)).all())

        # _krylov itself raises on non-finite products (through alpha and beta)
        kr = _krylov(lambda v: mv(v, False), _randn(n, generator, device), steps, stop_when=stop_when)
        m = kr.m
        tri = torch.from_numpy(_tridiag_np(kr.alphas, kr.betas))
        theta, s = torch.linalg.eigh(tri)
        idx = _select(theta, min(k, m), which)
        if len(idx) == k:
            # The Ritz pairs are final: their true residuals follow from the Lanczos relation of the
            # products already computed, H Q^T s = Q^T (T + extra) s + s_m r, with no check product.
            q = kr.rows[:m]
            sel = s[:, idx].to(q.device)
            values = theta[idx]
            coef = (tri.to(q.device) + kr.extra()) @ sel - sel * values.to(q.device)
            resid = q.T @ coef + kr.residual[:, None] * sel[-1]
            vectors = q.T @ sel
            residuals = (resid.norm(dim=0).cpu() / values.abs().clamp_min(1e-30))
            spent = counter[0] if start is None else op.matvecs - start
            return EigenResult(
                eigenvalues=values.to(out_dtype),
                eigenvectors=vectors.to(out_dtype),
                residuals=residuals,
                converged=bool((residuals <= tol).all()),
                iterations=m,
                matvecs=int(spent),
                method=method,
            )
        # The Krylov space closed after m < k steps (too few distinct eigenvalues under the start vector):
        # its Ritz pairs are exact. Restart in their orthogonal complement, collecting pairs, until a run
        # does not close or the best one left cannot enter the top k; Rayleigh-Ritz below.
        vals, vecs = theta.to(device), kr.rows[:m].T @ s.to(device)
        iterations, budget = m, steps - m

        def key(t: torch.Tensor) -> torch.Tensor:
            return t if which == "largest" else t.abs()

        while budget > 0 and vecs.shape[1] < n:

            def proj(v: torch.Tensor, basis: torch.Tensor = vecs) -> torch.Tensor:
                return _orthogonalize(v, basis)

            run = _krylov(
                lambda v, proj=proj: proj(mv(proj(v), False)),
                proj(_randn(n, generator, device)),
                min(budget, n - vecs.shape[1]),
                stop_when=stop_when,
            )
            iterations, budget = iterations + run.m, budget - run.m
            theta, s = torch.linalg.eigh(torch.from_numpy(_tridiag_np(run.alphas, run.betas)))
            new_vecs = run.rows[: run.m].T @ s.to(device)
            kth = key(vals).sort(descending=True).values[k - 1] if len(vals) >= k else None
            if not run.invariant:
                pick = _select(theta, min(k, run.m), which).to(device)
                vals, vecs = torch.cat([vals, theta.to(device)[pick]]), torch.cat([vecs, new_vecs[:, pick]], dim=1)
                break
            vals, vecs = torch.cat([vals, theta.to(device)]), torch.cat([vecs, new_vecs], dim=1)
            if kth is not None and float(key(theta).max()) <= float(kth):
                break
        if len(vals) < k:  # max_iter < k: the steps ran out first, power iteration finds the rest
            more, more_vecs, spent_power = _power(mv, n, k - len(vals), vecs, vals, 1000, tol, generator, device)
            vals, vecs = torch.cat([vals, more.to(device)]), torch.cat([vecs, more_vecs], dim=1)
            iterations += spent_power
        pick = _select(vals.cpu(), k, which).to(device)
        vectors = vecs[:, pick]
    else:
        iters = max_iter if max_iter is not None else 1000
        values, vectors, iterations = _power(
            mv,
            n,
            k,
            torch.zeros(n, 0, dtype=torch.float64, device=device),
            torch.zeros(0, dtype=torch.float64),
            iters,
            tol,
            generator,
            device,
        )
    # Rayleigh-Ritz on the found subspace: k products that also give the true residuals
    vectors, _ = torch.linalg.qr(vectors)
    hv = torch.stack([mv(vectors[:, i]) for i in range(k)], dim=1)
    values, s = torch.linalg.eigh(vectors.T @ hv)
    vectors, hv = vectors @ s, hv @ s
    residuals = ((hv - vectors * values).norm(dim=0) / values.abs().clamp_min(1e-30)).cpu()
    order = _select(values.cpu(), k, which)
    spent = counter[0] if start is None else op.matvecs - start
    return EigenResult(
        eigenvalues=values.cpu()[order].to(out_dtype),
        eigenvectors=vectors[:, order.to(vectors.device)].to(out_dtype),
        residuals=residuals[order],
        converged=bool((residuals <= tol).all()),
        iterations=int(iterations),
        matvecs=int(spent),
        method=method,
    )


def _power(
    mv: Any,
    n: int,
    k: int,
    found_vecs: torch.Tensor,
    found_vals: torch.Tensor,
    max_iter: int,
    tol: float,
    generator: torch.Generator | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Power iteration with deflation: each new vector is kept orthogonal to the ones already found."""
    vecs = found_vecs
    new_vals, new_vecs, total = [], [], 0
    for _ in range(k):
        v = _orthogonalize(_randn(n, generator, device), vecs)
        v = v / v.norm()
        lam = 0.0
        for _it in range(max_iter):
            total += 1
            w = _orthogonalize(mv(v), vecs)
            lam = float(v @ w)
            res = float((w - lam * v).norm())
            norm = float(w.norm())
            if norm == 0.0:
                break
            if res <= 0.5 * tol * abs(lam):  # margin for the final Rayleigh-Ritz residual check
                break
            v = w / norm
            v = _orthogonalize(v, vecs)
            v = v / v.norm()
        new_vals.append(lam)
        new_vecs.append(v)
        vecs = torch.cat([vecs, v[:, None]], dim=1)
    return (torch.tensor(new_vals, dtype=torch.float64), torch.stack(new_vecs, dim=1), total)


def hutchinson_trace(
    op: Any,
    *,
    samples: int = 100,
    method: str = "hutchinson",
    distribution: str = "rademacher",
    generator: torch.Generator | None = None,
) -> TraceResult:
    """Estimate ``trace(op)`` from ``samples`` products with random probes, with a standard error.

    ``method="hutchinson"``: the mean of ``z^T H z`` over Rademacher (or Gaussian) probes ``z``
    (Hutchinson 1989). ``method="hutch++"``: a third of the products sketch the top of the spectrum
    exactly (``trace(Q^T H Q)``) and the rest estimate the remainder, which has a far smaller
    variance when a few large eigenvalues dominate (Meyer, Musco, Musco and Woodruff, SOSA 2021).
    ``stderr`` is the standard error of the stochastic part.
    """
    n = _check_op(op)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 2:
        raise ValueError(f"samples must be an int >= 2, got {samples!r}")
    if method not in ("hutchinson", "hutch++"):
        raise ValueError(f"method must be 'hutchinson' or 'hutch++', got {method!r}")
    if distribution not in ("rademacher", "gaussian"):
        raise ValueError(f"distribution must be 'rademacher' or 'gaussian', got {distribution!r}")
    device = _device(op)
    rad = distribution == "rademacher"

    if method == "hutchinson":
        z = _randn(n, generator, device, rademacher=rad, shape=(samples, n))
        values = torch.stack([z[i] @ _mv(op, z[i]) for i in range(samples)]).cpu()
        exact_part = 0.0
    else:
        if samples < 6:
            raise ValueError(f"hutch++ needs samples >= 6 (a third sketch, two thirds probes), got {samples}")
        m = min(samples // 3, n)
        s = _randn(n, generator, device, rademacher=rad, shape=(n, m))
        y = torch.stack([_mv(op, s[:, j]) for j in range(m)], dim=1)
        q, _ = torch.linalg.qr(y)
        exact_part = float(sum(q[:, j] @ _mv(op, q[:, j]) for j in range(q.shape[1])))
        probes = max(samples - 2 * m, 2)
        z = _randn(n, generator, device, rademacher=rad, shape=(probes, n))
        vals = []
        for i in range(probes):
            zi = z[i] - q @ (q.T @ z[i])
            vals.append(zi @ (_mv(op, zi)))
        values = torch.stack(vals).cpu()
    est = exact_part + float(values.mean())
    stderr = float(values.std(unbiased=True) / math.sqrt(len(values)))
    return TraceResult(estimate=est, stderr=stderr, samples=samples, values=values + exact_part, method=method)


def spectral_density(
    op: Any,
    *,
    vectors: int = 10,
    steps: int = 80,
    grid: torch.Tensor | int | None = None,
    sigma: float | None = None,
    generator: torch.Generator | None = None,
) -> DensityResult:
    """The eigenvalue density of ``op`` by stochastic Lanczos quadrature (SLQ).

    For each of ``vectors`` random unit probes, ``steps`` Lanczos steps (full reorthogonalisation)
    give Ritz values ``theta_j`` and weights ``tau_j`` (squared first components of the tridiagonal's
    eigenvectors); the density ``mean_probe sum_j tau_j N(t; theta_j, sigma^2)`` is evaluated on
    ``grid`` in one vectorised step. ``grid`` is a tensor or a number of points (default 1000) over
    the spectrum's range widened by ``5 sigma``; ``sigma`` defaults to 1% of that range. Its mean is
    an unbiased estimate of ``trace / P`` (Ghorbani et al. 2019; Lin, Saad and Yang, SIAM Rev. 2016).
    """
    n = _check_op(op)
    if not isinstance(vectors, int) or vectors < 1:
        raise ValueError(f"vectors must be a positive int, got {vectors!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if steps > n:
        raise ValueError(f"steps={steps} is larger than the operator dimension {n}")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    device = _device(op)
    nodes = torch.zeros(vectors, steps, dtype=torch.float64)
    weights = torch.zeros(vectors, steps, dtype=torch.float64)
    filled = torch.zeros(vectors, steps, dtype=torch.bool)
    for i in range(vectors):
        v0 = _randn(n, generator, device, rademacher=True)
        alphas, betas, _, _ = lanczos(op, v0, steps)
        theta, s = _tridiag_eigh(alphas, betas)
        m = len(theta)
        nodes[i, :m] = theta
        weights[i, :m] = s[0] ** 2  # an early stop (invariant subspace) leaves zero-weight padding
        filled[i, :m] = True
    lo, hi = float(nodes[filled].min()), float(nodes[filled].max())
    span = max(hi - lo, 1e-12 * max(abs(lo), abs(hi), 1.0))
    sigma = float(sigma) if sigma is not None else 0.01 * span
    if grid is None or isinstance(grid, int):
        points = 1000 if grid is None else grid
        if points < 2:
            raise ValueError(f"grid must have at least 2 points, got {points}")
        grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, points, dtype=torch.float64)
    elif isinstance(grid, torch.Tensor):
        if grid.ndim != 1 or len(grid) < 2:
            raise ValueError(f"grid must be a 1-D tensor with at least 2 points, got shape {tuple(grid.shape)}")
        grid = grid.detach().to(torch.float64).cpu()
    else:
        raise TypeError(f"grid must be a tensor, an int or None, got {type(grid).__name__}")
    gauss = torch.exp(-0.5 * ((grid[:, None] - nodes.reshape(1, -1)) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    density = gauss @ weights.reshape(-1) / vectors
    return DensityResult(grid=grid, density=density, nodes=nodes, weights=weights, sigma=sigma)


def outlier_count(eigenvalues: torch.Tensor, *, max_outliers: int = 30) -> int:
    """The number of outliers in a spectrum: the position of the largest ratio gap
    ``lambda_i / lambda_{i+1}`` among the top ``max_outliers + 1`` positive eigenvalues.

    Sagun et al. (2017, arXiv:1706.04454) and Papyan (2019) find about C such outliers for C classes
    (C - 1 for softmax cross-entropy, whose output Hessian has rank C - 1).
    """
    ev = torch.as_tensor(eigenvalues).detach().to(torch.float64).flatten().sort(descending=True).values
    if not isinstance(max_outliers, int) or max_outliers < 1:
        raise ValueError(f"max_outliers must be a positive int, got {max_outliers!r}")
    ev = ev[ev > 0][: max_outliers + 1]
    if len(ev) < 2:
        raise ValueError("eigenvalues must hold at least two positive values")
    return int((ev[:-1] / ev[1:]).argmax()) + 1


def subspace_fraction(vector: torch.Tensor, basis: torch.Tensor) -> float:
    """``||P v||^2 / ||v||^2``: the share of ``vector`` in the span of ``basis``'s orthonormal columns
    (Gur-Ari, Roberts and Dyer, *Gradient Descent Happens in a Tiny Subspace*, arXiv:1812.04754)."""
    if basis.ndim != 2 or vector.ndim != 1 or basis.shape[0] != vector.shape[0]:
        raise ValueError(f"basis must be (P, k) and vector (P,), got {tuple(basis.shape)} and {tuple(vector.shape)}")
    v = vector.detach().to(torch.float64)
    b = basis.detach().to(device=v.device, dtype=torch.float64)
    norm2 = float(v @ v)
    if norm2 == 0.0:
        raise ValueError("vector must be non-zero")
    return float((b.T @ v).pow(2).sum()) / norm2
