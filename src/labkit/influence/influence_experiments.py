"""The experiments of ``notebooks/influence/01_influence_functions``: Koh & Liang's leave-one-out check on
L2-regularized logistic regression (*Understanding Black-box Predictions via Influence Functions*, arXiv
1703.04730, Fig. 2) and Grosse et al.'s comparison of inverse-curvature estimators (*Studying Large Language Model
Generalization with Influence Functions*, arXiv 2308.03296, Sec. 2 and 5.1): EK-FAC, LiSSA and TracIn against the
exact damped Gauss–Newton influence on a small MLP.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from labkit import checks
from labkit.influence.ekfac import fit_ekfac
from labkit.influence.influence import exact_ggn, inverse_hvp
from labkit.influence.per_example import per_example_grads
from labkit.influence.retrain import loo_retrain, train_logistic_regression
from labkit.influence.tracin import tracin
from labkit.training import fit

Data = tuple[torch.Tensor, torch.Tensor]


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two flat tensors."""
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-300))


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two flat tensors (ties broken by position)."""
    def ranks(t: torch.Tensor) -> torch.Tensor:
        return torch.argsort(torch.argsort(t.reshape(-1))).double()
    return pearson(ranks(a), ranks(b))


class LOOResult(NamedTuple):
    """Koh & Liang's check: for the ``indices`` of the training examples with the largest predicted effect,
    the predicted change of the query loss ``scores/n`` and the measured one after retraining without each."""

    model: nn.Linear
    scores: torch.Tensor  # (n,) influence of every training example on the query
    indices: torch.Tensor
    predicted: torch.Tensor
    actual: torch.Tensor
    pearson: float


def loo_experiment(train: Data, query: Data, *, num_classes: int, weight_decay: float, top_k: int) -> LOOResult:
    """Fit L2-regularized logistic regression (Newton, float64), score every training example's influence on the
    one query with the exact Hessian (damping = the weight decay), retrain without each of the ``top_k`` examples
    of largest ``|scores|/n`` (warm-started Newton, same objective normalization) and compare."""
    x, y = train
    top_k = checks.positive_int(top_k, "top_k")
    n = len(x)
    x = x.double()
    xq = query[0].double()
    model = train_logistic_regression((x, y), num_classes=num_classes, weight_decay=weight_decay)
    from labkit.influence.influence import influence_scores

    scores = influence_scores(model, F.cross_entropy, (x, y), (xq, query[1]), method="exact",
                              damping=weight_decay)[0]
    indices = torch.argsort((scores / n).abs(), descending=True)[: min(top_k, n)]

    def retrain(data: Data) -> nn.Module:
        return train_logistic_regression(data, num_classes=num_classes, weight_decay=weight_decay, normalizer=n,
                                         init=model)

    actual = loo_retrain(retrain, (x, y), (xq, query[1]), indices)[0]
    predicted = scores[indices] / n
    return LOOResult(model, scores, indices, predicted, actual, pearson(predicted, actual))


def train_mlp(train: Data, *, hidden: int, steps: int, lr: float, generator: torch.Generator) -> nn.Module:
    """A ``64 → hidden → 10`` tanh MLP trained full-batch with Adam on cross-entropy (initialization from
    ``generator``)."""
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    try:
        model = nn.Sequential(nn.Linear(train[0].shape[1], hidden), nn.Tanh(),
                              nn.Linear(hidden, int(train[1].max()) + 1))
    finally:
        torch.random.set_rng_state(torch_state)
    fit(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), train,
        optimizer=torch.optim.Adam(model.parameters(), lr=lr), steps=steps, progress=False, desc="MLP")
    return model


class EstimatorComparison(NamedTuple):
    """Influence scores ``(q, n)`` of each estimator, the seconds each took, its mean per-query Spearman
    correlation with the exact damped Gauss–Newton influence, the damping used and the dense GGN (float64)."""

    scores: dict[str, torch.Tensor]
    seconds: dict[str, float]
    spearman: dict[str, float]
    damping: float
    ggn: torch.Tensor


def compare_estimators(
    model: nn.Module,
    train: Data,
    query: Data,
    *,
    damping_fraction: float = 0.1,
    lissa_depth: int = 20,
    lissa_batch: int = 32,
    generator: torch.Generator | None = None,
) -> EstimatorComparison:
    """Exact damped GGN influence (dense float64 solve), EK-FAC, LiSSA (minibatch GGN products, ``lissa_depth``
    steps per query) and TracIn at the final checkpoint (plain gradient dot products), timed (one thread).
    The damping is ``damping_fraction`` × the mean eigenvalue of the GGN (trace / P), as Grosse et al. (Sec. 2.2)."""
    checks.number(damping_fraction, "damping_fraction", low=0.0, low_open=True)
    loss = F.cross_entropy
    g_train = per_example_grads(model, loss, train, name="train")
    g_query = per_example_grads(model, loss, query, name="query")
    scores, seconds = {}, {}

    start = time.perf_counter()
    ggn = exact_ggn(model, loss, train)
    damping = damping_fraction * float(torch.trace(ggn)) / len(ggn)
    x = torch.linalg.solve(ggn + damping * torch.eye(len(ggn), dtype=ggn.dtype), g_query.double().T)
    scores["exact"] = (g_train.double() @ x).T
    seconds["exact"] = time.perf_counter() - start

    start = time.perf_counter()
    factors = fit_ekfac(model, loss, train)
    scores["EK-FAC"] = g_query.double() @ factors.inverse_hvp(g_train.double(), damping=damping).T
    seconds["EK-FAC"] = time.perf_counter() - start

    start = time.perf_counter()
    solve = inverse_hvp(model, loss, train, g_query, method="lissa", curvature="ggn", damping=damping,
                        depth=lissa_depth, batch_size=lissa_batch, generator=generator)
    scores["LiSSA"] = (g_train.double() @ solve.x.double()).T
    seconds["LiSSA"] = time.perf_counter() - start

    start = time.perf_counter()
    scores["TracIn"] = tracin([model], loss, train, query, lrs=1.0).double()
    seconds["TracIn"] = time.perf_counter() - start

    rho = {k: sum(spearman(v[j], scores["exact"][j]) for j in range(len(v))) / len(v)
           for k, v in scores.items() if k != "exact"}
    return EstimatorComparison(scores, seconds, rho, damping, ggn)


__all__ = ["EstimatorComparison", "LOOResult", "compare_estimators", "loo_experiment", "pearson", "spearman",
           "train_mlp"]
