"""The experiments of the Hessian notebooks: training runs, spectra over widths and classes, gradient
subspaces, rescaled networks, edge-of-stability runs and domain-alignment heads.

Each function is one experiment of a notebook under ``notebooks/hessian`` (the paper is cited on it); the
notebooks keep the idea, the by-hand twins, the figures and the claims. Randomness comes in as explicit
seeds (``init_seed`` for a module's default initialisation, ``batch_seed`` for mini-batches) or
generators (``generator=``, CPU by default: see :mod:`labkit.autograd`), typically from a
:class:`labkit.runtime.Run`'s named streams.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from labkit.autograd import check_generator, randn
from labkit.data import digits
from labkit.hessian import (
    GGNOperator,
    HessianOperator,
    alignment_penalties,
    exact_hessian,
    filter_normalized_direction,
    loss_surface_1d,
    outlier_count,
    random_direction,
    subspace_fraction,
    top_eigenvalues,
)
from labkit.models import count_parameters, mlp
from labkit.training import History, LossFn, cross_entropy, fit

OPTIMIZERS = ("adam", "sgd")


@contextlib.contextmanager
def seeded_init(seed: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """Seed torch's global generator with ``seed`` for a block (a module's default initialisation), then
    restore it."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def copy_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """A new generator in the same state (so several networks get the same draws), or None."""
    generator = check_generator(generator)
    if generator is None:
        return None
    twin = torch.Generator(device=generator.device)
    twin.set_state(generator.get_state())
    return twin


def train_network(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    lr: float,
    steps: int,
    optimizer: str = "adam",
    loss: LossFn = cross_entropy,
    target_loss: float | None = None,
    batch_size: int | None = None,
    batch_seed: int = 0,
    metrics: Mapping[str, Callable[[nn.Module], float]] | None = None,
    eval_every: int | None = None,
    snapshots: Sequence[int] = (),
    desc: str = "training",
) -> History:
    """Train ``model`` in place with Adam or plain (S)GD through :func:`labkit.training.fit`.

    ``target_loss``: stop at the first step whose training loss is below it (the loss is checked every
    step), so that several networks are compared at the same loss (Sagun et al. 2018). ``batch_size=None``
    is full-batch gradient descent; else seeded mini-batches (``batch_seed``, any non-negative int such as
    ``run.seed_for("batches")``: it is reduced to 32 bits, as ``fit`` multiplies its seed into a 64-bit one).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if target_loss is not None and not target_loss > 0:
        raise ValueError(f"target_loss must be positive or None, got {target_loss!r}")
    if isinstance(batch_seed, bool) or not isinstance(batch_seed, int) or batch_seed < 0:
        raise ValueError(f"batch_seed must be a non-negative int, got {batch_seed!r}")
    make = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    stop = None
    if target_loss is not None:
        eval_every = 1

        def stop(h: History) -> bool:
            return bool(h.loss) and h.loss[-1] < target_loss

    return fit(model, loss, data, optimizer=make(model.parameters(), lr=lr), steps=steps, batch_size=batch_size,
               seed=batch_seed % 2**32, metrics=metrics, eval_every=eval_every, snapshots=snapshots, stop_when=stop,
               desc=desc)


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
    eigenvalue, and the final training loss."""

    steps: list[int]
    fractions: list[float]
    random_fractions: list[float]
    sharpness: list[float]
    final_loss: float

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
    if not eval_steps or max(eval_steps) > steps:
        raise ValueError(f"eval_steps must be non-empty and within [0, steps={steps}], got {list(eval_steps)}")
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
        out[name] = SubspaceRun(list(eval_steps), fractions, random_fractions, sharpness, op.loss())
    return out


DIRECTIONS = {"raw Gaussian": random_direction, "filter-normalized": filter_normalized_direction}


def rescaled_copy(model: nn.Sequential, factor: float, *, first: int = 0, second: int = 2) -> nn.Sequential:
    """A copy of a ReLU MLP computing the same function: layer ``first`` (weight and bias) times ``factor``,
    layer ``second``'s weight divided by it (positive homogeneity of ReLU; Dinh et al. 2017)."""
    if not factor > 0:
        raise ValueError(f"factor must be positive (ReLU is only positively homogeneous), got {factor!r}")
    net = copy.deepcopy(model)
    with torch.no_grad():
        net[first].weight.mul_(factor)
        net[first].bias.mul_(factor)
        net[second].weight.div_(factor)
    return net


def rescaling_curves(
    model: nn.Sequential,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    factors: Sequence[float],
    alphas: torch.Tensor,
    generator: torch.Generator | None = None,
) -> dict[tuple[str, float], torch.Tensor]:
    """Li et al., *Visualizing the Loss Landscape of Neural Nets* (NeurIPS 2018): the loss along
    ``theta + alpha d`` of every rescaled copy (:func:`rescaled_copy`) for a raw Gaussian and a
    filter-normalized direction ``d``, each drawn from the same state of ``generator`` for every copy;
    keyed by ``(kind, factor)`` with kinds ``"raw Gaussian"`` and ``"filter-normalized"``."""
    curves = {}
    for factor in factors:
        net = rescaled_copy(model, factor)
        for kind, make in DIRECTIONS.items():
            d = make(net, generator=copy_generator(generator))
            curves[(kind, factor)] = loss_surface_1d(net, loss_fn, data, d, alphas=alphas).losses
    return curves


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


def logistic_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of ``(N, 1)`` logits against ``{0, 1}`` labels."""
    return F.binary_cross_entropy_with_logits(outputs.squeeze(1), targets.float())


@torch.no_grad()
def binary_accuracy(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``(N, 1)`` logits on the right side of 0 for ``{0, 1}`` labels."""
    return float(((head(x).squeeze(1) > 0).long() == y).float().mean())


@dataclass(frozen=True)
class AlignedHead:
    """A logistic head trained by :func:`train_aligned_heads`, its test-domain and mean training-domain
    accuracy, and its weights on the invariant and the spurious feature."""

    head: nn.Linear
    test: float
    train: float
    w_inv: float
    w_spur: float


def train_aligned_heads(
    train_domains: Sequence[tuple[torch.Tensor, torch.Tensor]],
    test_domain: tuple[torch.Tensor, torch.Tensor],
    *,
    methods: Mapping[str, tuple[float, float, int | None]],
    steps: int,
    lr: float,
    generator: torch.Generator | None = None,
) -> dict[str, AlignedHead]:
    """Hemati et al., *Understanding Hessian Alignment for Domain Generalization* (ICCV 2023): for each
    ``name -> (alpha, beta, probes)`` train a zero-initialised logistic head with full-batch GD on
    ``mean loss + alpha * gradient penalty + beta * Hessian penalty`` (:func:`alignment_penalties`; ``probes``
    None: exact Hessians, else Hutchinson probes drawn from a copy of ``generator``'s state)."""
    if not train_domains:
        raise ValueError("train_domains must hold at least one (inputs, targets) pair")
    x0 = train_domains[0][0]
    out = {}
    for name, (alpha, beta, probes) in methods.items():
        head = nn.Linear(x0.shape[1], 1).to(x0.device, x0.dtype)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        probe_gen = copy_generator(generator)

        def objective(m: nn.Module, _batch: Any, alpha: float = alpha, beta: float = beta,
                      probes: int | None = probes, probe_gen: torch.Generator | None = probe_gen) -> torch.Tensor:
            loss, grad_pen, hess_pen = alignment_penalties(m, logistic_loss, train_domains, probes=probes,
                                                           generator=probe_gen)
            return loss + alpha * grad_pen + beta * hess_pen

        fit(head, objective, None, optimizer=torch.optim.SGD(head.parameters(), lr=lr), steps=steps, desc=name)
        train = sum(binary_accuracy(head, x, y) for x, y in train_domains) / len(train_domains)
        out[name] = AlignedHead(head, binary_accuracy(head, *test_domain), train, float(head.weight[0, 0].detach()),
                                float(head.weight[0, 1].detach()))
    return out


__all__ = [
    "AlignedHead",
    "SpectrumGrid",
    "SubspaceRun",
    "binary_accuracy",
    "copy_generator",
    "edge_of_stability_runs",
    "gradient_subspace_runs",
    "half_squared_error",
    "logistic_loss",
    "rescaled_copy",
    "rescaling_curves",
    "seeded_init",
    "sharpness",
    "train_aligned_heads",
    "train_network",
    "width_class_spectra",
]
