"""Simplicity bias and how to reduce it: the LMS data, randomization tests and USEFUL's up-sampling.

* :func:`lms_data`: the "linear + multiple k-slabs" data of Shah et al. (2020), *The Pitfalls of Simplicity Bias
  in Neural Networks* (https://arxiv.org/abs/2006.07710): coordinate 0 separates the classes linearly (the
  "simple" feature, optionally noisy: its sign is flipped on a share of the examples), every other coordinate
  is a k-slab (the "complex" features: the interval [-1, 1] cut into k slabs whose labels alternate), each of
  which alone predicts the label perfectly.
* :func:`randomize_coordinates` and :func:`randomization_test`: Shah et al.'s S-randomized and
  S^c-randomized accuracies (the values of a coordinate set permuted across examples, which keeps their
  marginal and breaks their link with the label).
* :func:`kmeans`, :func:`useful_split`, :func:`upsample` and :func:`train_useful`: USEFUL, "UpSample Early
  For Uniform Learning", of Nguyen, Haddad, Gan and Mirzasoleiman (2024), *Changing the Training Data
  Distribution to Reduce Simplicity Bias Improves In-distribution Generalization*
  (https://arxiv.org/abs/2404.17768): train for a few epochs, cluster the examples of every class in two by
  the network's output, up-sample the cluster of higher average loss (the examples not learned early) once,
  and train again from the same initialization on the new distribution.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from labkit import checks
from labkit.autograd import check_generator, check_module, preserve_model, rand, randperm, train_mode
from labkit.sam.experiments import Trained, make_optimizer, train_from
from labkit.training import fit, fit_loss


class LMSData(NamedTuple):
    """Inputs ``x`` (N, dim), labels ``y`` (N,) in {0, 1}, the simple coordinates and the complex ones."""

    x: torch.Tensor
    y: torch.Tensor
    simple: tuple[int, ...]
    complex: tuple[int, ...]


def slab_centres(k: int) -> torch.Tensor:
    """The centres of the k equal slabs of [-1, 1]: ``-1 + (2j + 1) / k``; slab ``j`` belongs to class ``j % 2``."""
    checks.integer(k, "slabs", low=2)
    return -1 + (2 * torch.arange(k, dtype=torch.float64) + 1) / k


def lms_data(
    n: int,
    *,
    dim: int = 10,
    slabs: int = 5,
    margin: float = 0.1,
    slab_gap: float = 0.2,
    simple_noise: float = 0.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: Any = None,
) -> LMSData:
    """``n`` examples of LMS-k (Shah et al., 2020, Sec. 3): balanced labels ``y``; coordinate 0 is
    ``s * U[margin, 1]`` with ``s = 2y - 1`` (the simple, linear feature; with probability ``simple_noise`` its
    sign is flipped, Shah et al.'s noisy-linear variant, so it predicts only ``1 - simple_noise`` of the labels);
    each of the ``dim - 1`` other coordinates lies uniformly in one slab of its class (slabs of width
    ``(1 - slab_gap) * 2 / k`` around :func:`slab_centres`, chosen uniformly among the class's slabs, drawn
    independently per coordinate). Each slab coordinate alone separates the classes, but only with a
    non-linear rule (k - 1 thresholds)."""
    checks.positive_int(n, "n")
    checks.integer(dim, "dim", low=2)
    checks.integer(slabs, "slabs", low=2)
    checks.number(margin, "margin", low=0, high=1, high_open=True)
    checks.number(slab_gap, "slab_gap", low=0, high=1, high_open=True)
    checks.number(simple_noise, "simple_noise", low=0, high=1)
    check_generator(generator)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    g = generator
    y = randperm(n, generator=g, device="cpu") % 2           # drawn on the generator's device (house rule)
    sign = 2.0 * y.double() - 1
    flipped = rand((n,), generator=g, device="cpu", dtype=torch.float64) < simple_noise
    sign = torch.where(flipped, -sign, sign)
    simple = sign * (margin + (1 - margin) * rand((n,), generator=g, device="cpu", dtype=torch.float64))
    centres = slab_centres(slabs)
    owned = [torch.arange(c, slabs, 2) for c in (0, 1)]            # class c owns the slabs j with j % 2 == c
    counts = torch.tensor([len(o) for o in owned])
    pick = (rand((n, dim - 1), generator=g, device="cpu", dtype=torch.float64) * counts[y].unsqueeze(1)).long()
    slab = torch.where(y.unsqueeze(1) == 0, owned[0][pick.clamp(max=len(owned[0]) - 1)],
                       owned[1][pick.clamp(max=len(owned[1]) - 1)])
    half = (1 - slab_gap) / slabs
    offset = (2 * rand((n, dim - 1), generator=g, device="cpu", dtype=torch.float64) - 1) * half
    x = torch.cat([simple.unsqueeze(1), centres[slab] + offset], dim=1)
    return LMSData(x.to(dtype=dtype, device=device), y.to(device), (0,), tuple(range(1, dim)))


def _coordinates(coordinates: Sequence[int], dim: int, name: str) -> list[int]:
    if isinstance(coordinates, int) or not isinstance(coordinates, Sequence) or not coordinates:
        raise TypeError(f"{name} must be a non-empty sequence of column indices, got {coordinates!r}")
    cols = [checks.integer(c, f"{name}[{i}]", low=0, high=dim - 1) for i, c in enumerate(coordinates)]
    if len(set(cols)) != len(cols):
        raise ValueError(f"{name} has repeated columns: {cols}")
    return cols


def randomize_coordinates(x: torch.Tensor, coordinates: Sequence[int], *,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """A copy of ``x`` (N, dim) whose ``coordinates`` are permuted across the examples, all by one permutation
    (Shah et al.'s randomization: the block keeps its joint distribution and loses its link with the label)."""
    checks.tensor(x, "x", floating=True, ndim=2, nonempty=True)
    cols = _coordinates(coordinates, x.shape[1], "coordinates")
    check_generator(generator)
    perm = randperm(len(x), generator=generator, device=x.device)
    out = x.clone()
    out[:, cols] = x[perm][:, cols]
    return out


class RandomizationTest(NamedTuple):
    """Accuracy on the data as it is, with the simple coordinates randomized (S-randomized) and with the
    complex ones randomized (S^c-randomized), each averaged over ``repeats`` permutations."""

    standard: float
    simple_randomized: float
    complex_randomized: float


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(dim=1) == y).double().mean())


def randomization_test(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, simple: Sequence[int] = (0,),
                       complex: Sequence[int] | None = None, repeats: int = 5,
                       generator: torch.Generator | None = None) -> RandomizationTest:
    """Shah et al.'s test of which features a classifier uses (Sec. 4): a model that relies on the simple
    feature alone falls to chance when it is randomized and keeps its accuracy when the complex ones are.
    ``complex`` defaults to every column not in ``simple``; the model is evaluated in eval mode and left as found."""
    check_module(model)
    checks.tensor(x, "x", floating=True, ndim=2, nonempty=True)
    checks.tensor(y, "y", ndim=1)
    if len(y) != len(x):
        raise ValueError(f"x and y must have the same number of rows, got {len(x)} and {len(y)}")
    checks.positive_int(repeats, "repeats")
    check_generator(generator)
    s = _coordinates(simple, x.shape[1], "simple")
    c = _coordinates([i for i in range(x.shape[1]) if i not in s] if complex is None else complex,
                     x.shape[1], "complex")
    with preserve_model(model), train_mode(model, False):
        def mean_acc(cols: list[int]) -> float:
            return sum(_accuracy(model, randomize_coordinates(x, cols, generator=generator), y)
                       for _ in range(repeats)) / repeats
        return RandomizationTest(_accuracy(model, x, y), mean_acc(s), mean_acc(c))


def feature_learning_curve(
    init: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    kind: str = "sgd",
    rho: float | None = None,
    lr: float,
    steps: int,
    batch_size: int | None = None,
    every: int = 25,
    simple: Sequence[int] = (0,),
    repeats: int = 2,
    seed: int = 0,
    generator: torch.Generator | None = None,
    progress: bool | None = None,
    desc: str | None = None,
) -> Trained:
    """Train a copy of ``init`` with :func:`labkit.sam.make_optimizer` ``(kind, rho, lr)`` (mini-batches from
    ``seed``) and run :func:`randomization_test` on ``test`` every ``every`` steps: the history's columns
    ``"test accuracy"``, ``"simple randomized"`` and ``"complex randomized"`` show when each feature is learned
    (Nguyen et al., 2024, Sec. 4: SAM learns the slow feature earlier than SGD). ``init`` is left untouched."""
    check_module(init, "init")
    checks.positive_int(steps, "steps")
    checks.positive_int(every, "every")
    check_generator(generator)
    x_test, y_test = test
    model = copy.deepcopy(init)
    optimizer = make_optimizer(model, kind, lr=lr, rho=rho)
    last: list[RandomizationTest] = []                  # one test per evaluation, read by the three columns

    def measure(net: nn.Module) -> float:
        # on a copy: the optimizer's own gradient bookkeeping (SAM's) must not see restored .grad tensors
        last[:] = [randomization_test(copy.deepcopy(net), x_test, y_test, simple=simple, repeats=repeats,
                                      generator=generator)]
        return last[0].standard

    metrics = {"test accuracy": measure,                  # evaluated first (fit keeps the order of metrics)
               "simple randomized": lambda m: last[0].simple_randomized,
               "complex randomized": lambda m: last[0].complex_randomized}
    history = fit(model, fit_loss(F.cross_entropy), tuple(data), optimizer=optimizer, steps=steps,
                  batch_size=batch_size, metrics=metrics, eval_every=every, seed=seed, progress=progress,
                  desc=desc or f"{kind} rho={rho}")
    return Trained(model, history)


class KMeans(NamedTuple):
    """Cluster ``labels`` (N,), ``centres`` (k, D) and whether the assignment stopped changing."""

    labels: torch.Tensor
    centres: torch.Tensor
    converged: bool


def kmeans(points: torch.Tensor, k: int = 2, *, iters: int = 50, generator: torch.Generator | None = None) -> KMeans:
    """Lloyd's k-means on (N, D) ``points`` from k distinct points drawn with ``generator`` (k-means++-free,
    deterministic given the generator). An empty cluster keeps its previous centre."""
    checks.tensor(points, "points", floating=True, ndim=2, nonempty=True)
    checks.integer(k, "k", low=1, high=len(points))
    checks.positive_int(iters, "iters")
    check_generator(generator)
    pts = points.detach().double()
    centres = pts[randperm(len(pts), generator=generator, device=pts.device)[:k]].clone()
    labels = torch.cdist(pts, centres).argmin(dim=1)
    for _ in range(iters):
        for j in range(k):
            members = pts[labels == j]
            if len(members):
                centres[j] = members.mean(dim=0)
        new = torch.cdist(pts, centres).argmin(dim=1)
        if torch.equal(new, labels):
            return KMeans(labels, centres.to(points.dtype), True)
        labels = new
    return KMeans(labels, centres.to(points.dtype), False)


@dataclass(frozen=True)
class UsefulSplit:
    """USEFUL's split of a training set: ``slow`` marks the examples to up-sample (in each class, the output
    cluster of higher mean loss), ``losses`` are the per-example losses it was judged on."""

    slow: torch.Tensor
    losses: torch.Tensor

    @property
    def share(self) -> float:
        """Share of the examples marked slow."""
        return float(self.slow.double().mean())


def useful_split(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, iters: int = 50,
                 generator: torch.Generator | None = None) -> UsefulSplit:
    """Nguyen et al. (2024), Sec. 5: within each class, k-means (k = 2) on the network's outputs (logits) after
    a short training run; the cluster with the higher average cross-entropy holds the examples whose features
    were not learned early. The model is evaluated in eval mode and left as found."""
    check_module(model)
    checks.tensor(x, "x", floating=True, nonempty=True)
    checks.tensor(y, "y", ndim=1)
    if y.is_floating_point() or len(y) != len(x):
        raise ValueError(f"y must hold one integer class per row of x, got dtype {y.dtype} and {len(y)} rows "
                         f"for {len(x)}")
    with preserve_model(model), train_mode(model, False), torch.no_grad():
        out = model(x)
    losses = F.cross_entropy(out, y, reduction="none")
    slow = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().squeeze(1)
        if len(idx) < 2:
            continue
        labels = kmeans(out[idx], 2, iters=iters, generator=generator).labels
        means = [losses[idx][labels == j].mean() if bool((labels == j).any()) else losses.new_tensor(-1.0)
                 for j in (0, 1)]
        slow[idx[labels == int(torch.stack(means).argmax())]] = True
    return UsefulSplit(slow, losses)


def upsample(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, *, factor: int = 2
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` with the examples of ``mask`` repeated ``factor`` times in all (``factor - 1`` extra copies
    appended at the end); ``factor = 1`` gives the data back."""
    checks.tensor(x, "x", nonempty=True)
    if not (isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.shape == (len(x),)):
        raise TypeError(f"mask must be a bool tensor of shape ({len(x)},), got {mask!r:.80}")
    if len(y) != len(x):
        raise ValueError(f"x and y must have the same number of rows, got {len(x)} and {len(y)}")
    checks.positive_int(factor, "factor")
    extra = mask.nonzero().squeeze(1).repeat(factor - 1)
    return torch.cat([x, x[extra]]), torch.cat([y, y[extra]])


class UsefulRun(NamedTuple):
    """A USEFUL run: the short first run, its split, the up-sampled data's size and the final trained run."""

    early: Trained
    split: UsefulSplit
    size: int
    trained: Trained


def train_useful(init: nn.Module, data: tuple[torch.Tensor, torch.Tensor], *, early_steps: int, factor: int = 2,
                 kind: str = "sgd", generator: torch.Generator | None = None, **train_kwargs: Any) -> UsefulRun:
    """USEFUL around :func:`labkit.sam.train_from` (Nguyen et al., 2024, Sec. 5): train a copy of ``init`` for
    ``early_steps`` steps, :func:`useful_split` its training set (``generator`` seeds k-means), :func:`upsample`
    the slow cluster by ``factor``, and train again from ``init`` on the result with the same optimizer.
    ``train_kwargs`` (``lr``, ``steps`` or ``epochs``, ``batch_size``, ``rho``, ``test``, ``seed``...) go to both
    runs except ``steps``/``epochs``/``eval_every``/``snapshots``/``stop_when``, used by the second only."""
    check_module(init, "init")
    checks.positive_int(early_steps, "early_steps")
    x, y = data
    final_only = ("steps", "epochs", "eval_every", "snapshots", "stop_when", "stop_loss", "test", "desc")
    early_kwargs = {k: v for k, v in train_kwargs.items() if k not in final_only}
    early = train_from(copy.deepcopy(init), (x, y), kind=kind, steps=early_steps, train_loss=False,
                       desc=f"USEFUL early {kind}", **{k: v for k, v in early_kwargs.items() if k != "train_loss"})
    split = useful_split(early.model, x, y, generator=generator)
    xu, yu = upsample(x, y, split.slow, factor=factor)
    trained = train_from(init, (xu, yu), kind=kind, **train_kwargs)
    return UsefulRun(early, split, len(xu), trained)


__all__ = ["KMeans", "LMSData", "RandomizationTest", "UsefulRun", "UsefulSplit", "feature_learning_curve", "kmeans",
           "lms_data", "randomization_test", "randomize_coordinates", "slab_centres", "train_useful", "upsample",
           "useful_split"]
