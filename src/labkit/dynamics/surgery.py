"""Gradient surgery for a main and an auxiliary loss, without and with an EMA of the main gradient.

Two ways to blend the gradients of several losses instead of summing them:

- :func:`pcgrad` (Yu et al., *Gradient Surgery for Multi-Task Learning*, arXiv 2001.06782, Algorithm 1):
  each gradient that conflicts with another (negative inner product) loses its component along it; the
  projected gradients are summed.
- :func:`bloop_direction` (Hsieh et al., *Careful with that Scalpel: Improving Gradient Surgery with an EMA*,
  arXiv 2402.02998, the "Bloop" update): ``d = g_main + lam * (g_aux - <g_aux, e> / |e|^2 * e)`` where ``e``
  is an exponential moving average of the main loss's mini-batch gradients. To first order the auxiliary term
  then leaves the (average) main loss unchanged, so the auxiliary loss is minimized among the minimizers of
  the main loss; with ``beta = 0`` (no memory) ``e`` is the noisy batch gradient itself.

:class:`SurgeryLoss` turns either rule (and the plain sum) into a ``loss_fn`` for :func:`labkit.training.fit`:
its scalar has the blended direction as gradient and the main loss as value. :func:`train_two_losses` is the
two-loss training run (plain SGD on a copy of the model) that the notebook ``dynamics/04`` compares.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from labkit.autograd import check_generator, flatten, resolve_params
from labkit.history import History
from labkit.training import fit

METHODS = ("sum", "pcgrad", "project", "bloop")

__all__ = ["METHODS", "BloopStep", "SurgeryComparison", "SurgeryLoss", "SurgeryProblem", "TwoLossRun",
           "bloop_direction", "compare_surgery", "pcgrad", "project_out", "surgery_problem", "train_two_losses"]


def _as_matrix(grads: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if isinstance(grads, torch.Tensor):
        matrix = grads
    elif isinstance(grads, (list, tuple)) and grads and all(isinstance(g, torch.Tensor) for g in grads):
        shapes = {tuple(g.reshape(-1).shape) for g in grads}
        if len(shapes) != 1:
            raise ValueError(f"grads must all have the same number of entries, got sizes {sorted(shapes)}")
        matrix = torch.stack([g.reshape(-1) for g in grads])
    else:
        raise TypeError("grads must be a (k, d) tensor or a non-empty list of flat gradient tensors")
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
        raise ValueError(f"grads must be a (k, d) tensor with k >= 1 gradients of d >= 1 entries, "
                         f"got shape {tuple(matrix.shape)}")
    if not matrix.is_floating_point():
        raise TypeError(f"grads must be floating point, got {matrix.dtype}")
    return matrix


def _check_vector(name: str, v: object) -> torch.Tensor:
    if not isinstance(v, torch.Tensor) or not v.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (a flat gradient), got {type(v).__name__}")
    if not torch.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or inf")
    return v


def project_out(v: torch.Tensor, u: torch.Tensor, *, eps: float = 1e-12) -> torch.Tensor:
    """``v - <v, u> / |u|^2 u``: the part of ``v`` orthogonal to ``u`` (``v`` itself when ``u`` is 0)."""
    _check_vector("v", v)
    _check_vector("u", u)
    if v.shape != u.shape:
        raise ValueError(f"v and u must have the same shape, got {tuple(v.shape)} and {tuple(u.shape)}")
    sq = (u * u).sum()
    if sq <= eps:
        return v.clone()
    return v - ((v * u).sum() / sq) * u


def pcgrad(grads: torch.Tensor | Sequence[torch.Tensor], *, generator: torch.Generator | None = None) -> torch.Tensor:
    """PCGrad's combined direction (Yu et al. 2020, arXiv 2001.06782, Algorithm 1) for ``k`` gradients.

    For each gradient ``g_i``: for every other ``g_j`` (in a random order drawn from ``generator``, or in index
    order when ``generator`` is None) with ``<g_i^PC, g_j> < 0``, set ``g_i^PC <- g_i^PC - <g_i^PC, g_j> /
    |g_j|^2 g_j``. Returns ``sum_i g_i^PC`` (flat, shape ``(d,)``). With two gradients the order does not matter.
    ``grads``: a ``(k, d)`` tensor or a list of flat tensors of equal size. The projections are carried out on
    the coefficients in the ``k x k`` Gram matrix (in float64), then the weighted sum is formed once.
    """
    matrix = _as_matrix(grads)
    check_generator(generator)
    k = matrix.shape[0]
    # Work in the k x k Gram matrix: g_i^PC = sum_j c_j g_j, so <g_i^PC, g_j> = (G c)_j; one pass over d at the end.
    gram = (matrix @ matrix.T).to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(gram).all():  # NaN or inf anywhere in grads reaches the Gram matrix's diagonal
        raise ValueError("grads contain NaN or inf (or entries so large that their squares overflow)")
    g = gram.tolist()  # k is small: the k^2 coefficient updates run on Python floats
    weights = [0.0] * k
    for i in range(k):
        order = range(k) if generator is None else torch.randperm(k, generator=generator).tolist()
        c = [0.0] * k
        c[i] = 1.0
        for j in order:
            if j == i or g[j][j] == 0:
                continue
            inner = sum(a * b for a, b in zip(g[j], c, strict=True))
            if inner < 0:
                c[j] -= inner / g[j][j]
        weights = [w + ci for w, ci in zip(weights, c, strict=True)]
    return torch.tensor(weights, dtype=torch.float64).to(matrix) @ matrix


class BloopStep(NamedTuple):
    """One Bloop step: the update ``direction`` and the updated EMA of the main gradient."""
    direction: torch.Tensor
    ema: torch.Tensor


def bloop_direction(g_main: torch.Tensor, g_aux: torch.Tensor, ema: torch.Tensor | None, *, lam: float,
                    beta: float) -> BloopStep:
    """Bloop's direction (Hsieh et al. 2024, arXiv 2402.02998) and the new EMA of the main gradient.

    ``new_ema = beta * ema + (1 - beta) * g_main`` (``ema=None`` starts the average at ``g_main``, as the
    official code's ``init="grad"``), then ``direction = g_main + lam * (g_aux - <g_aux, e> / |e|^2 e)`` with
    ``e = new_ema``. ``beta = 0`` projects against the current (noisy) batch gradient; the paper's EMA
    weight ``rho`` on the new gradient is ``1 - beta``.
    """
    _check_vector("g_main", g_main)
    _check_vector("g_aux", g_aux)
    if g_main.shape != g_aux.shape:
        raise ValueError(f"g_main and g_aux must have the same shape, got {tuple(g_main.shape)} and "
                         f"{tuple(g_aux.shape)}")
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be a finite number >= 0 (the auxiliary loss's weight), got {lam!r}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
        raise ValueError(f"beta must be a number in [0, 1) (the EMA's memory; 0 = no EMA), got {beta!r}")
    if ema is None:
        new_ema = g_main.detach().clone()
    else:
        _check_vector("ema", ema)
        if ema.shape != g_main.shape:
            raise ValueError(f"ema must have g_main's shape {tuple(g_main.shape)}, got {tuple(ema.shape)}")
        new_ema = beta * ema + (1 - beta) * g_main.detach()
    return BloopStep(g_main + lam * project_out(g_aux, new_ema), new_ema)


LossFn = Callable[[nn.Module, object], torch.Tensor]


class SurgeryLoss:
    """A ``fit`` loss ``(model, batch) -> scalar`` whose gradient is a blend of a main and an auxiliary loss.

    ``method``: ``"sum"`` (``g_main + lam g_aux``), ``"pcgrad"`` (:func:`pcgrad` on ``[g_main, lam g_aux]``),
    ``"project"`` (:func:`bloop_direction` with ``beta=0``: against the batch gradient) or ``"bloop"`` (against
    an EMA with memory ``beta``). The returned scalar's value is the main loss of the batch; its gradient with
    respect to the model's parameters is the blended direction (a surrogate ``<params, d>`` is added with zero
    value). The EMA lives in this object (``ema``, reset by :meth:`reset`): use one object per run.
    """

    def __init__(self, main_loss: LossFn, aux_loss: LossFn, *, method: str = "bloop", lam: float = 1.0,
                 beta: float = 0.99, generator: torch.Generator | None = None):
        if not callable(main_loss) or not callable(aux_loss):
            raise TypeError("main_loss and aux_loss must be callables (model, batch) -> scalar tensor")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        bloop_direction(torch.zeros(1), torch.zeros(1), None, lam=lam, beta=beta)  # validates lam and beta
        self.main_loss, self.aux_loss = main_loss, aux_loss
        self.method, self.lam, self.beta = method, float(lam), float(beta)
        self.generator = check_generator(generator)
        self.ema: torch.Tensor | None = None

    def reset(self) -> None:
        self.ema = None

    def direction(self, g_main: torch.Tensor, g_aux: torch.Tensor) -> torch.Tensor:
        """The blended direction of two flat gradients (updates the EMA for ``"bloop"``)."""
        if self.method == "sum":
            return g_main + self.lam * g_aux
        if self.method == "pcgrad":
            return pcgrad(torch.stack([g_main, self.lam * g_aux]), generator=self.generator)
        beta = 0.0 if self.method == "project" else self.beta
        step = bloop_direction(g_main, g_aux, self.ema, lam=self.lam, beta=beta)
        self.ema = step.ema
        return step.direction

    def __call__(self, model: nn.Module, batch: object) -> torch.Tensor:
        params = resolve_params(model)
        main = self.main_loss(model, batch)
        aux = self.aux_loss(model, batch)
        for name, value in (("main_loss", main), ("aux_loss", aux)):
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise ValueError(f"{name} must return a scalar tensor")
        g_main = flatten(torch.autograd.grad(main, params, allow_unused=True, materialize_grads=True))
        g_aux = flatten(torch.autograd.grad(aux, params, allow_unused=True, materialize_grads=True))
        d = self.direction(g_main.detach(), g_aux.detach())
        surrogate = (flatten(params) * d).sum()
        return main.detach() + surrogate - surrogate.detach()


class TwoLossRun(NamedTuple):
    """A trained copy of the model and its :class:`~labkit.history.History` ("main loss", "aux loss" columns)."""
    model: nn.Module
    history: History


def train_two_losses(model: nn.Module, main_loss: LossFn, aux_loss: LossFn, data: tuple[torch.Tensor, ...], *,
                     method: str, lam: float, beta: float = 0.99, lr: float, steps: int, batch_size: int,
                     seed: int = 0, generator: torch.Generator | None = None, eval_every: int | None = None,
                     stop_when: Callable[[History], bool] | None = None, progress: bool | None = None,
                     desc: str | None = None) -> TwoLossRun:
    """Train a copy of ``model`` with plain SGD (learning rate ``lr``) along a :class:`SurgeryLoss` direction.

    Mini-batches of ``batch_size`` come from ``data`` in the order of ``seed`` (:func:`labkit.training.fit`);
    the history records the full-data ``main loss`` and ``aux loss`` every ``eval_every`` steps. ``model`` is
    left as found. See :class:`SurgeryLoss` for ``method``, ``lam``, ``beta`` and ``generator`` (PCGrad's order).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    blend = SurgeryLoss(main_loss, aux_loss, method=method, lam=lam, beta=beta, generator=generator)
    net = copy.deepcopy(model)
    full = tuple(data)

    def full_main(m: nn.Module) -> float:
        with torch.no_grad():
            return float(main_loss(m, full))

    def full_aux(m: nn.Module) -> float:
        with torch.no_grad():
            return float(aux_loss(m, full))

    history = fit(net, blend, full, optimizer=torch.optim.SGD(net.parameters(), lr=lr), steps=steps,
                  batch_size=batch_size, metrics={"main loss": full_main, "aux loss": full_aux},
                  eval_every=eval_every, stop_when=stop_when, seed=seed, progress=progress,
                  desc=desc or f"{method} lam={lam}")
    return TwoLossRun(net, history)


class SurgeryProblem(NamedTuple):
    """The quadratic toy of Hsieh et al. (arXiv 2402.02998, the official code's ``examples/quadratics``): an
    over-parameterized least-squares main loss ``1/2 mean((X w - y)^2)`` (``n < p``: a whole affine set of
    minimizers) and the auxiliary loss ``1/2 |w - target|^2``, for a linear model ``w`` without bias."""
    X: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor

    def losses(self) -> tuple[LossFn, LossFn]:
        """``(main_loss, aux_loss)`` as ``fit`` losses of an ``nn.Linear(p, 1, bias=False)`` model."""
        target = self.target

        def surgery_main_loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
            x, y = batch
            return 0.5 * ((model(x).reshape(-1) - y) ** 2).mean()

        def surgery_aux_loss(model: nn.Module, batch: object) -> torch.Tensor:
            w = flatten(resolve_params(model))
            return 0.5 * ((w - target.to(w)) ** 2).sum()

        return surgery_main_loss, surgery_aux_loss

    def bilevel_solution(self) -> torch.Tensor:
        """The minimizer of the auxiliary loss among the main loss's minimizers (closed form, ``X`` of full row
        rank): ``target + X^+ (y - X target)``, the projection of ``target`` onto ``{w : X w = y}``."""
        return self.target + torch.linalg.pinv(self.X) @ (self.y - self.X @ self.target)

    def values(self, w: torch.Tensor) -> tuple[float, float]:
        """(main loss, aux loss) at a flat weight vector ``w``."""
        return (float(0.5 * ((self.X @ w - self.y) ** 2).mean()), float(0.5 * ((w - self.target) ** 2).sum()))


def surgery_problem(n: int, p: int, *, noise: float = 0.3, scale: float = 2.0,
                    generator: torch.Generator | None = None, device: object = None) -> SurgeryProblem:
    """A random :class:`SurgeryProblem`: ``X`` with i.i.d. N(0, scale^2 / p) entries, ``y = X theta + noise *
    N(0, 1)`` for a standard normal ``theta``, ``target ~ N(0, scale^2 I)``. Requires ``n < p``."""
    for name, v in (("n", n), ("p", p)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if n >= p:
        raise ValueError(f"n must be smaller than p (an over-parameterized main loss), got n={n}, p={p}")
    for name, v in (("noise", noise), ("scale", scale)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    check_generator(generator)
    gen = {"generator": generator}
    theta = torch.randn(p, **gen)
    X = torch.randn(n, p, **gen) * scale / p ** 0.5
    y = X @ theta + noise * torch.randn(n, **gen)
    target = scale * torch.randn(p, **gen)
    return SurgeryProblem(X.to(device), y.to(device), target.to(device))


class SurgeryComparison(NamedTuple):
    """Final full-data losses of each (method, lam) run, their histories, and the problem's reference points."""
    main: dict[tuple[str, float], float]
    aux: dict[tuple[str, float], float]
    histories: dict[tuple[str, float], History]
    main_at_init: float
    bilevel_aux: float

    def best_aux(self, method: str, *, tol: float) -> float:
        """The lowest aux loss among ``method``'s runs whose main loss is at most ``tol`` (inf when none is)."""
        values = [a for (m, _), a in self.aux.items() if m == method and self.main[m, _] <= tol]
        return min(values, default=math.inf)


def compare_surgery(problem: SurgeryProblem, *, methods: Sequence[str] = METHODS, lams: Sequence[float],
                    beta: float = 0.99, lr: float, steps: int, batch_size: int, seed: int = 0,
                    eval_every: int | None = None, progress: bool | None = None) -> SurgeryComparison:
    """Train a zero-initialized linear model on ``problem`` with every method at every ``lam`` (the same
    mini-batch order, ``seed``) by :func:`train_two_losses`; collect final losses and histories."""
    if not isinstance(problem, SurgeryProblem):
        raise TypeError(f"problem must be a SurgeryProblem (see surgery_problem), got {type(problem).__name__}")
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods must be a non-empty list drawn from {METHODS}, got {list(methods)}")
    main_loss, aux_loss = problem.losses()
    model = nn.Linear(problem.X.shape[1], 1, bias=False).to(problem.X.device)
    with torch.no_grad():
        model.weight.zero_()
    main, aux, histories = {}, {}, {}
    for method in methods:
        for lam in lams:
            run = train_two_losses(model, main_loss, aux_loss, (problem.X, problem.y), method=method, lam=lam,
                                   beta=beta, lr=lr, steps=steps, batch_size=batch_size, seed=seed,
                                   eval_every=eval_every, progress=progress)
            key = (method, float(lam))
            histories[key] = run.history
            main[key], aux[key] = problem.values(run.model.weight.detach().reshape(-1))
    main0 = problem.values(torch.zeros_like(problem.target))[0]
    return SurgeryComparison(main, aux, histories, main0, problem.values(problem.bilevel_solution())[1])
