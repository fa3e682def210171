"""The experiments of the diffusion notebooks, one call each: guided sampling runs measured against an
exact mixture, a small trained denoiser of a mixture, denoiser gaps across noise levels and
analytical teleportation.

* :func:`guided_run` / :func:`guidance_sweep`: sample with one guidance policy (or several, from the
  same start) and measure the samples against the exact class: per-mode mass, classifier confidence,
  and with a ``reference`` set of exact samples MMD², precision and recall (notebooks 01, 03, 04).
* :func:`train_mixture_denoiser`: the conditional MLP denoiser of notebooks 04 and 05, trained with
  label dropout on samples of a mixture.
* :func:`denoiser_gaps`: how far denoisers are from each other at each noise level (notebook 05,
  Wang & Vastola, 2024).
* :func:`teleport_sweep`: skip the first steps of sampling with the Gaussian closed form (notebook 05).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import torch

from labkit import checks
from labkit.autograd import check_generator, randint, randn
from labkit.diffusion._checks import call, evaluating, finite_output
from labkit.diffusion._checks import samples as check_samples
from labkit.diffusion.guidance import GuidancePolicy
from labkit.diffusion.linear import _check_gaussian, _check_x, gaussian_teleport
from labkit.diffusion.metrics import mmd2, mode_mass, precision_recall
from labkit.diffusion.mixtures import GaussianMixture
from labkit.diffusion.models import MLPDenoiser
from labkit.diffusion.samplers import Sampler, get_sampler, sample_ode
from labkit.diffusion.schedules import check_sigmas
from labkit.diffusion.training import train_denoiser
from labkit.training import History

Denoiser = Callable[..., torch.Tensor]
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class GuidedRun:
    """One sampling run measured against the exact class ``label`` of a mixture.

    ``modes``: the share of samples in each of the class's modes (exact: the class's weights);
    ``confidence``: the mean exact clean classifier probability ``p(label | x)``; with a reference
    sample of the class also ``mmd2`` (to the reference), ``precision`` and ``recall`` (k-NN, k = 3).
    ``guidance`` is the policy used (its ``trace``, ``switched_at``... stay readable).
    """

    samples: torch.Tensor
    nfe: int
    modes: list[float]
    confidence: float
    guidance: GuidancePolicy | None = None
    mmd2: float | None = None
    precision: float | None = None
    recall: float | None = None


def guided_run(
    mixture: GaussianMixture,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    guidance: GuidancePolicy | None = None,
    *,
    label: int,
    reference: torch.Tensor | None = None,
    denoiser: Denoiser | None = None,
    sampler: str | Sampler = "heun",
    k: int = 3,
    generator: torch.Generator | None = None,
) -> GuidedRun:
    """Sample from ``x`` at ``sigmas[0]`` with ``denoiser`` (the mixture's exact one by default) and the
    ``guidance`` policy, conditioned on ``label``, and measure the samples against the mixture's class.

    ``sampler`` is a name of :data:`~labkit.diffusion.SAMPLERS` or a sampler function; ``generator`` feeds
    the noise of a stochastic sampler ("ddpm"), so that it leaves torch's global generator as found (it is
    passed to the sampler only when given, so any sampler function works without it)."""
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    if not isinstance(label, int) or isinstance(label, bool):
        raise TypeError(f"label must be an int, got {type(label).__name__}")
    if not 0 <= label < mixture.num_classes:
        raise ValueError(f"label must be a class index in [0, {mixture.num_classes}) (the mixture has "
                         f"{mixture.num_classes} classes), got {label}")
    if reference is not None:
        check_samples(reference, "reference", ndim=2, dim=mixture.dim, min_n=2)
        checks.integer(k, "k", low=1, high=reference.shape[0] - 1)
    check_generator(generator)
    extra = {} if generator is None else {"generator": generator}
    out = get_sampler(sampler)(mixture if denoiser is None else denoiser, x, sigmas, label=label, guidance=guidance,
                               **extra)
    samples = out.samples
    modes = mode_mass(samples, mixture, label=label)[mixture.labels == label].tolist()
    confidence = mixture.class_posterior(samples, 0.0)[:, label].mean().item()
    if reference is None:
        return GuidedRun(samples, out.nfe, modes, confidence, guidance)
    precision, recall = precision_recall(reference, samples, k=k)
    return GuidedRun(samples, out.nfe, modes, confidence, guidance, mmd2(samples, reference), precision, recall)


def guidance_sweep(
    mixture: GaussianMixture,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    policies: Mapping[K, GuidancePolicy | None],
    *,
    label: int,
    reference: torch.Tensor | None = None,
    denoiser: Denoiser | None = None,
    sampler: str | Sampler = "heun",
    generator: torch.Generator | None = None,
) -> dict[K, GuidedRun]:
    """:func:`guided_run` for every policy of ``policies`` from the same start ``x``: ``{key: GuidedRun}``
    (the guidance-scale sweep of Dhariwal & Nichol's Fig. 4, the interval placements of
    Kynkäänniemi et al.'s Fig. 2, adaptive guidance against full CFG). A stochastic ``sampler`` draws
    from ``generator`` run after run (one stream for the whole sweep)."""
    if not isinstance(policies, Mapping) or not policies:
        raise ValueError("policies must be a non-empty mapping {name: GuidancePolicy or None}")
    return {key: guided_run(mixture, x, sigmas, policy, label=label, reference=reference, denoiser=denoiser,
                            sampler=sampler, generator=generator) for key, policy in policies.items()}


class TrainedDenoiser(NamedTuple):
    """A trained denoiser and its training history; unpacks as ``model, history``."""

    model: MLPDenoiser
    history: History


def train_mixture_denoiser(
    mixture: GaussianMixture,
    *,
    n: int = 4000,
    steps: int = 600,
    hidden: int = 64,
    depth: int = 3,
    batch_size: int = 256,
    lr: float = 5e-3,
    p_mean: float = 0.0,
    p_std: float = 1.5,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> TrainedDenoiser:
    """Train a conditional :class:`MLPDenoiser` (label dropout, one network for both CFG branches) on
    ``n`` samples of ``mixture`` with :func:`train_denoiser` (EDM loss, Karras et al., 2022).

    Everything random (the training set, the initialisation, the mini-batches and the loss's noise)
    follows from one number drawn from ``generator``; torch's global generator is left as found.
    """
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    checks.integer(n, "n", low=2)
    lr = checks.number(lr, "lr", low=0, low_open=True)
    check_generator(generator)
    seed = int(randint(0, 2**31 - 1, (1,), generator=generator))
    x, comp = mixture.sample_components(n, generator=torch.Generator().manual_seed(seed))
    device = torch.device(device) if device is not None else mixture.device
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        model = MLPDenoiser(mixture.dim, mixture.num_classes, hidden=hidden, depth=depth, sigma_data=1.0).to(device)
        history = train_denoiser(model, x.to(device), mixture.labels[comp].to(device), steps=steps,
                                 batch_size=batch_size, lr=lr, p_mean=p_mean, p_std=p_std, seed=seed,
                                 progress=progress)
    return TrainedDenoiser(model, history)


@dataclass(frozen=True)
class DenoiserGaps:
    """``gaps["a vs b"][i]``: mean ``|D_a(x) - D_b(x)|`` over the probes at ``noise_levels[i]``, divided by
    the mean size of the reference denoising step ``|x - D_ref(x)|`` (a relative score error)."""

    noise_levels: list[float]
    gaps: dict[str, list[float]]


@torch.no_grad()
def denoiser_gaps(
    x0: torch.Tensor,
    noise_levels: Sequence[float],
    denoisers: Mapping[str, Denoiser],
    pairs: Sequence[tuple[str, str]],
    *,
    reference: str,
    generator: torch.Generator | None = None,
) -> DenoiserGaps:
    """Noise the clean probes ``x0`` to each level (``x = x0 + sigma * eps``), run every denoiser
    (called as ``D(x, sigma)``) and measure the relative gap of each pair (Wang & Vastola, 2024,
    https://arxiv.org/abs/2412.09726: how Gaussian a learned score is at each noise level)."""
    if not isinstance(denoisers, Mapping) or not denoisers:
        raise ValueError("denoisers must be a non-empty mapping {name: denoiser(x, sigma)}")
    for name, d in denoisers.items():
        if not callable(d):
            raise TypeError(f"denoisers[{name!r}] must be callable as D(x, sigma), got {type(d).__name__}")
        check_samples(x0, "x0", model=d)
    levels = _noise_levels(noise_levels)
    check_generator(generator)
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or not pairs:
        raise ValueError("pairs must be a non-empty sequence of (name, name) pairs")
    names = set(denoisers)
    if reference not in names:
        raise ValueError(f"reference must be one of the denoisers {sorted(names)}, got {reference!r}")
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"pairs must hold (name, name) pairs, got {pair!r}")
        a, b = pair
        if a not in names or b not in names:
            raise ValueError(f"pairs must name denoisers of {sorted(names)}, got {(a, b)!r}")
    gaps: dict[str, list[float]] = {f"{a} vs {b}": [] for a, b in pairs}
    with evaluating(*denoisers.values()):
        for s in levels:
            x = x0 + s * randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            out = {name: finite_output(call(d, f"denoiser {name!r}", x, s), f"denoisers[{name!r}]", like=x)
                   for name, d in denoisers.items()}
            size = (x - out[reference]).flatten(1).norm(dim=1).mean()
            for a, b in pairs:
                gaps[f"{a} vs {b}"].append(((out[a] - out[b]).flatten(1).norm(dim=1).mean() / size).item())
    return DenoiserGaps(levels, gaps)


def _noise_levels(noise_levels: Sequence[float]) -> list[float]:
    if isinstance(noise_levels, (str, bytes)) or not isinstance(noise_levels, Sequence) or not noise_levels:
        raise ValueError("noise_levels must be a non-empty sequence of noise levels > 0")
    return [checks.number(s, f"noise_levels[{i}]", low=0, low_open=True) for i, s in enumerate(noise_levels)]


@dataclass(frozen=True)
class TeleportRun:
    """Samples after jumping over the first ``skip`` steps: ``sigma`` jumped to, ``nfe`` used, MMD²."""

    samples: torch.Tensor
    nfe: int
    skip: int
    sigma: float
    mmd2: float


@torch.no_grad()
def teleport_sweep(
    denoisers: Mapping[str, Denoiser],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    skips: Sequence[int],
    *,
    mean: torch.Tensor,
    cov: torch.Tensor,
    reference: torch.Tensor,
) -> dict[tuple[str, int], TeleportRun]:
    """Analytical teleportation (Wang & Vastola, 2024): from ``x`` at ``sigmas[0]`` jump with the closed
    form of ``N(mean, cov)`` to ``sigmas[skip]``, then take the remaining Heun steps with each denoiser;
    ``{(name, skip): TeleportRun}`` with MMD² to the exact ``reference`` samples."""
    sigmas = check_sigmas(sigmas)
    if not isinstance(denoisers, Mapping) or not denoisers:
        raise ValueError("denoisers must be a non-empty mapping {name: denoiser(x, sigma)}")
    if isinstance(skips, (str, bytes)) or not isinstance(skips, Sequence) or not skips or any(
            isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(sigmas) - 1 for k in skips):
        raise ValueError(f"skips must be a non-empty sequence of ints in [0, {len(sigmas) - 2}], got {skips!r}")
    _check_gaussian(mean, cov, "teleport_sweep")
    _check_x(x, mean)
    check_samples(reference, "reference", ndim=2, min_n=2, dim=x.shape[1])
    sigma_max = sigmas[0].item()
    runs = {}
    for name, denoiser in denoisers.items():
        for k in skips:
            s_k = sigmas[k].item()
            start = gaussian_teleport(x, sigma_max, s_k, mean, cov) if k else x
            out = sample_ode(denoiser, start, sigmas[k:])
            runs[name, k] = TeleportRun(out.samples, out.nfe, k, s_k, mmd2(out.samples, reference))
    return runs


__all__ = ["DenoiserGaps", "GuidedRun", "TeleportRun", "TrainedDenoiser", "denoiser_gaps", "guidance_sweep",
           "guided_run", "teleport_sweep", "train_mixture_denoiser"]
