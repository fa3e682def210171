"""Evaluation of attributions: infidelity and max-sensitivity (Yeh et al., 2019), deletion/insertion
curves (Petsiuk et al., 2018) and a small remove-and-retrain helper (Hooker et al., 2019)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from labkit import checks
from labkit.attributions._common import (
    check_callable,
    check_generator,
    check_input,
    check_logits,
    check_model_input,
    check_nonneg_float,
    check_number_or_tensor,
    check_positive_int,
    check_target,
    chunks,
    evaluating,
    finite_result,
    fits_dtype,
    forward,
    resolve_chunk,
    target_score,
)
from labkit.autograd import rand, randn

Model = Callable[[torch.Tensor], torch.Tensor]


def _check_attr(attributions: object, x: torch.Tensor, name: str = "attributions", x_name: str = "x") -> torch.Tensor:
    checks.tensor(attributions, name, finite=False)
    assert isinstance(attributions, torch.Tensor)
    if attributions.shape != x.shape:
        raise ValueError(f"{name} must be shaped like {x_name} {tuple(x.shape)}, got {tuple(attributions.shape)}")
    if attributions.dtype == torch.bool or attributions.is_complex():
        raise TypeError(f"{name} must be a real tensor, got dtype {attributions.dtype}")
    checks.tensor(attributions, name, finite=True)
    return attributions.detach().to(device=x.device, dtype=x.dtype)


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
    x = check_model_input(model, x)
    attr = _check_attr(attributions, x)
    t = check_target(target, x.shape[0], x.device)
    samples = check_positive_int(samples, "samples")
    noise = check_nonneg_float(noise, "noise")
    _check_bool(normalize, "normalize")
    gen = check_generator(generator, x.device)
    n = x.shape[0]
    rows = resolve_chunk(chunk_size, x[0].numel())
    x = x.detach()
    a_dot = torch.zeros(samples, n, dtype=x.dtype, device=x.device)  # I . phi
    diffs = torch.zeros_like(a_dot)  # f(x) - f(x - I)
    with torch.no_grad(), evaluating(model):
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
    return finite_result((a_dot - diffs).square().mean(0), "scores",
                         context=f" at x minus perturbations (noise={noise})")


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


_EXPLAIN = "explain(x, target) returning attributions shaped like x (e.g. labkit.attributions.experiments.explainer)"


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
    x = check_input(x)
    t = check_target(target, x.shape[0], x.device)
    signature_checked = check_callable(explain, "explain", (x, t), {}, _EXPLAIN)
    samples = check_positive_int(samples, "samples")
    radius = fits_dtype(check_nonneg_float(radius, "radius"), "radius", x.dtype)
    if not bool(torch.isfinite(x.detach().abs().amax() + torch.tensor(radius, dtype=x.dtype, device=x.device))):
        raise ValueError(f"radius={radius} moves x beyond the largest {x.dtype} value: lower radius")
    _check_bool(normalize, "normalize")
    gen = check_generator(generator, x.device)
    x = x.detach()
    try:  # without a signature to check, the first call is the probe, before any sample is drawn
        base = explain(x, t)
    except TypeError as err:
        if signature_checked:
            raise
        raise TypeError(f"explain must be a callable {_EXPLAIN}; explain(x, target) raised: {err}") from err
    if not isinstance(base, torch.Tensor) or base.shape != x.shape:
        shape = tuple(base.shape) if isinstance(base, torch.Tensor) else type(base).__name__
        raise ValueError(f"explain(x, target) must return a tensor shaped like x {tuple(x.shape)}, got {shape}")
    base = finite_result(base.detach().to(x.dtype), "attributions", source="explain", context=" at x")
    n = x.shape[0]
    best = torch.zeros(n, dtype=x.dtype, device=x.device)
    for _ in range(samples):
        d = (2 * rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) - 1) * radius
        change = (explain(x + d, t).detach() - base).reshape(n, -1).norm(dim=1)
        best = torch.maximum(best, change)
    if normalize:
        scale = base.reshape(n, -1).norm(dim=1)
        best = best / torch.where(scale == 0, torch.ones_like(scale), scale)
    return finite_result(best, "attributions", source="explain", context=f" at x + d (radius={radius})")


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve: ``fractions`` (S,), ``scores`` (N, S) and the trapezoid ``auc`` (N,)."""

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor


def feature_order(attributions: torch.Tensor) -> torch.Tensor:
    """Indices of features (spatial positions for (N, C, H, W), summed over channels) from most to least
    attributed, shape (N, F)."""
    checks.tensor(attributions, "attributions", finite=True, min_ndim=2, nonempty=True)
    if attributions.dtype == torch.bool or attributions.is_complex():
        raise TypeError(f"attributions must be a real tensor, got dtype {attributions.dtype}")
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
    x = check_model_input(model, x)
    attr = _check_attr(attributions, x)
    t = check_target(target, x.shape[0], x.device)
    steps = check_positive_int(steps, "steps")
    if score not in ("prob", "logit"):
        raise ValueError(f"score must be 'prob' or 'logit', got {score!r}")
    x = x.detach()
    fill = check_number_or_tensor(baseline, x, "baseline")
    order = feature_order(attr)
    n_feat = order.shape[1]
    ks = torch.linspace(0, n_feat, steps + 1).round().long().tolist()
    scores = []
    with torch.no_grad(), evaluating(model):
        for k in ks:
            m = _feature_mask(order, k, x)
            xi = torch.where(m, x, fill) if insert else torch.where(m, fill, x)
            out = check_logits(forward(model, xi), x.shape[0], t)
            s = out.softmax(1) if score == "prob" else out
            scores.append(s.gather(1, t[:, None]).squeeze(1))
    fractions = torch.tensor(ks, dtype=x.dtype, device=x.device) / n_feat
    sc = finite_result(torch.stack(scores, 1), "scores", context=" at x with features set to baseline")
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
    fraction = checks.number(fraction, "fraction", low=0.0, high=1.0)
    fill_x = check_number_or_tensor(checks.number(fill, "fill"), x, "fill")
    if order not in ORDERS:
        raise ValueError(f"order must be 'top', 'bottom' or 'random', got {order!r}")
    gen = check_generator(generator, x.device)
    idx = feature_order(attr)
    if order == "bottom":
        idx = idx.flip(1)
    elif order == "random":
        idx = rand(idx.shape, generator=gen, device=x.device).argsort(1)
    k = round(fraction * idx.shape[1])
    return torch.where(_feature_mask(idx, k, x), fill_x, x.detach())


ORDERS = ("top", "bottom", "random")


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
    train_x, test_x = check_input(train_x, "train_x"), check_input(test_x, "test_x")
    _check_labels(train_y, train_x, "train_y")
    _check_labels(test_y, test_x, "test_y")
    _check_attr(train_attr, train_x, "train_attr", "train_x")
    _check_attr(test_attr, test_x, "test_attr", "test_x")
    check_callable(train, "train", (train_x, train_y), {}, "train(x, y) returning a fitted model")
    if isinstance(fractions, (str, torch.Tensor)) or not isinstance(fractions, Sequence) or not fractions:
        raise ValueError(f"fractions must be a non-empty sequence of numbers in [0, 1], got {fractions!r}")
    fractions = [checks.number(f, f"fractions[{i}]", low=0.0, high=1.0) for i, f in enumerate(fractions)]
    checks.number(fill, "fill")
    if order not in ORDERS:
        raise ValueError(f"order must be 'top', 'bottom' or 'random', got {order!r}")
    accs = []
    for f in fractions:
        tr = remove_features(train_x, train_attr, f, order=order, fill=fill, generator=generator)
        te = remove_features(test_x, test_attr, f, order=order, fill=fill, generator=generator)
        model = train(tr, train_y)
        if not callable(model):
            raise TypeError(f"train(x, y) must return a model (a callable), got {type(model).__name__}")
        with torch.no_grad(), evaluating(model):
            accs.append(float((forward(model, te, "test_x").argmax(1) == test_y.to(te.device)).float().mean()))
    return RoarResult(fractions, accs, order)


def _check_labels(y: object, x: torch.Tensor, name: str) -> torch.Tensor:
    checks.tensor(y, name, finite=False, ndim=1)
    assert isinstance(y, torch.Tensor)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of class labels, got dtype {y.dtype}")
    if len(y) != len(x):
        raise ValueError(f"{name} must hold one label per image ({len(x)}), got {len(y)}")
    return y


def gini_index(maps: torch.Tensor) -> torch.Tensor:
    """Concentration of each map, the Gini index of its absolute values (N,): 0 when the mass is spread
    evenly, ``1 - 1/M`` when one of the ``M`` values holds it all (how "sharp" a saliency map is, the
    visual claim of SmoothGrad, Smilkov et al., 2017, made a number). An all-zero map counts as spread
    evenly (0), the limit of ``c * ones`` as ``c -> 0``."""
    checks.tensor(maps, "maps", floating=True, finite=True, min_ndim=2, nonempty=True)
    v = maps.detach().abs().flatten(1).sort(dim=1).values
    m = v.shape[1]
    k = torch.arange(1, m + 1, device=v.device, dtype=v.dtype)
    mass = v.sum(1)
    gini = ((2 * k - m - 1) * v).sum(1) / (m * torch.where(mass > 0, mass, torch.ones_like(mass)))
    if not bool(torch.isfinite(gini).all()):
        raise ValueError(f"maps are too large for {maps.dtype}: the sum of a map's absolute values overflows")
    return gini


def instability(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - cos(a_i, b_i)`` per example (N,) between two batches of maps, e.g. the maps of ``x`` and of a
    slightly jittered ``x`` (0 when the map does not change direction)."""
    checks.tensor(a, "a", floating=True, finite=True, nonempty=True)
    checks.tensor(b, "b", floating=True, finite=True, nonempty=True)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"a and b must be batches (N, ...) of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return 1 - torch.nn.functional.cosine_similarity(a.detach().flatten(1), b.detach().flatten(1), dim=1)
