"""Guidance as policies that any sampler calls in place of the denoiser.

Convention (one, named): ``cfg(cond, uncond, w) = uncond + w * (cond - uncond)``. So ``w = 1`` is
plain conditional sampling, ``w = 0`` unconditional, ``w > 1`` guided. Because ``D = x + sigma^2 score``
and ``eps = (x - D) / sigma`` are affine in each other with weights summing to one, the same formula
holds for denoised outputs, scores and noise predictions alike; the policies work on denoised outputs.

A denoiser is any callable ``denoiser(x, sigma)`` (unconditional) / ``denoiser(x, sigma, label)``
(conditional), ``sigma`` a tensor of shape (N,). A policy is called as
``policy(denoiser, x, sigma, label, step=i)`` and returns a :class:`GuidanceOutput` with the denoised
tensor and the number of denoiser evaluations it used; ``policy.trace`` records one row per call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from labkit import checks
from labkit.diffusion._checks import call, evaluating, finite_output, labels_for, samples

Denoiser = Callable[..., torch.Tensor]


def cfg(cond: torch.Tensor, uncond: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance, ``uncond + w * (cond - uncond)`` (Ho & Salimans, 2022,
    https://arxiv.org/abs/2207.12598, with their ``1 + w`` written as ``w``): ``w = 1`` is conditional."""
    w = checks.number(w, "w")
    _pair(cond, uncond, ("cond", "uncond"))
    return _cfg(cond, uncond, w)


def _cfg(cond: torch.Tensor, uncond: torch.Tensor, w: float) -> torch.Tensor:  # the policies' checked-once path
    return uncond + w * (cond - uncond)


def _pair(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str], min_ndim: int = 1) -> None:
    for t, name in zip((a, b), names, strict=True):
        checks.tensor(t, name, floating=True, min_ndim=min_ndim, nonempty=True)
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


def cfg_rescale(guided: torch.Tensor, cond: torch.Tensor, phi: float) -> torch.Tensor:
    """CFG rescale of Lin et al. (2024, https://arxiv.org/abs/2305.08891, eq. 15-16): scale each guided
    prediction to the per-sample standard deviation of the conditional one, then mix with weight ``phi``."""
    phi = checks.number(phi, "phi", low=0, high=1)
    _pair(guided, cond, ("guided", "cond"), min_ndim=2)  # a batch (N, ...): per-sample statistics
    return _rescale(guided, cond, phi)


def _rescale(guided: torch.Tensor, cond: torch.Tensor, phi: float) -> torch.Tensor:
    dims = tuple(range(1, guided.ndim))
    ratio = cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp_min(1e-12)
    return phi * guided * ratio + (1 - phi) * guided


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine similarity of two batches (N,), flattening all but the first dimension."""
    _pair(a, b, ("a", "b"), min_ndim=2)
    return torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-12)


@dataclass(frozen=True)
class GuidanceOutput:
    """What a policy returns: the denoised batch, denoiser evaluations used, whether guidance was on."""

    denoised: torch.Tensor
    nfe: int
    guided: bool
    info: dict[str, Any] = field(default_factory=dict)


def _check_interval(interval: tuple[float, float] | None) -> tuple[float, float] | None:
    if interval is None:
        return None
    if not isinstance(interval, (tuple, list)) or len(interval) != 2:
        raise ValueError(f"interval must be a pair (sigma_lo, sigma_hi) or None, got {interval!r}")
    lo = checks.number(interval[0], "interval[0] (sigma_lo)")
    hi = interval[1]
    if not (isinstance(hi, float) and hi == float("inf")):  # (lo, inf): guidance at every sigma above lo
        hi = checks.number(hi, "interval[1] (sigma_hi)")
    if not 0 <= lo < hi:
        raise ValueError(f"interval must satisfy 0 <= sigma_lo < sigma_hi, got {interval!r}")
    return lo, hi


class GuidancePolicy:
    """Base class: guidance applied only while ``sigma_lo < sigma <= sigma_hi`` when ``interval`` is
    given (Kynkäänniemi et al., 2024, https://arxiv.org/abs/2404.07724); outside it the policy
    takes its ``w = 1`` form (conditional sampling, one evaluation)."""

    def __init__(self, *, interval: tuple[float, float] | None = None):
        self.interval = _check_interval(interval)
        self.trace: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Forget the trace and any state (samplers call this before sampling)."""
        self.trace = []

    def active(self, sigma: float) -> bool:
        if self.interval is None:
            return True
        lo, hi = self.interval
        return lo < sigma <= hi

    def __call__(
        self, denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor, label: torch.Tensor, *, step: int
    ) -> GuidanceOutput:
        if label is None:
            raise ValueError(f"{type(self).__name__} needs a label: pass label= to the sampler")
        s = float(sigma.reshape(-1)[0])
        if self.active(s):
            out = self.guide(denoiser, x, sigma, label, step=step)
        else:
            out = self.outside(denoiser, x, sigma, label)
        self.trace.append({"step": step, "sigma": s, "nfe": out.nfe, "guided": out.guided, **out.info})
        return out

    def guide(
        self, denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor, label: torch.Tensor, *, step: int
    ) -> GuidanceOutput:
        """The guided denoiser inside the interval (subclasses implement it)."""
        raise NotImplementedError

    def outside(self, denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor, label: torch.Tensor) -> GuidanceOutput:
        """The ``w = 1`` form outside the interval: the conditional denoiser, one evaluation."""
        return GuidanceOutput(denoiser(x, sigma, label), 1, False)


class CFG(GuidancePolicy):
    """Classifier-free guidance with weight ``w`` (:func:`cfg` convention), optional CFG rescale
    ``rescale = phi`` and optional guidance ``interval`` in sigma. Two evaluations per guided call."""

    def __init__(self, w: float, *, rescale: float = 0.0, interval: tuple[float, float] | None = None):
        super().__init__(interval=interval)
        self.w = checks.number(w, "w")
        self.rescale = checks.number(rescale, "rescale", low=0, high=1)

    def guide(self, denoiser, x, sigma, label, *, step):
        if self.w == 1.0:
            return GuidanceOutput(denoiser(x, sigma, label), 1, False)
        cond, uncond = denoiser(x, sigma, label), denoiser(x, sigma)
        out = _cfg(cond, uncond, self.w)  # the sampler checks the guided output
        if self.rescale > 0:
            out = _rescale(out, cond, self.rescale)
        return GuidanceOutput(out, 2, True)

    def __repr__(self) -> str:
        return f"CFG(w={self.w}, rescale={self.rescale}, interval={self.interval})"


def classifier_gradient(
    classifier: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigma: torch.Tensor,
    label: torch.Tensor,
) -> torch.Tensor:
    """grad_x log p(label | x, sigma) of a noisy classifier returning logits (N, C) (``label`` an int or
    (N,) class indices in ``[0, C)``). A classifier that is an ``nn.Module`` runs in eval mode and is left
    as found: parameters, their ``.grad``, every submodule's mode, BatchNorm statistics."""
    if not callable(classifier):
        raise TypeError(f"classifier must be callable as classifier(x, sigma) -> logits (N, C), got "
                        f"{type(classifier).__name__}")
    samples(x, "x", model=classifier)
    if isinstance(sigma, torch.Tensor):
        checks.tensor(sigma, "sigma")
    else:
        checks.number(sigma, "sigma", low=0)
    labels = labels_for(label, x.shape[0], num_classes=None, device=x.device)
    with evaluating(classifier), torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        logits = call(classifier, "classifier", xg, sigma)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"classifier must return logits of shape (N, C), got {getattr(logits, 'shape', logits)}")
        labels_for(labels, x.shape[0], num_classes=logits.shape[1], of="classifier")
        finite_output(logits, "classifier")
        logp = torch.log_softmax(logits, dim=1).gather(1, labels.reshape(-1, 1)).sum()
        (grad,) = torch.autograd.grad(logp, xg)
    return grad


class ClassifierGuidance(GuidancePolicy):
    """Classifier guidance (Dhariwal & Nichol, 2021, https://arxiv.org/abs/2105.05233): the unconditional
    score plus ``scale`` times the gradient of a noisy classifier's log-probability of the label,
    ``D = D_uncond + scale * sigma^2 * grad_x log p(y | x, sigma)``. ``scale = 1`` samples the
    conditional when the classifier is exact. One denoiser evaluation (plus one classifier pass) per call."""

    def __init__(
        self,
        classifier: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        scale: float,
        *,
        interval: tuple[float, float] | None = None,
    ):
        super().__init__(interval=interval)
        if not callable(classifier):
            raise TypeError("classifier must be callable as classifier(x, sigma) -> logits (N, C)")
        self.classifier, self.scale = classifier, checks.number(scale, "scale")

    def _apply(self, denoiser, x, sigma, label, scale):
        uncond = denoiser(x, sigma)
        grad = classifier_gradient(self.classifier, x, sigma, label)
        s2 = (sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2).to(x.dtype)
        return uncond + scale * s2 * grad

    def guide(self, denoiser, x, sigma, label, *, step):
        return GuidanceOutput(self._apply(denoiser, x, sigma, label, self.scale), 1, True)

    def outside(self, denoiser, x, sigma, label):
        """Scale 1 outside the interval: the classifier's idea of the conditional."""
        return GuidanceOutput(self._apply(denoiser, x, sigma, label, 1.0), 1, False)

    def __repr__(self) -> str:
        return f"ClassifierGuidance(scale={self.scale}, interval={self.interval})"


class AdaptiveGuidance(GuidancePolicy):
    """Adaptive guidance (Castillo et al., 2023, https://arxiv.org/abs/2312.12487): CFG with weight ``w``
    until the cosine similarity between the conditional and the guided noise predictions,
    ``cos(eps_cond, eps_guided)`` (batch mean), has stayed ``>= threshold`` for ``patience`` consecutive
    evaluations; from then on only the conditional branch is evaluated (one evaluation per call).

    The test starts only at sampler step ``warmup``: at very high noise both predictions are ~x / sigma,
    so the cosine is ~1 at step 0 and a test without warm-up would switch guidance off immediately.
    ``trace`` holds the cosine of every guided call; ``switched_at`` the step guidance stopped.
    """

    def __init__(
        self,
        w: float,
        *,
        threshold: float = 0.99,
        warmup: int = 2,
        patience: int = 1,
        interval: tuple[float, float] | None = None,
    ):
        super().__init__(interval=interval)
        self.w = checks.number(w, "w")
        self.threshold = checks.number(threshold, "threshold (a cosine)", low=-1, high=1)
        self.warmup = checks.integer(warmup, "warmup (sampler steps)", low=0)
        self.patience = checks.positive_int(patience, "patience")
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.switched_at: int | None = None
        self._streak = 0

    def guide(self, denoiser, x, sigma, label, *, step):
        if self.switched_at is not None:
            return GuidanceOutput(denoiser(x, sigma, label), 1, False)
        cond, uncond = denoiser(x, sigma, label), denoiser(x, sigma)
        guided = _cfg(cond, uncond, self.w)
        s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        cos = float(cosine((x - cond) / s, (x - guided) / s).mean())
        if step >= self.warmup:
            self._streak = self._streak + 1 if cos >= self.threshold else 0
            if self._streak >= self.patience:
                self.switched_at = step
        return GuidanceOutput(guided, 2, True, {"cosine": cos})

    @property
    def cosines(self) -> list[tuple[float, float]]:
        """(sigma, cosine) of every guided call."""
        return [(r["sigma"], r["cosine"]) for r in self.trace if "cosine" in r]

    def __repr__(self) -> str:
        return (
            f"AdaptiveGuidance(w={self.w}, threshold={self.threshold}, warmup={self.warmup}, patience={self.patience})"
        )


POLICIES: dict[str, type[GuidancePolicy]] = {
    "cfg": CFG,
    "classifier": ClassifierGuidance,
    "adaptive": AdaptiveGuidance,
}


def make_guidance(name: str, *args: Any, **kwargs: Any) -> GuidancePolicy:
    """A policy by name: ``"cfg"``, ``"classifier"`` or ``"adaptive"`` (arguments passed on)."""
    if name not in POLICIES:
        raise ValueError(f"unknown guidance policy {name!r}; expected one of {sorted(POLICIES)}")
    return POLICIES[name](*args, **kwargs)
