"""In-context regression prompts: many small linear-regression problems, one per prompt.

Each prompt holds ``n_ctx`` labelled examples ``(x_i, y_i)`` of one task ``w`` and a query ``x_query``
whose label ``y_query`` the model must predict from the context alone. This is the data of
*One Step of Gradient Descent is Provably the Optimal In-Context Learner with One Layer of Linear
Self-Attention* (Mahankali, Hashimoto, Ma, 2023, arXiv 2307.03576), of *Trained Transformers Learn Linear
Models In-Context* (Zhang, Frei, Bartlett, 2023, arXiv 2306.09927) and of their successors.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from labkit.autograd import check_generator, generator_device, randn

TASKS = ("linear", "tanh")


class Prompts(NamedTuple):
    """A batch of ``n`` regression prompts.

    ``x_ctx (n, n_ctx, d)``, ``y_ctx (n, n_ctx)``, ``x_query (n, d)``, ``y_query (n,)`` and the task
    vectors ``w (n, d)`` that generated them.
    """

    x_ctx: torch.Tensor
    y_ctx: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor
    w: torch.Tensor

    @property
    def n(self) -> int:
        return self.x_ctx.shape[0]

    @property
    def n_ctx(self) -> int:
        return self.x_ctx.shape[1]

    @property
    def d(self) -> int:
        return self.x_ctx.shape[2]

    def to(self, device: torch.device | str) -> Prompts:
        return Prompts(*(t.to(device) for t in self))


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_cov(cov: object, d: int, *, name: str = "cov") -> torch.Tensor | None:
    """``cov`` must be None (identity) or a symmetric positive-definite ``(d, d)`` tensor."""
    if cov is None:
        return None
    if not isinstance(cov, torch.Tensor):
        raise TypeError(f"{name} must be a (d, d) torch.Tensor or None, got {type(cov).__name__}")
    if cov.shape != (d, d):
        raise ValueError(f"{name} must have shape ({d}, {d}), got {tuple(cov.shape)}")
    if not torch.isfinite(cov).all():
        raise ValueError(f"{name} has non-finite entries")
    c = cov.double()
    if not torch.allclose(c, c.T, rtol=1e-5, atol=1e-8):
        raise ValueError(f"{name} must be symmetric")
    if torch.linalg.eigvalsh(c).min() <= 0:
        raise ValueError(f"{name} must be positive definite")
    return cov


def check_prompts(prompts: object, name: str = "prompts") -> Prompts:
    """``prompts`` must be a :class:`Prompts` with consistent shapes and finite values."""
    if not isinstance(prompts, Prompts):
        raise TypeError(f"{name} must be labkit.icl.Prompts (from regression_prompts), got {type(prompts).__name__}")
    n, n_ctx, d = prompts.x_ctx.shape if prompts.x_ctx.ndim == 3 else (None, None, None)
    if n is None:
        raise ValueError(f"{name}.x_ctx must have shape (n, n_ctx, d), got {tuple(prompts.x_ctx.shape)}")
    want = {"y_ctx": (n, n_ctx), "x_query": (n, d), "y_query": (n,), "w": (n, d)}
    for field, shape in want.items():
        got = tuple(getattr(prompts, field).shape)
        if got != shape:
            raise ValueError(f"{name}.{field} must have shape {shape}, got {got}")
    for field, t in zip(Prompts._fields, prompts, strict=True):
        if not torch.isfinite(t).all():
            raise ValueError(f"{name}.{field} has non-finite entries")
    return prompts


def regression_prompts(n: int, *, d: int, n_ctx: int, cov: torch.Tensor | None = None, noise: float = 0.0,
                       task: str = "linear", generator: torch.Generator | None = None,
                       w_cov: torch.Tensor | None = None, device: torch.device | str | None = None) -> Prompts:
    """``n`` random regression prompts: ``w ~ N(0, I_d)`` (``N(0, w_cov)`` when given; Mahankali et al.'s
    non-isotropic setting takes ``w_cov = cov⁻¹``), ``x ~ N(0, cov)`` (identity when ``cov`` is None),
    ``y = wᵀx + noise·ε`` with ``ε ~ N(0, 1)`` (``task="linear"``) or ``y = tanh(wᵀx) + noise·ε``
    (``task="tanh"``, the non-linear responses of Mahankali et al. 2023, arXiv 2307.03576, Sec. 5).

    The context and the query share ``w``; numbers come from ``generator`` (the labkit generator rule) and
    land on ``device`` (the generator's device when None).
    """
    n, d, n_ctx = _positive_int(n, "n"), _positive_int(d, "d"), _positive_int(n_ctx, "n_ctx")
    check_generator(generator)
    cov = check_cov(cov, d)
    w_cov = check_cov(w_cov, d, name="w_cov")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0 or noise == float("inf"):
        raise ValueError(f"noise must be a finite float >= 0, got {noise!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    device = torch.device(device) if device is not None else generator_device(generator)
    w = randn((n, d), generator=generator, device=device)
    x = randn((n, n_ctx + 1, d), generator=generator, device=device)
    eps = randn((n, n_ctx + 1), generator=generator, device=device)
    if cov is not None:
        root = torch.linalg.cholesky(cov.double()).to(device=device, dtype=x.dtype)
        x = x @ root.T
    if w_cov is not None:
        w = w @ torch.linalg.cholesky(w_cov.double()).to(device=device, dtype=w.dtype).T
    clean = torch.einsum("nkd,nd->nk", x, w)
    if task == "tanh":
        clean = torch.tanh(clean)
    y = clean + float(noise) * eps
    return Prompts(x[:, :n_ctx], y[:, :n_ctx], x[:, n_ctx], y[:, n_ctx], w)


def tokens(prompts: Prompts) -> torch.Tensor:
    """The token matrix ``Z (n, n_ctx + 1, d + 1)``: rows ``z_i = (x_i, y_i)`` then the query ``(x_query, 0)``."""
    p = check_prompts(prompts)
    ctx = torch.cat([p.x_ctx, p.y_ctx.unsqueeze(-1)], dim=-1)
    query = torch.cat([p.x_query, torch.zeros_like(p.y_query).unsqueeze(-1)], dim=-1)
    return torch.cat([ctx, query.unsqueeze(1)], dim=1)


def anisotropic_cov(d: int, *, condition: float = 10.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """A ``(d, d)`` covariance whose eigenvalues are spaced geometrically, largest / smallest = ``condition``,
    scaled so the trace is ``d`` (as the identity's); in a random orthonormal basis drawn from ``generator``,
    axis-aligned (diagonal) when ``generator`` is None. ``condition=1`` gives the identity."""
    d = _positive_int(d, "d")
    if isinstance(condition, bool) or not isinstance(condition, (int, float)) or not 1 <= condition < float("inf"):
        raise ValueError(f"condition must be a finite float >= 1, got {condition!r}")
    check_generator(generator)
    eig = torch.logspace(0, -torch.log10(torch.tensor(float(condition))).item(), d, dtype=torch.float64)
    eig = eig * d / eig.sum()
    if generator is None:
        return torch.diag(eig).float()
    q, r = torch.linalg.qr(randn((d, d), generator=generator).double())
    q = q * torch.sign(torch.diagonal(r))
    cov = q @ torch.diag(eig) @ q.T
    return ((cov + cov.T) / 2).float()
