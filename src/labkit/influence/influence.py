"""Influence functions: how much each training example moves each query's loss.

``scores[j, i] = ∇L(query_j)ᵀ (C + damping·I)⁻¹ ∇L(train_i)`` with C the Hessian or the Gauss–Newton matrix
of the mean training loss at the current parameters. At an optimum of the mean training loss, removing
training example ``i`` changes query ``j``'s loss by about ``+scores[j, i] / n`` (Koh & Liang,
*Understanding Black-box Predictions via Influence Functions*, arXiv 1703.04730, Eq. 2; Grosse et al.,
*Studying Large Language Model Generalization with Influence Functions*, arXiv 2308.03296, Sec. 2).

Methods for the inverse-curvature product:

* ``"exact"``: the dense matrix (``labkit.hessian.exact_hessian`` or :func:`exact_ggn`) and a Cholesky/LU solve
  in float64: small models only.
* ``"cg"``: conjugate gradient on curvature-vector products (``labkit.hessian.HessianOperator`` /
  ``GGNOperator``), one solve per query (:func:`inverse_hvp`).
* ``"lissa"``: the stochastic Neumann series of Agarwal et al. (*Second-Order Stochastic Optimization for
  Machine Learning in Linear Time*, arXiv 1602.03943) as used by Koh & Liang.
* ``"ekfac"``: eigenvalue-corrected Kronecker factors (:mod:`labkit.influence.ekfac`; Gauss–Newton only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from labkit import checks
from labkit.autograd import check_generator, randint, resolve_params, train_mode
from labkit.hessian import GGNOperator, HessianOperator, exact_hessian, top_eigenvalues
from labkit.influence.per_example import (
    LossFn,
    check_loss_fn,
    check_params_finite,
    checked_data,
    output_hessians,
    per_example_grads,
)

METHODS = ("exact", "cg", "lissa", "ekfac")
CURVATURES = ("hessian", "ggn")


class InverseHVP(NamedTuple):
    """Solutions ``x`` (one column per right-hand side, ``(P, m)``) of ``(C + damping I) x = b``, whether every
    solve converged, and each one's final relative residual ``‖(C + λI)x − b‖ / ‖b‖`` (CG) or NaN (LiSSA, whose
    residual is not computed)."""

    x: torch.Tensor
    converged: bool
    residuals: torch.Tensor


def _names(model: nn.Module, chosen: Sequence[torch.Tensor]) -> list[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for p in chosen]


def exact_ggn(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    params: Sequence[nn.Parameter] | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """The dense ``(P, P)`` Gauss–Newton matrix ``mean_i J_iᵀ H_i J_i`` of the mean loss (``J_i``: the Jacobian
    of example ``i``'s outputs w.r.t. ``params``, ``H_i``: the Hessian of its loss w.r.t. its outputs), in
    ``dtype``, from per-example Jacobians (``torch.func.jacrev``, vmapped). Small models only; the caller's model
    is left as found (it runs in eval mode)."""
    check_loss_fn(loss_fn)
    chosen = resolve_params(model, params)
    check_params_finite(model, chosen)
    batches = checked_data(data, model)
    names = _names(model, chosen)
    ids = {id(p) for p in chosen}
    frozen = {n: p.detach().to(dtype) for n, p in model.named_parameters() if id(p) not in ids}
    buffers = {n: (b.detach().to(dtype) if b.is_floating_point() else b.detach()) for n, b in model.named_buffers()}
    wrt = {n: p.detach().to(dtype) for n, p in zip(names, chosen, strict=True)}
    numel = sum(p.numel() for p in chosen)
    device = chosen[0].device

    def outputs(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, ({**frozen, **w}, buffers), (x.unsqueeze(0),)).squeeze(0)

    ggn = torch.zeros(numel, numel, dtype=dtype, device=device)
    total = 0
    with train_mode(model, False), torch.enable_grad():
        for x, y in batches:
            x = x.to(device=device, dtype=dtype)
            y = y.to(device=device, dtype=dtype) if y.is_floating_point() else y.to(device)
            outs = vmap(outputs, in_dims=(None, 0))(wrt, x)
            jac = vmap(jacrev(outputs), in_dims=(None, 0))(wrt, x)  # dict of (N, C..., *param.shape)
            n, c = len(x), outs[0].numel()
            j = torch.cat([jac[k].reshape(n, c, -1) for k in names], dim=2)  # (N, C, P)
            h = output_hessians(loss_fn, outs, y).reshape(n, c, c)
            evals, evecs = torch.linalg.eigh((h + h.transpose(1, 2)) / 2)
            root = evecs * evals.clamp_min(0).sqrt().unsqueeze(1)  # H_i = L_i L_iᵀ
            m = (root.transpose(1, 2) @ j).reshape(n * c, -1)  # rows L_iᵀ J_i
            ggn += m.T @ m
            total += n
    ggn /= total
    return (ggn + ggn.T) / 2


def _curvature_operator(model, loss_fn, train, curvature, params):
    cls = HessianOperator if curvature == "hessian" else GGNOperator
    return cls(model, loss_fn, train, params=params)


def _cg(matvec, b: torch.Tensor, *, tol: float, max_iter: int) -> tuple[torch.Tensor, bool, float]:
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = float(r @ r)
    bnorm = math.sqrt(float(b @ b)) or 1.0
    for _ in range(max_iter):
        if math.sqrt(rs) <= tol * bnorm:
            return x, True, math.sqrt(rs) / bnorm
        ap = matvec(p)
        pap = float(p @ ap)
        if pap <= 0:  # not positive definite along p: stop, report
            return x, False, math.sqrt(rs) / bnorm
        alpha = rs / pap
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = float(r @ r)
        p = r + (rs_new / rs) * p
        rs = rs_new
    res = math.sqrt(rs) / bnorm
    return x, res <= tol, res


def inverse_hvp(
    model: nn.Module,
    loss_fn: LossFn,
    train: Any,
    vectors: torch.Tensor,
    *,
    method: str = "cg",
    curvature: str = "hessian",
    damping: float = 0.0,
    params: Sequence[nn.Parameter] | None = None,
    tol: float = 1e-6,
    max_iter: int = 200,
    depth: int = 100,
    repeats: int = 1,
    scale: float | None = None,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> InverseHVP:
    """Solve ``(C + damping·I) x = v`` for each row ``v`` of ``vectors`` (``(m, P)``) with matrix-free products.

    ``method="cg"``: conjugate gradient to a relative residual ``tol`` (at most ``max_iter`` products per
    vector; a direction of non-positive curvature stops it unconverged). ``method="lissa"``: the recursion
    ``h ← v + (I − (C_B + λI)/scale) h`` over ``depth`` steps, each with the curvature of a random minibatch
    ``B`` of ``batch_size`` training examples (all of them when None), averaged over ``repeats`` runs, and
    ``x = h/scale``; ``scale`` must exceed the largest eigenvalue of ``C + λI`` (default: 1.1 × the top
    eigenvalue, found by Lanczos). Returns :class:`InverseHVP` with ``x`` of shape ``(P, m)``.
    """
    checks.choice(method, "method", ("cg", "lissa"))
    checks.choice(curvature, "curvature", CURVATURES)
    damping = checks.number(damping, "damping", low=0.0)
    checks.number(tol, "tol", low=0.0)
    max_iter = checks.positive_int(max_iter, "max_iter")
    depth = checks.positive_int(depth, "depth")
    repeats = checks.positive_int(repeats, "repeats")
    check_generator(generator)
    chosen = resolve_params(model, params)
    numel = sum(p.numel() for p in chosen)
    if not isinstance(vectors, torch.Tensor) or vectors.ndim != 2 or vectors.shape[1] != numel:
        raise ValueError(f"vectors must be a (m, {numel}) tensor, got "
                         f"{tuple(vectors.shape) if isinstance(vectors, torch.Tensor) else type(vectors).__name__}")
    op = _curvature_operator(model, loss_fn, train, curvature, chosen)
    b = vectors.to(device=op.device, dtype=op.dtype)
    cols, residuals, converged = [], [], True
    if method == "cg":
        def matvec(v):
            return op.matvec(v) + damping * v
        for v in b:
            x, ok, res = _cg(matvec, v, tol=tol, max_iter=max_iter)
            cols.append(x)
            residuals.append(res)
            converged &= ok
        return InverseHVP(torch.stack(cols, 1), converged, torch.tensor(residuals))
    # LiSSA
    x_all, y_all = [torch.cat(t) for t in zip(*op.batches, strict=True)]
    n = len(x_all)
    if batch_size is not None:
        batch_size = checks.positive_int(batch_size, "batch_size")
    if scale is None:
        top = float(top_eigenvalues(op, 1, generator=generator).eigenvalues[0])
        scale = 1.1 * (max(top, 0.0) + damping)
    scale = checks.number(scale, "scale", low=0.0)
    if scale <= 0:
        raise ValueError("scale must be positive (above the largest eigenvalue of C + damping I)")
    ops = None
    if batch_size is None or batch_size >= n:
        ops = op
    for v in b:
        est = torch.zeros_like(v)
        for _ in range(repeats):
            h = v.clone()
            for _ in range(depth):
                if ops is None:
                    idx = randint(0, n, (batch_size,), generator=generator, device=x_all.device)
                    step_op = _curvature_operator(model, loss_fn, (x_all[idx], y_all[idx]), curvature, chosen)
                else:
                    step_op = ops
                h = v + h - (step_op.matvec(h) + damping * h) / scale
            est += h / scale
        cols.append(est / repeats)
        residuals.append(float("nan"))
    x = torch.stack(cols, 1)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("LiSSA diverged (non-finite result): scale must exceed the largest eigenvalue of "
                         "C + damping I, and C must be positive definite (use curvature='ggn' or damping > 0)")
    return InverseHVP(x, True, torch.tensor(residuals))


def influence_scores(
    model: nn.Module,
    loss_fn: LossFn,
    train: Any,
    query: Any,
    *,
    method: str = "exact",
    curvature: str = "hessian",
    damping: float = 0.0,
    params: Sequence[nn.Parameter] | None = None,
    **solver_options: Any,
) -> torch.Tensor:
    """Influence of each training example on each query's loss: a ``(q, n)`` tensor.

    ``scores[j, i] = ∇L(query_j)ᵀ (C + damping·I)⁻¹ ∇L(train_i)``, with C the Hessian (``curvature="hessian"``)
    or the Gauss–Newton matrix (``"ggn"``) of the mean loss over ``train`` at the current parameters, and
    ``∇L`` per-example gradients (:func:`per_example_grads`). At an optimum, leaving example ``i`` out changes
    query ``j``'s loss by about ``+scores[j, i] / n`` (Koh & Liang 2017, arXiv 1703.04730, Eq. 2); a weight decay
    ``λ/2‖θ‖²`` outside ``loss_fn`` is ``damping=λ``.

    ``method``: ``"exact"`` (dense float64 solve; ``solver_options`` none), ``"cg"`` and ``"lissa"`` (options of
    :func:`inverse_hvp`; a CG solve that does not converge is a ``RuntimeError``), ``"ekfac"`` (Gauss–Newton
    only; :func:`labkit.influence.ekfac.fit_ekfac`, Linear and Conv2d layers). The model is left as found.
    """
    check_loss_fn(loss_fn)
    checks.choice(method, "method", METHODS)
    checks.choice(curvature, "curvature", CURVATURES)
    damping = checks.number(damping, "damping", low=0.0)
    chosen = resolve_params(model, params)
    g_train = per_example_grads(model, loss_fn, train, params=chosen, name="train")
    g_query = per_example_grads(model, loss_fn, query, params=chosen, name="query")
    if method == "exact":
        if solver_options:
            raise TypeError(f"method='exact' takes no solver options, got {sorted(solver_options)}")
        if curvature == "hessian":
            c = exact_hessian(model, loss_fn, train, params=chosen)
        else:
            c = exact_ggn(model, loss_fn, train, params=chosen)
        c = c + damping * torch.eye(len(c), dtype=c.dtype, device=c.device)
        x = torch.linalg.solve(c, g_query.to(c.dtype).T)  # (P, q)
        if not bool(torch.isfinite(x).all()):
            raise ValueError("the curvature matrix is singular: use damping > 0")
    elif method == "ekfac":
        if curvature != "ggn":
            raise ValueError("method='ekfac' approximates the Gauss-Newton matrix, not the Hessian: pass "
                             "curvature='ggn'")
        from labkit.influence.ekfac import fit_ekfac

        factors = fit_ekfac(model, loss_fn, train, params=chosen)
        x = factors.inverse_hvp(g_query, damping=damping).T
    else:
        solve = inverse_hvp(model, loss_fn, train, g_query, method=method, curvature=curvature, damping=damping,
                            params=chosen, **solver_options)
        if not solve.converged:
            raise RuntimeError(f"CG did not converge (largest relative residual {float(solve.residuals.max()):.2e}): "
                               "raise max_iter or damping, or use curvature='ggn'")
        x = solve.x
    scores = (g_train.to(x.dtype) @ x).T
    return scores.to(g_train.dtype)


__all__ = ["CURVATURES", "InverseHVP", "METHODS", "exact_ggn", "influence_scores", "inverse_hvp"]
