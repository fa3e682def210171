"""The experiments of the attribution notebooks: the small models they explain, trained one way, the
losses they train with, explainers with fixed noise draws, and the measures the notebooks compare.

Randomness: the data split and the mini-batch order follow ``seed`` (an int); the model's initial
weights come from torch's global generator, so seed them with ``with run.seeded("init"): ...``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from labkit import checks
from labkit.attributions._common import (
    check_callable,
    check_input,
    check_model_input,
    check_nonneg_float,
    check_positive_int,
    evaluating,
    forward,
)
from labkit.attributions.data import Canvas
from labkit.attributions.gradients import saliency
from labkit.attributions.metrics import roar
from labkit.attributions.robust import pgd_perturb
from labkit.autograd import check_module
from labkit.data import Split, digits
from labkit.models import cnn, mlp
from labkit.training import LossFn, cross_entropy, fit, fit_loss

Explain = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

multilabel_loss: LossFn = fit_loss(F.binary_cross_entropy_with_logits)
multilabel_loss.__doc__ = ("The ``fit`` loss of a multi-label classifier, ``binary_cross_entropy_with_logits(model(x), "
                           "y)`` with ``y`` multi-hot (the two-digit canvases: both digits are targets).")


def saturating(z: torch.Tensor) -> torch.Tensor:
    """``1 - ReLU(1 - z)``: the one-line network of Sundararajan, Taly & Yan (2017, section 2.1) whose
    gradient vanishes at ``z = 2`` although the output changed from ``F(0) = 0`` to ``F(2) = 1``."""
    return 1 - F.relu(1 - z)


def fit_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    loss: LossFn = cross_entropy,
    seed: int = 0,
    desc: str = "training",
    progress: bool | None = None,
) -> nn.Module:
    """Train ``model`` on ``(x, y)`` with Adam for ``steps`` mini-batch steps (``labkit.training.fit``,
    batches drawn from ``seed``) and return it in eval mode. ``loss(model, (x, y))`` defaults to cross-entropy."""
    check_module(model)
    lr = checks.number(lr, "lr", low=0.0, low_open=True)
    x = check_model_input(model, x)
    if not callable(loss):
        raise TypeError(f"loss must be a callable loss(model, (x, y)), got {type(loss).__name__}")
    checks.tensor(y, "y", finite=True, min_ndim=1)
    if len(y) != len(x):
        raise ValueError(f"y must hold one target per row of x ({len(x)}), got {len(y)}")
    if not y.is_floating_point():  # class labels: in range of the model's logits (one probe row)
        with torch.no_grad(), evaluating(model):
            logits = forward(model, x[:1])
        checks.class_indices(y, logits.shape[-1], "y")
    try:
        fit(model, loss, (x, y), optimizer=torch.optim.Adam(model.parameters(), lr=lr), steps=steps,
            batch_size=batch_size, seed=seed, desc=desc, progress=progress)
    except RuntimeError as err:
        if "overflow" not in str(err):
            raise
        raise ValueError(f"lr={lr} is too large: the optimizer's update overflows ({err})") from err
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise ValueError(f"training diverged: the model's parameters are NaN or infinite after {steps} steps "
                         f"with lr={lr}; lower lr")
    return model.eval()


class TrainedOnDigits(NamedTuple):
    """A model trained on ``data`` (unpacks as ``model, data``)."""

    model: nn.Module
    data: Split


def train_digits_cnn(
    *,
    channels: Sequence[int],
    steps: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
) -> TrainedOnDigits:
    """The ReLU CNN with max-pooling on scikit-learn's 8x8 digits (split by ``seed``) whose input
    gradients the SmoothGrad notebook smooths (Smilkov et al., 2017) and the infidelity notebook
    scores (Yeh et al., 2019). The initial weights come from torch's global generator."""
    data = digits(seed=seed, image=True, device=device)
    model = cnn(1, 10, channels=tuple(channels), image_size=8).to(device)
    fit_classifier(model, data.train_x, data.train_y, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                   desc="CNN on digits", progress=progress)
    return TrainedOnDigits(model, data)


def train_mlp(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    hidden: Sequence[int],
    classes: int,
    steps: int,
    loss: LossFn = cross_entropy,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> nn.Module:
    """A fresh ReLU MLP on flat inputs ``x`` (N, D) trained by :func:`fit_classifier` (no progress bar:
    ROAR retrains many of these). The initial weights come from torch's global generator."""
    x = check_input(x)
    if x.ndim != 2:
        raise ValueError(f"x must be flat (N, D) for an MLP, got shape {tuple(x.shape)}")
    classes = check_positive_int(classes, "classes")
    hidden = _widths(hidden, "hidden", allow_empty=True)
    checks.tensor(y, "y", finite=True, min_ndim=1)
    if not y.is_floating_point() and y.numel() and int(y.max()) >= classes:
        raise ValueError(f"classes={classes} but y holds labels up to {int(y.max())}: classes must exceed every label")
    model = mlp(x.shape[1], list(hidden), classes).to(x.device)
    return fit_classifier(model, x, y, steps=steps, lr=lr, batch_size=batch_size, loss=loss, seed=seed,
                          progress=False)


def _widths(widths: object, name: str, *, allow_empty: bool = False) -> list[int]:
    """A sequence of positive ints (layer widths or channel counts)."""
    if isinstance(widths, (str, torch.Tensor)) or not isinstance(widths, Sequence):
        raise TypeError(f"{name} must be a sequence of positive ints, got {type(widths).__name__}")
    if not widths and not allow_empty:
        raise ValueError(f"{name} must hold at least one width")
    return [check_positive_int(w, f"{name}[{i}]") for i, w in enumerate(widths)]


def adversarial_loss(*, eps: float, steps: int) -> LossFn:
    """The ``fit`` loss of PGD adversarial training (Madry et al., 2018): cross-entropy at the
    :func:`pgd_perturb` point of the L-inf ball of radius ``eps`` (``steps`` ascent steps, random start
    from torch's global generator)."""
    eps = check_nonneg_float(eps, "eps")
    steps = check_positive_int(steps, "steps")

    def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(pgd_perturb(model, x, y, eps=eps, steps=steps)), y)

    return loss


def explainer(
    method: Callable[..., torch.Tensor],
    model: nn.Module,
    *,
    generator: torch.Generator | Callable[[], torch.Generator] | None = None,
    **options: object,
) -> Explain:
    """``explain(x, target) = method(model, x, target, **options)``, the form ``max_sensitivity`` takes.

    ``generator`` says where a noisy method (``smoothgrad``) draws its noise:

    - a ``torch.Generator`` (e.g. ``run.generator("smoothgrad")``): one stream, continued at every call, so
      ``x`` and every ``x + d`` get *fresh* draws: the explanation as a user would compute it, Monte-Carlo
      error included (what Yeh et al., 2019, Sec. 4 smooth: the expectation, estimated by sampling);
    - a zero-argument factory (``lambda: run.generator("smoothgrad")``): a new generator at every call,
      hence the *same* draws at every input, so a change of the map measures the input's change only.
    """
    if generator is not None and not isinstance(generator, torch.Generator) and not callable(generator):
        raise TypeError("generator must be a torch.Generator (fresh draws at every call) or a zero-argument "
                        f"factory of torch.Generator (the same draws at every call), got {type(generator).__name__}")
    extra = {} if generator is None else {"generator": None}
    check_callable(method, "method", (model, None, None), {**options, **extra},
                   "method(model, x, target, **options) such as saliency or smoothgrad")

    def explain(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if generator is None:
            return method(model, x, target, **options)
        gen = generator if isinstance(generator, torch.Generator) else generator()
        return method(model, x, target, generator=gen, **options)

    return explain


def own_digit_rate(method: Callable[..., torch.Tensor], model: nn.Module, canvas: Canvas, *, layer: nn.Module) -> float:
    """Share of (canvas, class) maps with more mass on their own digit's square than on the other digit's
    (Grad-CAM's class-discriminative localization, Selvaraju et al., 2017, on two-digit canvases; a
    class-blind map scores 0.5). ``method(model, x, target, layer=layer)`` is a CAM like ``grad_cam``."""
    if not isinstance(canvas, Canvas):
        raise TypeError(f"canvas must be a labkit.attributions.data.Canvas, got {type(canvas).__name__}")
    check_callable(method, "method", (model, canvas.images, canvas.labels[:, 0]), {"layer": layer},
                   "method(model, x, target, *, layer) returning maps (N, H, W), such as grad_cam")
    hits = []
    for j in (0, 1):
        cam = method(model, canvas.images, canvas.labels[:, j], layer=layer)
        own = (cam * canvas.masks[:, j]).sum(dim=(1, 2))
        other = (cam * canvas.masks[:, 1 - j]).sum(dim=(1, 2))
        hits.append((own > other).float())
    return torch.cat(hits).mean().item()


@dataclass(frozen=True)
class DiffRoar:
    """ROAR test accuracies with the ``top`` and the ``bottom`` attributed fraction removed, per fraction."""

    fractions: list[float]
    top: list[float]
    bottom: list[float]

    @property
    def diff(self) -> list[float]:
        """DiffROAR (Shah et al., 2021): accuracy with the bottom removed minus with the top removed."""
        return [b - t for t, b in zip(self.top, self.bottom, strict=True)]


def diffroar(
    model: nn.Module,
    train: Callable[[torch.Tensor, torch.Tensor], nn.Module],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    fractions: Sequence[float],
    explain: Callable[..., torch.Tensor] = saliency,
) -> DiffRoar:
    """DiffROAR (Shah, Jain & Netrapalli, 2021, https://arxiv.org/abs/2102.12781) of ``model``'s attributions:
    rank pixels by ``|explain(model, x, predicted class)|``, remove the top and the bottom fraction from
    train and test images, retrain with ``train(x, y)`` (:func:`labkit.attributions.roar`), compare test
    accuracies. The predicted class, not the label: a label-dependent mask would leak the label."""
    check_module(model)
    train_x = check_model_input(model, train_x, "train_x")
    test_x = check_model_input(model, test_x, "test_x")
    check_callable(train, "train", (train_x, train_y), {}, "train(x, y) returning a fitted model")
    check_callable(explain, "explain", (model, train_x, train_y), {},
                   "explain(model, x, target) returning attributions shaped like x, such as saliency")
    with torch.no_grad(), evaluating(model):
        pred_train, pred_test = forward(model, train_x, "train_x").argmax(1), forward(model, test_x, "test_x").argmax(1)
    attr_train = explain(model, train_x, pred_train).abs()
    attr_test = explain(model, test_x, pred_test).abs()
    acc = {order: roar(train, train_x, train_y, test_x, test_y, attr_train, attr_test, fractions=fractions,
                       order=order).accuracy for order in ("top", "bottom")}
    return DiffRoar([float(f) for f in fractions], acc["top"], acc["bottom"])


__all__ = [
    "DiffRoar", "Explain", "TrainedOnDigits", "adversarial_loss", "diffroar", "explainer", "fit_classifier",
    "multilabel_loss", "own_digit_rate", "saturating", "train_digits_cnn", "train_mlp",
]
