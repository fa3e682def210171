"""XOR cluster data with flipped labels and the two-layer ReLU network of the theory
(Xu, Wang, Frei, Vardi, Hu, ICLR 2024, arXiv:2310.02541).

x = mu + xi with mu drawn uniformly from {+mu1, -mu1, +mu2, -mu2} (mu1 orthogonal to mu2, both of
norm ``signal``) and xi ~ N(0, I_d). The clean label is +1 for the +-mu1 clusters and -1 for the
+-mu2 clusters (an XOR: no linear classifier beats chance); a ``noise_rate`` share of the training
labels is flipped. Test labels are clean.

``balanced=True`` (the default) gives the four training clusters equal counts (in random order) and the
same share of flipped labels, instead of i.i.d. draws. At toy dimension the sqrt(n) imbalance of i.i.d.
draws (in cluster sizes or in flips per cluster) adds a linear term ~ imbalance * |mu|^2 to the first GD
step that can beat the memorisation term ~ d; the theorem removes it by taking d large, which at laptop
scale is cheaper to reach this way. ``balanced=False`` gives the paper's i.i.d. sampling.

The experiment of the notebook: :func:`logistic_loss` (and the ``fit`` loss :data:`xor_loss`),
:func:`train_xor` (full-batch GD through :func:`labkit.training.fit`, recording the accuracies on all,
flipped and test labels and the weights' share in the cluster plane) and :func:`plane_decision_maps`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from labkit import checks
from labkit.autograd import randn
from labkit.data.core import Split
from labkit.runtime import check_seed, pick_device
from labkit.training import History, accuracy, fit, fit_loss


@dataclass(repr=False)
class XorClusters(Split):
    """A :class:`Split` with labels in {-1, +1} plus what the notebook needs to look inside."""

    flipped: torch.Tensor  # bool (n_train,): the training labels that were flipped
    train_cluster: torch.Tensor  # long (n_train,): 0..3 for +mu1, -mu1, +mu2, -mu2
    test_cluster: torch.Tensor
    mu1: torch.Tensor
    mu2: torch.Tensor

    @property
    def num_classes(self) -> int:
        return 2

    def plane_basis(self) -> torch.Tensor:
        """Orthonormal basis (d, 2) of the plane spanned by mu1 and mu2 (mu1 is orthogonal to mu2)."""
        return torch.stack([self.mu1 / self.mu1.norm(), self.mu2 / self.mu2.norm()], dim=1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Coordinates (N, 2) of points in the (mu1, mu2) plane."""
        return x @ self.plane_basis()


def xor_clusters(
    n_train: int = 200,
    n_test: int = 2000,
    *,
    dim: int = 2000,
    signal: float = 12.0,
    noise_rate: float = 0.1,
    balanced: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> XorClusters:
    """Generate XOR cluster data; the flipped share of the training set is ``noise_rate`` (rounded per cluster
    when balanced)."""
    checks.integer(n_train, "n_train", low=4)
    checks.integer(n_test, "n_test", low=4)
    checks.integer(dim, "dim", low=2)
    checks.number(signal, "signal", low=0.0, low_open=True)
    checks.number(noise_rate, "noise_rate", low=0.0, high=0.5, high_open=True)
    if not isinstance(balanced, bool):
        raise TypeError(f"balanced must be a bool, got {type(balanced).__name__}")
    check_seed(seed)
    device = pick_device(device)
    # decorrelate the data stream from model initialisations seeded with the same number
    gen = torch.Generator().manual_seed((seed * 2_654_435_761 + 97) % 2**63)
    basis, _ = torch.linalg.qr(torch.randn(dim, 2, generator=gen))
    mu1, mu2 = signal * basis[:, 0], signal * basis[:, 1]
    centres = torch.stack([mu1, -mu1, mu2, -mu2])
    clean_label = torch.tensor([1.0, 1.0, -1.0, -1.0])

    def draw(n: int, balanced: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if balanced:
            cluster = torch.arange(n)[torch.randperm(n, generator=gen)] % 4
        else:
            cluster = torch.randint(0, 4, (n,), generator=gen)
        x = centres[cluster] + torch.randn(n, dim, generator=gen)
        return x, clean_label[cluster], cluster

    train_x, train_y, train_cluster = draw(n_train, balanced)
    test_x, test_y, test_cluster = draw(n_test, False)
    flipped = torch.zeros(n_train, dtype=torch.bool)
    if balanced:  # the same share of flips in every cluster
        for c in range(4):
            members = (train_cluster == c).nonzero().squeeze(1)
            chosen = members[torch.randperm(len(members), generator=gen)[: round(noise_rate * len(members))]]
            flipped[chosen] = True
    else:
        flipped[torch.randperm(n_train, generator=gen)[: round(noise_rate * n_train)]] = True
    train_y = torch.where(flipped, -train_y, train_y)
    if not bool(torch.isfinite(train_x).all() and torch.isfinite(test_x).all()):
        raise ValueError(f"signal={signal} overflows float32 data: use a signal below about 1e18")
    data = XorClusters(train_x, train_y, test_x, test_y, flipped, train_cluster, test_cluster, mu1, mu2)
    return data.to(device)


class TwoLayerReLU(nn.Module):
    """f(x) = sum_j a_j relu(<w_j, x>) with a fixed second layer a_j = +-1/sqrt(m) (half each).

    The network of Xu et al. (2023) / Frei et al.: only W is trained; ``init_scale`` is the std of W's
    entries (small initialisation). Output shape (N,) for a binary label in {-1, +1}.
    """

    def __init__(self, in_features: int, width: int = 512, *, init_scale: float = 1e-4,
                 generator: torch.Generator | None = None):
        super().__init__()
        checks.positive_int(in_features, "in_features")
        checks.integer(width, "width")
        if width < 2 or width % 2:
            raise ValueError(f"width must be an even number >= 2, got {width}")
        checks.number(init_scale, "init_scale", low=0.0, low_open=True)
        # the generator rule: drawn on the generator's device (CPU by default), the module starts on the CPU
        weight = randn((width, in_features), generator=generator, device="cpu") * init_scale
        if not bool(torch.isfinite(weight).all()):
            raise ValueError(f"init_scale={init_scale:g} is too large: the initial weights overflow float32")
        self.weight = nn.Parameter(weight)
        signs = torch.cat([torch.ones(width // 2), -torch.ones(width // 2)])
        self.register_buffer("a", signs / math.sqrt(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # shape, dtype and device checks only (no NaN scan per forward: a NaN input gives a NaN score)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
        if x.device.type == "meta":
            raise ValueError("x is on the 'meta' device (shapes only, no values): move it to 'cpu' or 'cuda'")
        if x.ndim < 1 or x.shape[-1] != self.weight.shape[1]:
            raise ValueError(f"x must have {self.weight.shape[1]} features in its last dimension, "
                             f"got shape {tuple(x.shape)}")
        if x.dtype != self.weight.dtype:
            checks.same_dtype_as_model(x, self, "x")
        return torch.relu(x @ self.weight.T) @ self.a

    @torch.no_grad()
    def restricted(self, basis: torch.Tensor) -> TwoLayerReLU:
        """The same network on the subspace spanned by the orthonormal columns of ``basis`` (d, k):
        ``g(z) = f(basis @ z)``, computed with k-dimensional weights (cheap to evaluate on a grid)."""
        checks.tensor(basis, "basis", floating=True)
        if basis.ndim != 2 or basis.shape[0] != self.weight.shape[1] or basis.shape[1] < 1:
            raise ValueError(f"basis must have shape ({self.weight.shape[1]}, k), got {tuple(basis.shape)}")
        small = TwoLayerReLU(basis.shape[1], self.weight.shape[0])
        small.weight.copy_(self.weight @ basis.to(self.weight))
        small.a.copy_(self.a)
        return small.to(self.weight.device)


def logistic_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean logistic loss log(1 + exp(-y f(x))) of scores ``f(x)`` (N,) for labels ``y`` in {-1, +1}
    (the loss of Xu et al., 2023), computed as softplus(-y f(x))."""
    if not isinstance(scores, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("scores and y must be tensors")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating-point tensor, got {scores.dtype}")
    if scores.shape != y.shape:
        raise ValueError(f"scores and y must have the same shape, got {tuple(scores.shape)} and {tuple(y.shape)}")
    if scores.device.type == "meta" or y.device.type == "meta":
        raise ValueError("scores and y must hold values: one of them is on the 'meta' device")
    if scores.numel() == 0:
        raise ValueError("scores is empty: the mean loss of no example is undefined")
    return F.softplus(-y * scores).mean()


xor_loss = fit_loss(logistic_loss)
xor_loss.__doc__ = "The ``fit`` loss ``logistic_loss(model(x), y)`` of a batch ``(x, y)``."

#: the history columns of :func:`train_xor`
TRAIN_ACC, FLIPPED_ACC, TEST_ACC, PLANE_SHARE = (
    "train (labels as given)", "flipped labels", "test (clean)", "weight share in (μ1, μ2) plane")


def log_spaced_steps(steps: int) -> list[int]:
    """0, then 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, ... up to ``steps`` (included): the evaluation
    steps of a run whose interesting moments are step 1 and the late phase."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    marks, scale = {0, steps}, 1
    while scale <= steps:
        marks |= {round(m * scale) for m in (1, 1.5, 2, 3, 5, 7)}
        scale *= 10
    return sorted(s for s in marks if s <= steps)


def train_xor(model: TwoLayerReLU, data: XorClusters, *, lr: float = 1.0, steps: int = 150,
              eval_steps: list[int] | None = None, progress: bool | None = None,
              desc: str = "GD on XOR clusters") -> History:
    """Full-batch gradient descent (``torch.optim.SGD``, ``lr``) on the logistic loss for ``steps`` steps,
    the training of Xu et al. (2023), through :func:`labkit.training.fit`.

    At ``eval_steps`` (default :func:`log_spaced_steps`) the history records the accuracy on the training
    labels as given (:data:`TRAIN_ACC`), on the flipped ones alone (:data:`FLIPPED_ACC`), on the clean test
    set (:data:`TEST_ACC`) and ||W P|| / ||W||, the share of the first layer in the plane of the cluster
    means (:data:`PLANE_SHARE`); the model's state at those steps is in ``history.snapshots``.
    """
    if not isinstance(model, TwoLayerReLU):
        raise TypeError(f"model must be a TwoLayerReLU, got {type(model).__name__}")
    if not isinstance(data, XorClusters):
        raise TypeError(f"data must be XorClusters (labkit.grokking.xor_clusters), got {type(data).__name__}")
    checks.number(lr, "lr", low=0.0, low_open=True, high=1e15)  # larger: float32 overflow inside torch's SGD
    checks.positive_int(steps, "steps")
    if eval_steps is not None:
        if isinstance(eval_steps, (str, bytes)) or not isinstance(eval_steps, (list, tuple, range)):
            raise TypeError(f"eval_steps must be a list of step numbers, got {type(eval_steps).__name__}")
        eval_steps = [checks.integer(s, "eval_steps", low=0) for s in eval_steps]
    for part in ("train_x", "test_x"):
        x = checks.tensor(getattr(data, part), f"data.{part}", floating=True, ndim=2, nonempty=True)
        checks.same_dtype_as_model(x, model, f"data.{part}")
        if x.shape[1] != model.weight.shape[1]:
            raise ValueError(f"data.{part} has {x.shape[1]} features but the model reads {model.weight.shape[1]}")
    for part in ("train_y", "test_y"):
        checks.tensor(getattr(data, part), f"data.{part}", floating=True, ndim=1)
    eval_steps = log_spaced_steps(steps) if eval_steps is None else [s for s in eval_steps if s <= steps]
    x, y, flipped, basis = data.train_x, data.train_y, data.flipped, data.plane_basis()
    metrics = {
        TRAIN_ACC: lambda m: accuracy(m, x, y),
        FLIPPED_ACC: lambda m: accuracy(m, x[flipped], y[flipped]),
        TEST_ACC: lambda m: accuracy(m, data.test_x, data.test_y),
        PLANE_SHARE: lambda m: ((m.weight @ basis).norm() / m.weight.norm()).item(),
    }
    return fit(model, xor_loss, (x, y), optimizer=torch.optim.SGD(model.parameters(), lr=lr), steps=steps,
               eval_every=eval_steps, snapshots=eval_steps, metrics=metrics, progress=progress, desc=desc)


@torch.no_grad()
def plane_decision_maps(snapshots: Mapping[int, Mapping[str, torch.Tensor]], basis: torch.Tensor,
                        grid: torch.Tensor) -> dict[int, torch.Tensor]:
    """For each saved state of a :class:`TwoLayerReLU` (``history.snapshots``), its decision function on the
    grid ``grid x grid`` of the plane spanned by the orthonormal columns of ``basis`` (d, 2), as a
    (len(grid), len(grid)) tensor (rows: second coordinate): ``restricted(basis)`` evaluated on the grid."""
    checks.tensor(basis, "basis", floating=True)
    if basis.ndim != 2 or basis.shape[1] != 2:
        raise ValueError(f"basis must have shape (d, 2), got {tuple(basis.shape)}")
    checks.tensor(grid, "grid", floating=True, nonempty=True)
    if grid.ndim != 1:
        raise ValueError(f"grid must be a 1-D tensor of coordinates, got shape {tuple(grid.shape)}")
    if grid.dtype != basis.dtype or grid.device != basis.device:
        raise TypeError(f"grid ({grid.dtype}, {grid.device}) must have the dtype and device of basis "
                        f"({basis.dtype}, {basis.device})")
    if not isinstance(snapshots, Mapping):
        raise TypeError("snapshots must be a mapping step -> state (history.snapshots), "
                        f"got {type(snapshots).__name__}")
    for step, state in snapshots.items():
        if not isinstance(state, Mapping) or "weight" not in state or "a" not in state:
            raise ValueError(f"snapshots[{step!r}] must be a TwoLayerReLU state with 'weight' and 'a'")
        weight = checks.tensor(state["weight"], f"snapshots[{step!r}]['weight']", floating=True, ndim=2)
        a = checks.tensor(state["a"], f"snapshots[{step!r}]['a']", floating=True, ndim=1)
        if weight.shape[1] != basis.shape[0] or a.shape[0] != weight.shape[0]:
            raise ValueError(f"snapshots[{step!r}] has weight {tuple(weight.shape)} and a {tuple(a.shape)}, "
                             f"which do not fit basis of shape {tuple(basis.shape)}")
    uu, vv = torch.meshgrid(grid, grid, indexing="xy")
    points = torch.stack([uu.reshape(-1), vv.reshape(-1)], dim=1)
    maps = {}
    for step, state in snapshots.items():
        weight, a = state["weight"].to(basis), state["a"].to(basis)
        maps[step] = (torch.relu(points @ (weight @ basis).T) @ a).reshape(len(grid), len(grid))
    return maps
