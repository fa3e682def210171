"""Curvature experiments: exact spectra over widths and classes (Sagun et al. 2018), the gradient in the top
Hessian eigenspace (Gur-Ari et al. 2018), and the sharpness along gradient descent at the edge of stability
(Cohen et al. 2021)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from labkit import checks
from labkit.autograd import randn
from labkit.data import digits
from labkit.hessian import (
    GGNOperator,
    HessianOperator,
    exact_hessian,
    outlier_count,
    subspace_fraction,
    top_eigenvalues,
)
from labkit.hessian.experiments.training import copy_generator, seeded_init, train_network
from labkit.models import count_parameters, mlp
from labkit.training import History


@dataclass(frozen=True)
class SpectrumGrid:
    """Exact Hessian spectra of ``64 -> width -> C`` MLPs, keyed by ``(C, width)``: ``spectra`` (all
    eigenvalues, decreasing, float64 on the CPU), ``outliers`` (:func:`outlier_count`), ``parameters``; and
    ``ggn_top``, the top ``C - 1`` eigenvalues of the Gauss-Newton part for the most classes and the widest net."""

    spectra: Mapping[tuple[int, int], torch.Tensor]
    outliers: Mapping[tuple[int, int], int]
    parameters: Mapping[tuple[int, int], int]
    ggn_top: torch.Tensor

    @property
    def classes(self) -> list[int]:
        return sorted({c for c, _ in self.spectra})

    @property
    def widths(self) -> list[int]:
        return sorted({w for _, w in self.spectra})


def width_class_spectra(
    *,
    widths: Sequence[int],
    class_sets: Sequence[Sequence[int]],
    n_train: int,
    lr: float,
    max_steps: int,
    target_loss: float,
    data_seed: int = 0,
    init_seed: int = 0,
    device: str | torch.device = "cpu",
    generator: torch.Generator | None = None,
) -> SpectrumGrid:
    """Sagun et al., *Empirical Analysis of the Hessian of Over-Parametrized Neural Networks* (2018): for every
    set of digit classes and every width, train the MLP with Adam on the first ``n_train`` training digits until
    the loss is below ``target_loss`` (all nets from the same ``init_seed``), then take all eigenvalues of its
    exact (float64) Hessian. ``generator`` starts the Lanczos run of the Gauss-Newton operator."""
    if not widths or not class_sets:
        raise ValueError("widths and class_sets must be non-empty")
    for i, width in enumerate(widths):
        checks.positive_int(width, f"widths[{i}]")
    for i, classes in enumerate(class_sets):
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ValueError(f"class_sets[{i}] must hold at least two distinct digit classes, got {list(classes)}")
        for c in classes:
            checks.integer(c, f"class_sets[{i}]", low=0, high=9)
    checks.positive_int(n_train, "n_train")
    checks.positive_int(max_steps, "max_steps")
    spectra, outliers, parameters = {}, {}, {}
    ggn_top = torch.empty(0)
    largest = max(len(c) for c in class_sets)
    for classes in class_sets:
        sub = digits(seed=data_seed, classes=list(classes), device=device)
        xs, ys = sub.train_x[:n_train], sub.train_y[:n_train]
        for width in widths:
            with seeded_init(init_seed, device):
                net = mlp(64, [width], len(classes)).to(device)
            train_network(net, (xs, ys), lr=lr, steps=max_steps, target_loss=target_loss,
                          desc=f"C={len(classes)} width={width}")
            key = (len(classes), width)
            spectra[key] = torch.linalg.eigvalsh(exact_hessian(net, F.cross_entropy, (xs, ys))).flip(0).cpu()
            outliers[key] = outlier_count(spectra[key])
            parameters[key] = count_parameters(net)
            if len(classes) == largest and width == max(widths):
                top = top_eigenvalues(GGNOperator(net, F.cross_entropy, (xs, ys)), k=largest - 1, generator=generator)
                ggn_top = top.eigenvalues.double().cpu()
    return SpectrumGrid(spectra, outliers, parameters, ggn_top)


@dataclass(frozen=True)
class SubspaceRun:
    """One training run of :func:`gradient_subspace_runs`, measured at ``steps``: the fraction of the
    full-batch gradient in the top-k Hessian eigenspace, in a random k-dimensional subspace, the top
    eigenvalue, and the final training loss. ``snapshots`` maps each of ``steps`` to the network's state
    dict there (CPU copies), so the measurement can be repeated at a checkpoint with other settings."""

    steps: list[int]
    fractions: list[float]
    random_fractions: list[float]
    sharpness: list[float]
    final_loss: float
    snapshots: Mapping[int, Mapping[str, torch.Tensor]] = field(default_factory=dict, repr=False, compare=False)

    def late_mean(self, after: int = 100) -> float:
        """Mean fraction in the top subspace over the checkpoints at step >= ``after``."""
        late = [f for s, f in zip(self.steps, self.fractions, strict=True) if s >= after]
        if not late:
            raise ValueError(f"no checkpoint at step >= {after}; checkpoints: {self.steps}")
        return sum(late) / len(late)

    def late_random_max(self, after: int = 100) -> float:
        """Largest fraction in the random subspace over the checkpoints at step >= ``after``."""
        return max(f for s, f in zip(self.steps, self.random_fractions, strict=True) if s >= after)


def gradient_subspace_runs(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    hidden: int,
    runs: Mapping[str, tuple[float, int | None]],
    steps: int,
    eval_steps: Sequence[int],
    k: int = 10,
    tol: float = 1e-3,
    init_seed: int = 0,
    batch_seed: int = 0,
    generator: torch.Generator | None = None,
) -> dict[str, SubspaceRun]:
    """Gur-Ari, Roberts and Dyer, *Gradient Descent Happens in a Tiny Subspace* (2018): train the MLP
    ``D -> hidden -> C`` (``C = y.max() + 1``) with SGD for each ``name -> (lr, batch_size)`` (``None``: full
    batch), all from the same ``init_seed``, and at each of ``eval_steps`` measure the fraction of the full-batch
    gradient in the top-``k`` Hessian eigenspace (Lanczos to ``tol``) and in a random ``k``-dimensional subspace.
    ``generator`` draws the Lanczos starts and the random subspaces."""
    checks.tensor(x, "x", floating=True, ndim=2, nonempty=True)
    checks.tensor(y, "y", ndim=1)
    if len(x) != len(y):
        raise ValueError(f"x and y must have as many rows, got {len(x)} and {len(y)}")
    checks.class_indices(y, int(y.max()) + 1 if not y.is_floating_point() else 1, "y")
    checks.positive_int(hidden, "hidden")
    checks.positive_int(steps, "steps")
    checks.positive_int(k, "k")
    if not eval_steps or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= steps
                             for s in eval_steps):
        raise ValueError(f"eval_steps must be non-empty ints within [0, steps={steps}], got {list(eval_steps)}")
    out, classes = {}, int(y.max()) + 1
    for name, (lr, batch) in runs.items():
        with seeded_init(init_seed, x.device):
            net = mlp(x.shape[1], [hidden], classes).to(x.device)
        history = train_network(net, (x, y), lr=lr, steps=steps, optimizer="sgd", batch_size=batch,
                                batch_seed=batch_seed, snapshots=eval_steps, desc=name)
        fractions, random_fractions, sharpness = [], [], []
        for step in eval_steps:
            net.load_state_dict(history.snapshots[step])
            op = HessianOperator(net, F.cross_entropy, (x, y))
            eig = top_eigenvalues(op, k=k, tol=tol, generator=generator)
            grad = op.gradient()
            basis, _ = torch.linalg.qr(randn((op.numel, k), generator=generator, device=x.device))
            fractions.append(subspace_fraction(grad, eig.eigenvectors))
            random_fractions.append(subspace_fraction(grad, basis))
            sharpness.append(float(eig.eigenvalues[0]))
        out[name] = SubspaceRun(list(eval_steps), fractions, random_fractions, sharpness, op.loss(),
                                snapshots={step: history.snapshots[step] for step in eval_steps})
    return out


def half_squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``0.5 * ||outputs - targets||^2`` per example, averaged over the batch (Cohen et al. 2021's loss)."""
    return 0.5 * ((outputs - targets) ** 2).sum(dim=1).mean()


def sharpness(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    data: Any,
    *,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
) -> float:
    """The top Hessian eigenvalue of the loss (Lanczos to ``tol``), started from a copy of ``generator``'s
    state, so every call starts from the same vector."""
    op = HessianOperator(model, loss_fn, data)
    return float(top_eigenvalues(op, k=1, tol=tol, generator=copy_generator(generator)).eigenvalues[0])


def edge_of_stability_runs(
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    hidden: int,
    lrs: Sequence[float],
    steps: int,
    every: int,
    init_seed: int = 0,
    generator: torch.Generator | None = None,
) -> dict[float, History]:
    """Cohen et al., *Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability* (ICLR 2021):
    full-batch GD on a tanh MLP ``D -> hidden -> C`` with :func:`half_squared_error` on one-hot ``targets``, one
    run per step size (same ``init_seed``), the sharpness recorded every ``every`` steps (``history["sharpness"]``)."""
    checks.tensor(x, "x", floating=True, ndim=2, nonempty=True)
    checks.tensor(targets, "targets", floating=True, ndim=2)
    if len(x) != len(targets):
        raise ValueError(f"x and targets must have as many rows, got {len(x)} and {len(targets)}")
    checks.positive_int(hidden, "hidden")
    checks.positive_int(steps, "steps")
    checks.positive_int(every, "every")
    if not lrs:
        raise ValueError("lrs must hold at least one step size")
    for i, lr in enumerate(lrs):
        checks.number(lr, f"lrs[{i}]", low=0, low_open=True)
    runs = {}
    for lr in lrs:
        with seeded_init(init_seed, x.device):
            net = mlp(x.shape[1], [hidden], targets.shape[1], activation="tanh").to(x.device)

        def metric(m: nn.Module) -> float:
            return sharpness(m, half_squared_error, (x, targets), generator=generator)

        runs[lr] = train_network(net, (x, targets), lr=lr, steps=steps, optimizer="sgd", eval_every=every,
                                 loss=lambda m, b: half_squared_error(m(b[0]), b[1]),
                                 metrics={"sharpness": metric}, desc=f"GD η={lr}")
    return runs


__all__ = ["SpectrumGrid", "SubspaceRun", "edge_of_stability_runs", "gradient_subspace_runs", "half_squared_error",
           "sharpness", "width_class_spectra"]
