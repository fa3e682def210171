"""Samplers in the sigma parameterisation ``x = x0 + sigma * eps`` with pluggable guidance.

* :func:`sample_ode`: the probability-flow ODE ``dx/dsigma = (x - D(x, sigma)) / sigma`` with Euler or
  Heun steps (Karras et al., 2022, Algorithm 1 without churn; the last step to sigma = 0 is Euler).
* :func:`sample_ddim` / :func:`sample_ddpm`: ancestral sampling; ``eta = 0`` is deterministic DDIM
  (Song et al., 2021), identical to an Euler step of the ODE, ``eta = 1`` draws from the DDPM posterior
  ``q(x_{s} | x_t, x0 = D)`` (Ho et al., 2020) written in sigma form.

One signature for all samplers (as in k-diffusion): ``sampler(denoiser, x, sigmas, *, label=None,
guidance=None, generator=None, trace=False) -> SampleResult``; :func:`sample_euler`, :func:`sample_heun`,
:func:`sample_ddim` (``eta = 0``) and :func:`sample_ddpm` have it, ``SAMPLERS`` names them. Guidance
(CFG, a guidance interval, adaptive guidance, classifier guidance) is a policy passed as ``guidance=``.

Every sampler counts denoiser evaluations (``nfe``) and can record a per-step trace. A denoiser (or a
classifier-guidance classifier) that is an ``nn.Module`` is evaluated in eval mode and left as found
(parameters, ``.grad``, every submodule's mode, BatchNorm statistics); ``label`` must be a class index of
the denoiser (``label=None``, not the null class, samples unconditionally); a denoiser that returns NaN or
inf stops sampling with a ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from labkit import checks
from labkit.autograd import check_generator, randn
from labkit.diffusion._checks import call, evaluating, finite_output, labels_for, num_classes_of, samples
from labkit.diffusion.guidance import GuidancePolicy
from labkit.diffusion.schedules import check_sigmas

Denoiser = Callable[..., torch.Tensor]
SOLVERS = ("euler", "heun")


@dataclass(frozen=True)
class SampleResult:
    """``samples`` at sigma = 0, ``nfe`` denoiser evaluations, the ``sigmas`` used, and with
    ``trace=True`` one row per step (``sigma``, ``sigma_next``, ``nfe``, ``guided``, ``x`` after the
    step, ``denoised`` at the step's first evaluation); ``guidance_trace`` is the policy's own record."""

    samples: torch.Tensor
    nfe: int
    sigmas: torch.Tensor
    trace: list[dict[str, Any]] | None = None
    guidance_trace: list[dict[str, Any]] = field(default_factory=list)

    def path(self) -> torch.Tensor:
        """The trajectory (steps + 1, N, ...) from the initial x to the samples (needs ``trace=True``)."""
        if self.trace is None:
            raise ValueError("the sampler was run without trace=True")
        return torch.stack([self.trace[0]["x_in"]] + [row["x"] for row in self.trace])


class _Evaluator:
    """Calls the denoiser (through the guidance policy when given) and counts evaluations."""

    def __init__(self, denoiser: Denoiser, label: torch.Tensor | None, guidance: GuidancePolicy | None, n: int):
        if not callable(denoiser):
            raise TypeError(f"denoiser must be callable as denoiser(x, sigma[, label]), got {type(denoiser).__name__}")
        if guidance is not None and not isinstance(guidance, GuidancePolicy):
            raise TypeError(
                f"guidance must be a GuidancePolicy (CFG, ClassifierGuidance, AdaptiveGuidance) or None, "
                f"got {type(guidance).__name__}; use make_guidance(name, ...) to build one by name"
            )
        self.denoiser, self.guidance, self.nfe = denoiser, guidance, 0
        self.label = label
        if guidance is not None:
            guidance.reset()

    def __call__(self, x: torch.Tensor, sigma: float, step: int) -> tuple[torch.Tensor, bool]:
        s = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
        if self.guidance is not None:
            out = self.guidance(self.denoiser, x, s, self.label, step=step)
            self.nfe += out.nfe
            denoised, guided = out.denoised, out.guided
        else:
            args = (s,) if self.label is None else (s, self.label)
            denoised = call(self.denoiser, "denoiser", x, *args)
            self.nfe += 1
            guided = False
        finite_output(denoised, "denoiser" if self.guidance is None else "the guided denoiser", like=x)
        return denoised, guided

    def evaluating(self) -> Any:
        """The model-state guard over the denoiser and a guidance policy's classifier (eval mode, restored)."""
        return evaluating(self.denoiser, getattr(self.guidance, "classifier", None))


def _prepare(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, label: Any
             ) -> tuple[torch.Tensor, list[float], Any]:
    samples(x, "x", model=denoiser)
    sig = check_sigmas(sigmas).tolist()
    if label is not None:
        label = labels_for(label, x.shape[0], num_classes=num_classes_of(denoiser), device=x.device)
    return x, sig, label


@torch.no_grad()
def sample_ode(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    solver: str = "heun",
    label: int | torch.Tensor | None = None,
    guidance: GuidancePolicy | None = None,
    trace: bool = False,
) -> SampleResult:
    """Integrate the probability-flow ODE from ``x`` at ``sigmas[0]`` down to ``sigmas[-1]``.

    ``x`` must already carry noise of level ``sigmas[0]`` (e.g. ``sigmas[0] * randn``). ``solver`` is
    "euler" or "heun" (Karras et al., 2022, https://arxiv.org/abs/2206.00364, Algorithm 1); Heun with
    N steps ending at 0 costs 2N - 1 evaluations. ``label`` conditions the denoiser; ``guidance`` a
    :class:`~labkit.diffusion.guidance.GuidancePolicy` used in place of the plain denoiser.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; expected one of {SOLVERS}")
    x, sig, label = _prepare(denoiser, x, sigmas, label)
    ev = _Evaluator(denoiser, label, guidance, x.shape[0])
    rows: list[dict[str, Any]] | None = [] if trace else None
    with ev.evaluating():
        for i, (s, s_next) in enumerate(zip(sig[:-1], sig[1:], strict=True)):
            nfe0, x_in = ev.nfe, x
            if s == 0:
                raise ValueError("sigmas must be > 0 except for the last one")
            denoised, guided = ev(x, s, i)
            d = (x - denoised) / s
            x_next = x + (s_next - s) * d
            if solver == "heun" and s_next > 0:
                denoised2, _ = ev(x_next, s_next, i)
                d2 = (x_next - denoised2) / s_next
                x_next = x + (s_next - s) * 0.5 * (d + d2)
            x = x_next
            if rows is not None:
                rows.append({"step": i, "sigma": s, "sigma_next": s_next, "nfe": ev.nfe - nfe0, "guided": guided,
                             "x_in": x_in, "x": x, "denoised": denoised})
    return SampleResult(x, ev.nfe, torch.as_tensor(sig), rows, list(guidance.trace) if guidance else [])


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    eta: float = 0.0,
    label: int | torch.Tensor | None = None,
    guidance: GuidancePolicy | None = None,
    generator: torch.Generator | None = None,
    trace: bool = False,
) -> SampleResult:
    """DDIM (``eta = 0``, deterministic) to DDPM (``eta = 1``, ancestral) sampling in sigma form.

    From ``sigma`` to ``sigma_next``: ``sigma_up = eta * sigma_next * sqrt(1 - sigma_next^2 / sigma^2)``,
    ``sigma_down = sqrt(sigma_next^2 - sigma_up^2)``, ``x <- D + sigma_down * (x - D) / sigma +
    sigma_up * z``. Song, Meng, Ermon, *Denoising Diffusion Implicit Models*, ICLR 2021,
    https://arxiv.org/abs/2010.02502; Ho, Jain, Abbeel, *Denoising Diffusion Probabilistic Models*, 2020.
    """
    eta = checks.number(eta, "eta", low=0, high=1)
    check_generator(generator)
    x, sig, label = _prepare(denoiser, x, sigmas, label)
    ev = _Evaluator(denoiser, label, guidance, x.shape[0])
    rows: list[dict[str, Any]] | None = [] if trace else None
    with ev.evaluating():
        for i, (s, s_next) in enumerate(zip(sig[:-1], sig[1:], strict=True)):
            nfe0, x_in = ev.nfe, x
            if s == 0:
                raise ValueError("sigmas must be > 0 except for the last one")
            denoised, guided = ev(x, s, i)
            up = eta * s_next * max(0.0, 1 - s_next**2 / s**2) ** 0.5
            down = max(0.0, s_next**2 - up**2) ** 0.5
            x = denoised + (down / s) * (x - denoised)
            if up > 0:
                x = x + up * randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            if rows is not None:
                rows.append({"step": i, "sigma": s, "sigma_next": s_next, "nfe": ev.nfe - nfe0, "guided": guided,
                             "x_in": x_in, "x": x, "denoised": denoised})
    return SampleResult(x, ev.nfe, torch.as_tensor(sig), rows, list(guidance.trace) if guidance else [])


def sample_ddpm(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    label: int | torch.Tensor | None = None,
    guidance: GuidancePolicy | None = None,
    generator: torch.Generator | None = None,
    trace: bool = False,
) -> SampleResult:
    """DDPM ancestral sampling (Ho et al., 2020): :func:`sample_ddim` with ``eta = 1``."""
    return sample_ddim(denoiser, x, sigmas, eta=1.0, label=label, guidance=guidance, generator=generator, trace=trace)


def sample_euler(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    label: int | torch.Tensor | None = None,
    guidance: GuidancePolicy | None = None,
    generator: torch.Generator | None = None,
    trace: bool = False,
) -> SampleResult:
    """Euler steps of the probability-flow ODE (:func:`sample_ode` with ``solver="euler"``); ``generator``
    is accepted for the common signature and unused (the ODE is deterministic)."""
    return sample_ode(denoiser, x, sigmas, solver="euler", label=label, guidance=guidance, trace=trace)


def sample_heun(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    label: int | torch.Tensor | None = None,
    guidance: GuidancePolicy | None = None,
    generator: torch.Generator | None = None,
    trace: bool = False,
) -> SampleResult:
    """Heun steps of the probability-flow ODE (Karras et al., 2022, Algorithm 1; :func:`sample_ode`);
    ``generator`` is accepted for the common signature and unused."""
    return sample_ode(denoiser, x, sigmas, solver="heun", label=label, guidance=guidance, trace=trace)


Sampler = Callable[..., SampleResult]
SAMPLERS: dict[str, Sampler] = {"euler": sample_euler, "heun": sample_heun, "ddim": sample_ddim, "ddpm": sample_ddpm}


def get_sampler(sampler: str | Sampler) -> Sampler:
    """A sampler by name (``"euler"``, ``"heun"``, ``"ddim"``, ``"ddpm"``) or a sampler callable itself."""
    if callable(sampler):
        return sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {sorted(SAMPLERS)} or a sampler function")
    return SAMPLERS[sampler]
