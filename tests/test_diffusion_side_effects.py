"""Every measurement of the diffusion pillar leaves the caller's model as found.

The denoiser and the classifier below have BatchNorm (running statistics that a forward pass in train
mode would update), Dropout (left in eval while the rest is in train: each submodule's own mode must
come back), a frozen layer, a forward hook and existing ``.grad``. Samplers, guidance policies, the
classifier gradient and the experiments must leave all of it unchanged, and they evaluate the model in
eval mode (so a model left in train mode samples exactly as in eval mode).
"""

import pytest
import torch
from model_state import assert_same, snapshot
from torch import nn

from labkit.diffusion import (
    CFG,
    AdaptiveGuidance,
    ClassifierGuidance,
    classifier_gradient,
    denoiser_gaps,
    guidance_sweep,
    guided_run,
    karras_sigmas,
    ring_mixture,
    sample_ddim,
    sample_ddpm,
    sample_euler,
    sample_heun,
    sample_ode,
    teleport_sweep,
)

MIX = ring_mixture(2, 2, radius=2.0, std=0.5, spread=1.0)
SIGMAS = karras_sigmas(4, sigma_min=0.05, sigma_max=10.0)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class Trunk(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Dropout -> frozen Linear, with a label embedding (null = num_classes)."""

    def __init__(self, inputs: int, outputs: int, num_classes: int = 2):
        super().__init__()
        self.num_classes = num_classes
        self.inp = nn.Linear(inputs + 1, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.5)
        self.frozen = nn.Linear(16, 16)
        self.frozen.requires_grad_(False)
        self.emb = nn.Embedding(num_classes + 1, 16)
        self.out = nn.Linear(16, outputs)

    def features(self, x, sigma, label=None):
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1).expand(x.shape[0])
        h = self.drop(torch.relu(self.bn(self.inp(torch.cat([x, s.log()[:, None] / 4], dim=1)))))
        n = x.shape[0]
        lab = torch.full((n,), self.num_classes) if label is None else torch.as_tensor(label).expand(n)
        return self.frozen(h) + self.emb(lab)


class Denoiser(Trunk):
    def __init__(self):
        super().__init__(2, 2)

    def forward(self, x, sigma, label=None):
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1)
        return x / (1 + s**2) + 0.1 * self.out(self.features(x, sigma, label))


class Classifier(Trunk):
    def __init__(self):
        super().__init__(2, 2)

    def forward(self, x, sigma):
        return self.out(self.features(x, sigma))


def prepared(model: nn.Module) -> tuple[nn.Module, list[int]]:
    """Train mode with Dropout in eval, existing .grad, running statistics away from their defaults, a hook."""
    torch.manual_seed(0)
    x = torch.randn(32, 2)
    model.train()
    out = model(x, torch.ones(32)) if isinstance(model, Classifier) else model(x, torch.ones(32), 1)
    out.pow(2).sum().backward()  # .grad on every trainable parameter, BatchNorm statistics moved
    model.drop.eval()
    calls: list[int] = []
    model.out.register_forward_hook(lambda *_: calls.append(1))
    return model, calls




def assert_as_found(model: nn.Module, before: dict, calls: list[int]) -> None:
    assert_same(before, snapshot(model))
    n = len(calls)
    with torch.no_grad():
        model(torch.zeros(2, 2), torch.ones(2)) if isinstance(model, Classifier) else model(torch.zeros(2, 2), 1.0)
    assert len(calls) == n + 1, "the forward hook no longer fires"


def x_start(n=8):
    return 10.0 * torch.randn(n, 2, generator=gen(3))


MEASUREMENTS = {
    "euler": lambda d: sample_euler(d, x_start(), SIGMAS),
    "heun + label": lambda d: sample_heun(d, x_start(), SIGMAS, label=1),
    "ddim + CFG": lambda d: sample_ddim(d, x_start(), SIGMAS, label=0, guidance=CFG(3.0)),
    "ddpm + CFG interval": lambda d: sample_ddpm(d, x_start(), SIGMAS, label=1, guidance=CFG(2.0, interval=(0.1, 5.0)),
                                                 generator=gen(1)),
    "ode + adaptive": lambda d: sample_ode(d, x_start(), SIGMAS, label=0, guidance=AdaptiveGuidance(3.0, warmup=0),
                                           trace=True),
    "bound forward": lambda d: sample_heun(d.forward, x_start(), SIGMAS, label=1),
    "denoiser_gaps": lambda d: denoiser_gaps(MIX.sample(16, generator=gen(4)), [0.1, 1.0, 10.0],
                                             {"exact": MIX.denoise, "model": d}, [("model", "exact")],
                                             reference="exact", generator=gen(5)),
    "teleport_sweep": lambda d: teleport_sweep({"model": d}, x_start(), SIGMAS, [0, 2], mean=MIX.mean(),
                                               cov=MIX.covariance(), reference=MIX.sample(16, generator=gen(6))),
    "guided_run": lambda d: guided_run(MIX, x_start(), SIGMAS, CFG(2.0), label=0, denoiser=d,
                                       reference=MIX.sample(16, generator=gen(7))),
    "guidance_sweep": lambda d: guidance_sweep(MIX, x_start(), SIGMAS, {"plain": None, "cfg": CFG(3.0)}, label=1,
                                               denoiser=d),
}


@pytest.mark.parametrize("name", sorted(MEASUREMENTS))
def test_denoiser_measurements_leave_the_model_as_found(name):
    model, calls = prepared(Denoiser())
    before = snapshot(model)
    MEASUREMENTS[name](model)
    assert_as_found(model, before, calls)


def test_classifier_guidance_and_gradient_leave_both_models_as_found():
    denoiser, d_calls = prepared(Denoiser())
    classifier, c_calls = prepared(Classifier())
    d_before, c_before = snapshot(denoiser), snapshot(classifier)
    sample_heun(denoiser, x_start(), SIGMAS, label=1, guidance=ClassifierGuidance(classifier, 2.0, interval=(0.1, 5.0)))
    classifier_gradient(classifier, x_start(), torch.full((8,), 2.0), torch.tensor([0, 1] * 4))
    assert_as_found(denoiser, d_before, d_calls)
    assert_as_found(classifier, c_before, c_calls)


def test_samplers_evaluate_the_model_in_eval_mode():
    """A model left in train mode samples as in eval mode: no dropout masks, BatchNorm's running statistics
    (not the batch's), and so the same samples twice."""
    model, _ = prepared(Denoiser())
    model.train()  # Dropout too
    in_train = sample_heun(model, x_start(), SIGMAS, label=1).samples
    again = sample_heun(model, x_start(), SIGMAS, label=1).samples
    model.eval()
    in_eval = sample_heun(model, x_start(), SIGMAS, label=1).samples
    assert torch.equal(in_train, again) and torch.equal(in_train, in_eval)
    assert model.bn.training is False  # restored to what the caller set last


class Diverging(Denoiser):
    """Fine for two evaluations, then NaN: the sampler stops with an error half-way."""

    def __init__(self):
        super().__init__()
        self.evaluations = 0

    def forward(self, x, sigma, label=None):
        self.evaluations += 1
        out = super().forward(x, sigma, label)
        return out if self.evaluations <= 2 else out * float("nan")


def test_an_error_inside_a_measurement_still_restores_the_model():
    model, calls = prepared(Diverging())
    before = snapshot(model)
    with pytest.raises(ValueError, match="label must be a class index"):
        sample_heun(model, x_start(), SIGMAS, label=2)
    model.evaluations = 0
    with pytest.raises(ValueError, match="denoiser returned NaN"):
        sample_heun(model, x_start(), SIGMAS)
    assert model.evaluations == 3
    assert_as_found(model, before, calls)
