"""Noise-level schedules in the sigma (variance-exploding) parameterisation ``x = x0 + sigma * eps``."""

from __future__ import annotations

import torch

from labkit import checks


def karras_sigmas(
    steps: int,
    *,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    append_zero: bool = True,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The EDM schedule of Karras et al. (2022), eq. 5: ``steps`` levels from ``sigma_max`` down to
    ``sigma_min``, evenly spaced in ``sigma^(1/rho)``, followed by a final 0 (``append_zero``).

    Karras, Aittala, Aila, Laine, *Elucidating the Design Space of Diffusion-Based Generative Models*,
    NeurIPS 2022, https://arxiv.org/abs/2206.00364.
    """
    checks.positive_int(steps, "steps")
    sigma_min = checks.number(sigma_min, "sigma_min", low=0, low_open=True)
    sigma_max = checks.number(sigma_max, "sigma_max", low=0, low_open=True)
    if not sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    rho = checks.number(rho, "rho", low=0, low_open=True)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if steps == 1:
        sig = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
        lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
        sig = (hi + ramp * (lo - hi)) ** rho
    if append_zero:
        sig = torch.cat([sig, sig.new_zeros(1)])
    return sig.to(device=device, dtype=dtype)


def check_sigmas(sigmas: torch.Tensor | list[float]) -> torch.Tensor:
    """Validate a sampling schedule: 1-D, at least two levels, finite, >= 0, strictly decreasing."""
    if isinstance(sigmas, torch.Tensor):
        checks.tensor(sigmas, "sigmas", finite=False)
    elif not isinstance(sigmas, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in sigmas):
        raise TypeError(f"sigmas must be a 1-D tensor or a list of numbers, got {type(sigmas).__name__}")
    s = torch.as_tensor(sigmas)
    if s.dtype == torch.bool or s.is_complex():
        raise TypeError(f"sigmas must hold real numbers, got dtype {s.dtype}")
    if s.ndim != 1 or s.numel() < 2:
        raise ValueError(f"sigmas must be a 1-D tensor with at least two noise levels, got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all() or (s < 0).any():
        raise ValueError("sigmas must be finite and >= 0")
    if not (s[1:] < s[:-1]).all():
        raise ValueError("sigmas must be strictly decreasing (highest noise first)")
    return s
