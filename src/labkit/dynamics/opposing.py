"""Outliers with opposing signals: groups of training points whose losses swing against each other.

Rosenfeld and Risteski, *Outliers with Opposing Signals Have an Outsized Effect on Neural Network Optimization*
(arXiv 2311.04163). A few training points carry a large feature that occurs with both labels ("sky" in planes
and in other classes). Their gradients along that feature point in opposite directions; GD balances them in a
narrow valley, the valley sharpens until the sharpness reaches about ``2 / lr``, and then the network's use of
the feature oscillates: the loss of one group rises while the other's falls, until the total loss spikes.

:func:`find_opposing_groups` finds such groups from per-example losses recorded along training;
:func:`antiphase_correlation` measures how much two loss curves move against each other;
:func:`opposing_signals_data` and :func:`train_opposing` are the toy experiment of the notebook.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from labkit import checks
from labkit.autograd import check_generator, randn
from labkit.hessian import HessianOperator, top_eigenvalues
from labkit.training import fit

__all__ = [
    "OpposingData",
    "OpposingGroups",
    "OpposingRun",
    "antiphase_correlation",
    "find_opposing_groups",
    "opposing_loss",
    "opposing_mlp",
    "opposing_signals_data",
    "train_opposing",
]


@dataclass(frozen=True)
class OpposingGroups:
    """Two groups of ``k`` training points whose losses change in opposite directions.

    ``group_a`` / ``group_b`` (k,) example indices (most positive / most negative loadings), ``scores`` (n,)
    every example's loading on the leading direction of the per-step loss changes (sign fixed so that
    ``group_a`` is the group whose loss rises first), ``correlation`` the :func:`antiphase_correlation` of the
    two groups' mean losses (negative when they swing against each other).
    """

    group_a: torch.Tensor
    group_b: torch.Tensor
    scores: torch.Tensor
    correlation: float


def _curve(x: object, name: str) -> torch.Tensor:
    x = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    x = checks.tensor(x, name, ndim=1)
    if not x.is_floating_point():
        x = x.double()
    if x.numel() < 3:
        raise ValueError(f"{name} needs at least 3 points (two changes), got {x.numel()}")
    return x.detach().double().cpu()


def antiphase_correlation(loss_a: torch.Tensor, loss_b: torch.Tensor) -> float:
    """Pearson correlation of the step-to-step changes of two loss curves (length T each).

    Changes rather than levels: both losses fall over training, which would correlate the levels even when
    the two groups swing against each other from step to step. ``-1``: perfect anti-phase (one rises exactly
    when the other falls), ``+1``: in phase, ``0`` for unrelated changes (e.g. ``sin`` against ``cos`` over
    whole periods). Returns ``nan`` when either curve is constant.
    """
    a, b = _curve(loss_a, "loss_a"), _curve(loss_b, "loss_b")
    if a.numel() != b.numel():
        raise ValueError(f"loss_a and loss_b must have the same length, got {a.numel()} and {b.numel()}")
    da, db = torch.diff(a), torch.diff(b)
    da, db = da - da.mean(), db - db.mean()
    denom = torch.sqrt((da**2).sum() * (db**2).sum())
    if float(denom) == 0.0:
        return float("nan")
    return float((da * db).sum() / denom)


def find_opposing_groups(per_example_losses: torch.Tensor, *, k: int) -> OpposingGroups:
    """The two groups of ``k`` examples whose losses swing against each other most.

    ``per_example_losses`` (T, n): the loss of every training example at T recorded steps. Rosenfeld and
    Risteski (arXiv 2311.04163) identify the groups from how the training points' losses change along
    training (the abstract: "we describe how to identify these groups"); this function is labkit's own
    precise version. Take the step-to-step changes ``D`` (T-1, n), centred over time; its leading right
    singular vector ``v`` (n,) is the pattern of change that explains most of the variance. Examples with
    large positive loadings gain loss when those with large negative loadings lose it: ``group_a`` is the
    ``k`` most positive, ``group_b`` the ``k`` most negative. The sign of ``v`` is fixed so that
    ``group_a``'s mean loss has the larger first rise.
    """
    losses = checks.tensor(per_example_losses, "per_example_losses", floating=True, ndim=2)
    T, n = losses.shape
    if T < 3:
        raise ValueError(f"per_example_losses needs at least 3 recorded steps (rows), got {T}")
    checks.integer(k, "k", low=1, high=n // 2)
    D = torch.diff(losses.detach().double().cpu(), dim=0)
    D = D - D.mean(dim=0, keepdim=True)
    _, _, Vh = torch.linalg.svd(D, full_matrices=False)
    v = Vh[0]
    order = torch.argsort(v, descending=True)
    a, b = order[:k], order.flip(0)[:k]
    mean_a, mean_b = losses[:, a].double().mean(1).cpu(), losses[:, b].double().mean(1).cpu()
    rise_a, rise_b = torch.diff(mean_a).clamp(min=0), torch.diff(mean_b).clamp(min=0)
    first_a = int(torch.nonzero(rise_a > 0)[0]) if bool((rise_a > 0).any()) else T
    first_b = int(torch.nonzero(rise_b > 0)[0]) if bool((rise_b > 0).any()) else T
    if first_b < first_a or (first_a == first_b and float(rise_b[first_b:].sum()) > float(rise_a[first_a:].sum())):
        a, b, v = b, a, -v
        mean_a, mean_b = mean_b, mean_a
    return OpposingGroups(a.clone(), b.clone(), v.clone(), antiphase_correlation(mean_a, mean_b))


@dataclass(frozen=True)
class OpposingData:
    """The toy data: ``x`` (n, d + 1) with the large feature in the last column, ``y`` (n,) labels in
    {-1, +1}, and the indices of the two opposing groups (the points that carry the large feature with
    label +1, ``group_a``, and with label -1, ``group_b``)."""

    x: torch.Tensor
    y: torch.Tensor
    group_a: torch.Tensor
    group_b: torch.Tensor

    def without_groups(self) -> OpposingData:
        """The same data with both opposing groups removed."""
        keep = torch.ones(self.y.numel(), dtype=torch.bool)
        keep[self.group_a] = False
        keep[self.group_b] = False
        empty = torch.empty(0, dtype=torch.long)
        return OpposingData(self.x[keep], self.y[keep], empty, empty)


def opposing_signals_data(n: int, d: int, *, group_size: int, magnitude: float,
                          generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> OpposingData:
    """``n`` points with ``d`` Gaussian core features labelled by a random linear rule ``y = sign(<w, x>)``, and
    one extra feature that is zero except on ``2 * group_size`` outliers, where it equals ``magnitude``:
    ``group_size`` of label +1 and ``group_size`` of label -1. The extra feature is large, consistent, and
    says nothing about the label: an opposing signal in the sense of Rosenfeld and Risteski (arXiv 2311.04163).
    """
    checks.positive_int(n, "n")
    checks.positive_int(d, "d")
    checks.positive_int(group_size, "group_size")
    magnitude = checks.number(magnitude, "magnitude", low=0, low_open=True)
    check_generator(generator)
    w = randn((d,), generator=generator, dtype=torch.float64)
    core = randn((n, d), generator=generator, dtype=torch.float64)
    y = torch.where(core @ w >= 0, 1.0, -1.0).double()
    pos, neg = torch.nonzero(y > 0).flatten(), torch.nonzero(y < 0).flatten()
    if pos.numel() < group_size or neg.numel() < group_size:
        raise ValueError(f"group_size={group_size} is larger than the examples of one label ({pos.numel()} positive, "
                         f"{neg.numel()} negative); lower group_size or raise n")
    a, b = pos[:group_size], neg[:group_size]   # the draws are exchangeable: the first of each label
    extra = torch.zeros(n, 1, dtype=torch.float64)
    extra[a] = magnitude
    extra[b] = magnitude
    return OpposingData(torch.cat([core, extra], 1).to(dtype), y.to(dtype), a, b)


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def opposing_mlp(d_in: int, hidden: int, *, activation: str = "relu", generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """A ``d_in - hidden - hidden - 1`` MLP (depth matters for opposing signals; ``activation`` "relu" or
    "tanh"), PyTorch's default initialization drawn from ``generator``."""
    checks.positive_int(d_in, "d_in")
    checks.positive_int(hidden, "hidden")
    checks.choice(activation, "activation", tuple(ACTIVATIONS))
    check_generator(generator)
    act = ACTIVATIONS[activation]
    model = nn.Sequential(nn.Linear(d_in, hidden), act(), nn.Linear(hidden, hidden), act(),
                          nn.Linear(hidden, 1)).to(dtype)
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                bound = 1 / layer.in_features**0.5
                layer.weight.copy_((2 * torch.rand(layer.weight.shape, generator=generator, dtype=torch.float64) - 1)
                                   * bound)
                layer.bias.copy_((2 * torch.rand(layer.bias.shape, generator=generator, dtype=torch.float64) - 1)
                                 * bound)
    return model


def opposing_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean squared loss ``mean (f(x) - y)^2 / 2`` (the loss of the edge-of-stability experiments)."""
    return 0.5 * ((outputs.reshape(-1) - targets.reshape(-1)) ** 2).mean()


@dataclass(frozen=True)
class OpposingRun:
    """Full-batch GD on the toy data: ``losses`` (T, n) every example's loss before each step (T = steps),
    ``sharpness_steps`` and ``sharpness`` the top Hessian eigenvalue of the training loss every ``every``
    steps, ``lr`` the step size, ``model`` the trained network."""

    losses: torch.Tensor
    sharpness_steps: list[int]
    sharpness: list[float]
    lr: float
    model: nn.Module

    @property
    def loss(self) -> torch.Tensor:
        """The training loss (mean over examples) before each step."""
        return self.losses.mean(1)


def train_opposing(data: OpposingData, *, hidden: int, lr: float, steps: int, every: int = 10,
                   activation: str = "relu",
                   init_generator: torch.Generator | None = None, generator: torch.Generator | None = None,
                   stop: Callable[[int, int], bool] | None = None) -> OpposingRun:
    """Full-batch GD (``labkit.training.fit`` with plain SGD) on ``data`` with :func:`opposing_loss`, recording
    every example's loss at every step and the sharpness (``labkit.hessian.top_eigenvalues`` of the
    ``HessianOperator``; Lanczos start vectors from ``generator``) every ``every`` steps.
    ``init_generator`` draws the network's initialization; ``stop(done, total)`` may end the run early.
    """
    if not isinstance(data, OpposingData):
        raise TypeError(f"data must be OpposingData (from opposing_signals_data), got {type(data).__name__}")
    checks.positive_int(hidden, "hidden")
    lr = checks.number(lr, "lr", low=0, low_open=True)
    checks.positive_int(steps, "steps")
    checks.positive_int(every, "every")
    check_generator(init_generator)
    check_generator(generator)
    x, y = data.x, data.y
    model = opposing_mlp(x.shape[1], hidden, activation=activation, generator=init_generator, dtype=x.dtype)
    rows: list[torch.Tensor] = []

    def loss_fn(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        per = 0.5 * (net(batch[0]).reshape(-1) - batch[1]) ** 2
        rows.append(per.detach())
        return per.mean()

    def sharpness(net: nn.Module) -> float:
        op = HessianOperator(net, opposing_loss, (x, y))
        return float(top_eigenvalues(op, k=1, tol=1e-4, generator=generator).eigenvalues[0])

    stop_when = None if stop is None else (lambda h: stop(len(rows), steps))
    history = fit(model, loss_fn, (x, y), optimizer=torch.optim.SGD(model.parameters(), lr=lr), steps=steps,
                  metrics={"sharpness": sharpness}, eval_every=every, stop_when=stop_when, progress=False,
                  desc="opposing signals")
    return OpposingRun(torch.stack(rows), history.steps, history["sharpness"], lr, model)
