"""Evaluation of attributions: infidelity and max-sensitivity (Yeh et al., 2019), deletion/insertion
curves (Petsiuk et al., 2018) and a small remove-and-retrain helper (Hooker et al., 2019)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from labkit.attributions._common import (
    check_generator,
    check_input,
    check_logits,
    check_nonneg_float,
    check_positive_int,
    check_target,
    chunks,
    resolve_chunk,
    target_score,
)
from labkit.autograd import rand, randn, train_mode

Model = Callable[[torch.Tensor], torch.Tensor]


def _check_attr(attributions: object, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(attributions, torch.Tensor):
        raise TypeError(f"attributions must be a tensor, got {type(attributions).__name__}")
    if attributions.shape != x.shape:
        raise ValueError(
            f"attributions must be shaped like x {tuple(x.shape)}, got {tuple(attributions.shape)}"
        )
    if not torch.isfinite(attributions).all():
        raise ValueError("attributions contain NaN or infinite values")
    return attributions.detach().to(x.dtype)


def infidelity(
    model: Model,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: int | torch.Tensor,
    *,
    samples: int = 100,
    noise: float = 0.1,
    normalize: bool = False,
    generator: torch.Generator | None = None,
    chunk_size: int | str = "auto",
) -> torch.Tensor:
    """Infidelity (Yeh et al., 2019, https://arxiv.org/abs/1901.09392), per example (N,):
    ``E_I[(I . phi - (f(x) - f(x - I)))^2]`` with Gaussian perturbations ``I ~ N(0, noise^2)``
    (absolute std). Perturbation ``s`` is one ``randn(x.shape)`` from ``generator``, drawn in order.
    ``normalize=True`` first rescales ``phi`` by the optimal ``beta`` (the paper's comparisons; Captum's
    ``normalize``)."""
    x = check_input(x)
    attr = _check_attr(attributions, x)
    t = check_target(target, x.shape[0], x.device)
    samples = check_positive_int(samples, "samples")
    noise = check_nonneg_float(noise, "noise")
    gen = check_generator(generator, x.device)
    n = x.shape[0]
    rows = resolve_chunk(chunk_size, x[0].numel())
    x = x.detach()
    a_dot = torch.zeros(samples, n, dtype=x.dtype, device=x.device)  # I . phi
    diffs = torch.zeros_like(a_dot)  # f(x) - f(x - I)
    with torch.no_grad(), train_mode(model, False):
        fx = target_score(model, x, t)
        for p0, p1, e0, e1 in chunks(samples, n, rows):
            if e0 == 0:
                pert = torch.stack(
                    [
                        noise * randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
                        for _ in range(p0, p1)
                    ]
                )
            k = p1 - p0
            pe = pert[:, e0:e1]
            a_dot[p0:p1, e0:e1] = (pe * attr[e0:e1].unsqueeze(0)).reshape(k, e1 - e0, -1).sum(-1)
            fxi = target_score(
                model, (x[e0:e1].unsqueeze(0) - pe).reshape(-1, *x.shape[1:]), t[e0:e1].repeat(k)
            )
            diffs[p0:p1, e0:e1] = fx[e0:e1].unsqueeze(0) - fxi.reshape(k, e1 - e0)
    if normalize:
        beta = (a_dot * diffs).sum(0) / (a_dot.square().sum(0)).clamp_min(torch.finfo(x.dtype).tiny)
        a_dot = beta * a_dot
    return (a_dot - diffs).square().mean(0)


def max_sensitivity(
    explain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    target: int | torch.Tensor,
    *,
    radius: float = 0.02,
    samples: int = 10,
    normalize: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Max-sensitivity (Yeh et al., 2019), per example (N,): a Monte-Carlo estimate of
    ``max_{||d||_inf <= radius} ||explain(x + d) - explain(x)||_2`` with ``d ~ U[-radius, radius]``.
    ``explain(x, target)`` returns attributions shaped like ``x``; perturbation ``s`` is one
    ``rand(x.shape)`` from ``generator``. ``normalize=True`` divides by ``||explain(x)||`` (Captum's
    ``sensitivity_max`` does this always)."""
    if not callable(explain):
        raise TypeError(f"explain must be a callable explain(x, target), got {type(explain).__name__}")
    x = check_input(x)
    t = check_target(target, x.shape[0], x.device)
    samples = check_positive_int(samples, "samples")
    radius = check_nonneg_float(radius, "radius")
    gen = check_generator(generator, x.device)
    x = x.detach()
    base = explain(x, t).detach()
    if base.shape != x.shape:
        raise ValueError(
            f"explain(x, target) must return a tensor shaped like x {tuple(x.shape)}, got {tuple(base.shape)}"
        )
    n = x.shape[0]
    best = torch.zeros(n, dtype=x.dtype, device=x.device)
    for _ in range(samples):
        d = (2 * rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) - 1) * radius
        change = (explain(x + d, t).detach() - base).reshape(n, -1).norm(dim=1)
        best = torch.maximum(best, change)
    if normalize:
        scale = base.reshape(n, -1).norm(dim=1)
        best = best / torch.where(scale == 0, torch.ones_like(scale), scale)
    return best


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve: ``fractions`` (S,), ``scores`` (N, S) and the trapezoid ``auc`` (N,)."""

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor


def feature_order(attributions: torch.Tensor) -> torch.Tensor:
    """Indices of features (spatial positions for (N, C, H, W), summed over channels) from most to least
    attributed, shape (N, F)."""
    a = attributions.sum(1) if attributions.ndim == 4 else attributions
    return a.reshape(a.shape[0], -1).argsort(dim=1, descending=True, stable=True)


def _feature_mask(order: torch.Tensor, k: int, x: torch.Tensor) -> torch.Tensor:
    """Boolean mask shaped like x, True at the first k features of ``order``."""
    n, f = order.shape
    m = torch.zeros(n, f, dtype=torch.bool, device=x.device)
    m.scatter_(1, order[:, :k], True)
    if x.ndim == 4:
        return m.reshape(n, 1, *x.shape[2:]).expand_as(x)
    return m.reshape(x.shape)


def _curve(
    model: Model,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: int | torch.Tensor,
    steps: int,
    baseline: float | torch.Tensor,
    score: str,
    insert: bool,
) -> Curve:
    x = check_input(x)
    attr = _check_attr(attributions, x)
    t = check_target(target, x.shape[0], x.device)
    steps = check_positive_int(steps, "steps")
    if score not in ("prob", "logit"):
        raise ValueError(f"score must be 'prob' or 'logit', got {score!r}")
    x = x.detach()
    if isinstance(baseline, torch.Tensor):
        if baseline.shape not in (x.shape, x.shape[1:], ()):
            raise ValueError(f"baseline must be a number or shaped like x, got {tuple(baseline.shape)}")
        fill = baseline.detach().to(x.device, x.dtype).expand_as(x)
    else:
        fill = torch.full_like(x, float(baseline))
    order = feature_order(attr)
    n_feat = order.shape[1]
    ks = torch.linspace(0, n_feat, steps + 1).round().long().tolist()
    scores = []
    with torch.no_grad(), train_mode(model, False):
        for k in ks:
            m = _feature_mask(order, k, x)
            xi = torch.where(m, x, fill) if insert else torch.where(m, fill, x)
            out = check_logits(model(xi), x.shape[0], t)
            s = out.softmax(1) if score == "prob" else out
            scores.append(s.gather(1, t[:, None]).squeeze(1))
    fractions = torch.tensor(ks, dtype=x.dtype, device=x.device) / n_feat
    sc = torch.stack(scores, 1)
    return Curve(fractions, sc, torch.trapezoid(sc, fractions, dim=1))


def deletion_curve(
    model: Model,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: int | torch.Tensor,
    *,
    steps: int = 16,
    baseline: float | torch.Tensor = 0.0,
    score: str = "prob",
) -> Curve:
    """Deletion curve (Petsiuk et al., 2018, *RISE*, https://arxiv.org/abs/1806.07421): the target's
    probability (or logit) as the most-attributed features are replaced by ``baseline`` first; lower AUC
    is better."""
    return _curve(model, x, attributions, target, steps, baseline, score, insert=False)


def insertion_curve(
    model: Model,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: int | torch.Tensor,
    *,
    steps: int = 16,
    baseline: float | torch.Tensor = 0.0,
    score: str = "prob",
) -> Curve:
    """Insertion curve (Petsiuk et al., 2018): start from ``baseline`` and insert the most-attributed
    features of ``x`` first; higher AUC is better."""
    return _curve(model, x, attributions, target, steps, baseline, score, insert=True)


def remove_features(
    x: torch.Tensor,
    attributions: torch.Tensor,
    fraction: float,
    *,
    order: str = "top",
    fill: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Replace a ``fraction`` of each example's features by ``fill``: the most attributed (``"top"``),
    the least attributed (``"bottom"``) or random ones (``"random"``, drawn from ``generator``)."""
    x = check_input(x)
    attr = _check_attr(attributions, x)
    if not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    if order not in ("top", "bottom", "random"):
        raise ValueError(f"order must be 'top', 'bottom' or 'random', got {order!r}")
    idx = feature_order(attr)
    if order == "bottom":
        idx = idx.flip(1)
    elif order == "random":
        gen = check_generator(generator, x.device)
        idx = rand(idx.shape, generator=gen, device=x.device).argsort(1)
    k = round(fraction * idx.shape[1])
    return torch.where(_feature_mask(idx, k, x), torch.full_like(x, fill), x.detach())


@dataclass(frozen=True)
class RoarResult:
    """Test accuracy of a freshly trained model after removing each fraction of features."""

    fractions: list[float]
    accuracy: list[float]
    order: str


def roar(
    train: Callable[[torch.Tensor, torch.Tensor], Model],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    train_attr: torch.Tensor,
    test_attr: torch.Tensor,
    *,
    fractions: Sequence[float] = (0.1, 0.3, 0.5),
    order: str = "top",
    fill: float = 0.0,
    generator: torch.Generator | None = None,
) -> RoarResult:
    """RemOve And Retrain (Hooker et al., 2019, https://arxiv.org/abs/1806.10758), small-data form.

    For each fraction, remove that fraction of features (``order`` top/bottom/random by the given
    attributions) from train and test images, call ``train(x, y)`` to fit a fresh model and record its
    test accuracy. DiffROAR (Shah et al., 2021) is ``bottom`` minus ``top`` accuracy.

    Compute the attributions for the model's *predicted* class: when they depend on the true label, the
    pattern of removed pixels can itself encode the label, and the retrained model then reads it off.
    """
    if not callable(train):
        raise TypeError("train must be a callable train(x, y) -> model")
    accs = []
    for f in fractions:
        tr = remove_features(train_x, train_attr, f, order=order, fill=fill, generator=generator)
        te = remove_features(test_x, test_attr, f, order=order, fill=fill, generator=generator)
        model = train(tr, train_y)
        with torch.no_grad(), train_mode(model, False):
            accs.append(float((model(te).argmax(1) == test_y).float().mean()))
    return RoarResult([float(f) for f in fractions], accs, order)


def gini_index(maps: torch.Tensor) -> torch.Tensor:
    """Concentration of each map, the Gini index of its absolute values (N,): 0 when the mass is spread
    evenly, ``1 - 1/M`` when one of the ``M`` values holds it all (how "sharp" a saliency map is, the
    visual claim of SmoothGrad, Smilkov et al., 2017, made a number)."""
    if not isinstance(maps, torch.Tensor) or maps.ndim < 2 or not maps.is_floating_point():
        raise TypeError(f"maps must be a floating tensor (N, ...), got {maps!r:.80}")
    v = maps.detach().abs().flatten(1).sort(dim=1).values
    m = v.shape[1]
    k = torch.arange(1, m + 1, device=v.device, dtype=v.dtype)
    return ((2 * k - m - 1) * v).sum(1) / (m * v.sum(1))


def instability(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - cos(a_i, b_i)`` per example (N,) between two batches of maps, e.g. the maps of ``x`` and of a
    slightly jittered ``x`` (0 when the map does not change direction)."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError(f"a and b must be tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"a and b must be batches (N, ...) of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return 1 - torch.nn.functional.cosine_similarity(a.detach().flatten(1), b.detach().flatten(1), dim=1)
