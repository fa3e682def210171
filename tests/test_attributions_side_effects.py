"""Every measurement of the attributions pillar leaves the caller's model as found.

The model has BatchNorm (running statistics that a train-mode forward would update), Dropout, a frozen
parameter, a forward hook, existing ``.grad`` on every trainable parameter, and mixed train/eval modes.
After each measurement a snapshot must match: parameter values, grads, ``requires_grad`` flags, every
submodule's ``training`` flag, every buffer, the hooks registered, and the hook still fires.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from model_state import assert_same, snapshot
from torch import nn

from labkit.attributions import (
    conservation_error,
    deletion_curve,
    grad_cam,
    grad_cam_pp,
    infidelity,
    input_x_gradient,
    insertion_curve,
    integrated_gradients,
    integrated_gradients_with_delta,
    layer_activation_and_grad,
    layer_maps,
    max_min_class_correlation,
    max_sensitivity,
    norm_grad,
    pgd_perturb,
    saliency,
    smooth_grad_cam_pp,
    smoothgrad,
    xgrad_cam,
)
from labkit.attributions.data import Canvas, two_digit_canvas
from labkit.attributions.experiments import diffroar, explainer, own_digit_rate

X = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(0))
T = torch.tensor([0, 1, 2, 1])


def make_model() -> tuple[nn.Module, list[int]]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU()),
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Softplus()),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 3),
    )
    model.train()
    model[1][1].eval()  # mixed modes: one BatchNorm in eval, the rest in train
    model[0][0].bias.requires_grad_(False)  # a frozen parameter
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    calls: list[int] = []
    model[1].register_forward_hook(lambda mod, inp, out: calls.append(1))
    return model, calls






_canvas = two_digit_canvas(3)
CANVAS = Canvas(_canvas.images, torch.tensor([[0, 1], [2, 0], [1, 2]]), _canvas.targets, _canvas.masks)


def trivial_train(x: torch.Tensor, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda z: z.flatten(1)[:, :3]


MEASUREMENTS: dict[str, Callable[[nn.Module], Any]] = {
    "saliency": lambda m: saliency(m, X, T),
    "input_x_gradient": lambda m: input_x_gradient(m, X, T),
    "smoothgrad": lambda m: smoothgrad(m, X, T, samples=3, kind="var"),
    "integrated_gradients": lambda m: integrated_gradients(m, X, T, steps=4, chunk_size=5),
    "integrated_gradients_with_delta": lambda m: integrated_gradients_with_delta(m, X, T, steps=4),
    "layer_activation_and_grad": lambda m: layer_activation_and_grad(m, X, T, layer=m[1]),
    "grad_cam": lambda m: grad_cam(m, X, T, layer=m[1]),
    "grad_cam_pp": lambda m: grad_cam_pp(m, X, T, layer=m[0]),
    "grad_cam_pp exact": lambda m: grad_cam_pp(m, X[:1, :, :3, :3], T[:1], layer=m[1], derivatives="exact"),
    "smooth_grad_cam_pp": lambda m: smooth_grad_cam_pp(m, X, T, layer=m[1], samples=2),
    "xgrad_cam": lambda m: xgrad_cam(m, X, T, layer=m[1]),
    "norm_grad": lambda m: norm_grad(m, X, T, layer=m[1]),
    "conservation_error": lambda m: conservation_error(m, X, T, layer=m[1], method=grad_cam),
    "layer_maps": lambda m: layer_maps(grad_cam, m, X, T, layers=[m[0], m[1]]),
    "max_min_class_correlation": lambda m: max_min_class_correlation(grad_cam, m, X, layer=m[1], relu=False),
    "infidelity": lambda m: infidelity(m, X, torch.ones_like(X), T, samples=3),
    "max_sensitivity": lambda m: max_sensitivity(explainer(saliency, m), X, T, samples=2),
    "deletion_curve": lambda m: deletion_curve(m, X, X, T, steps=3),
    "insertion_curve": lambda m: insertion_curve(m, X, X, T, steps=3, score="logit"),
    "pgd_perturb": lambda m: pgd_perturb(m, X, T, eps=0.1, steps=2),
    "pgd_perturb L2": lambda m: pgd_perturb(m, X, T, eps=0.5, steps=2, norm="2", clamp=None),
    "diffroar": lambda m: diffroar(m, trivial_train, X, T, X, T, fractions=[0.5]),
    "own_digit_rate": lambda m: own_digit_rate(grad_cam, m, CANVAS, layer=m[1]),
}


@pytest.mark.parametrize("name", sorted(MEASUREMENTS))
def test_measurement_leaves_the_model_as_found(name: str) -> None:
    model, calls = make_model()
    before = snapshot(model)
    MEASUREMENTS[name](model)
    assert_same(before, snapshot(model))
    fired = len(calls)
    model(X)
    assert len(calls) == fired + 1, "the caller's forward hook no longer fires"


def test_measurement_restores_the_model_after_an_error() -> None:
    model, _ = make_model()
    before = snapshot(model)
    with pytest.raises(ValueError, match="target"):
        saliency(model, X, 7)
    with pytest.raises(ValueError, match="layer"):
        grad_cam(model, X, T, layer=model[3])  # the flatten: not a feature map
    assert_same(before, snapshot(model))


def test_no_batchnorm_statistics_update_even_in_train_mode() -> None:
    model, _ = make_model()
    model.train()
    stats = [b.clone() for b in model.buffers()]
    saliency(model, X, T)
    smoothgrad(model, X, T, samples=2)
    pgd_perturb(model, X, T, eps=0.1, steps=1)
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers(), strict=True))
    assert all(m.training for m in model.modules())
