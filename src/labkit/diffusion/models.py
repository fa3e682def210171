"""A tiny conditional denoiser (EDM preconditioning) for the diffusion pillar.

Every denoiser is called as ``model(x, sigma, label=None)`` and returns the denoised estimate
``D(x, sigma) ~ E[x0 | x]`` for ``x = x0 + sigma * eps``. ``label=None`` (or the null class,
index ``num_classes``) gives the unconditional branch, so one network trained with label dropout
serves both branches of classifier-free guidance (Ho & Salimans, 2022).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from labkit import checks
from labkit.diffusion._checks import samples


def noise_embedding(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Fourier features of ``c_noise = log(sigma) / 4`` (N, size) (Karras et al., 2022)."""
    half = size // 2
    freqs = torch.exp(torch.linspace(0, math.log(64.0), half, device=sigma.device, dtype=sigma.dtype))
    arg = (sigma.clamp_min(1e-12).log() / 4)[:, None] * freqs[None]
    return torch.cat([arg.sin(), arg.cos()], dim=1)


def _sigma_vector(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    if isinstance(sigma, torch.Tensor):
        checks.tensor(sigma, "sigma", finite=False)
        if sigma.dtype == torch.bool or sigma.is_complex():
            raise TypeError(f"sigma must hold real numbers, got dtype {sigma.dtype}")
    elif isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma must be a number or a tensor, got {type(sigma).__name__}")
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    if s.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a scalar or of shape ({x.shape[0]},), got {tuple(s.shape)}")
    if (s <= 0).any() or not torch.isfinite(s).all():
        raise ValueError("sigma must be finite and > 0")
    return s


class MLPDenoiser(nn.Module):
    """An MLP denoiser for flat data (N, dim) with EDM preconditioning
    ``D = c_skip x + c_out F(c_in x, c_noise, label)`` (Karras et al., 2022, https://arxiv.org/abs/2206.00364)
    and a label embedding with a null class for label dropout."""

    def __init__(
        self,
        dim: int = 2,
        num_classes: int = 0,
        *,
        hidden: int = 128,
        depth: int = 3,
        embed: int = 32,
        sigma_data: float = 1.0,
    ):
        super().__init__()
        for value, name in ((dim, "dim"), (hidden, "hidden"), (depth, "depth")):
            checks.positive_int(value, name)
        checks.integer(num_classes, "num_classes", low=0)
        checks.integer(embed, "embed", low=2)
        if embed % 2:
            raise ValueError(f"embed must be even (sine and cosine features), got {embed}")
        sigma_data = checks.number(sigma_data, "sigma_data", low=0, low_open=True)
        self.dim, self.num_classes, self.embed, self.sigma_data = dim, num_classes, embed, float(sigma_data)
        self.label_embedding = nn.Embedding(num_classes + 1, embed) if num_classes > 0 else None
        layers: list[nn.Module] = []
        width = dim + embed + (embed if num_classes > 0 else 0)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def _labels(self, label: torch.Tensor | int | None, n: int, device: torch.device) -> torch.Tensor | None:
        if self.label_embedding is None:
            if label is not None:
                raise ValueError("this denoiser is unconditional (num_classes=0): label must be None")
            return None
        if label is None:
            return torch.full((n,), self.num_classes, dtype=torch.long, device=device)
        if isinstance(label, bool) or (isinstance(label, torch.Tensor) and label.dtype == torch.bool):
            raise TypeError("label must be an int or an integer tensor, got a bool")
        if isinstance(label, torch.Tensor):
            checks.tensor(label, "label", finite=False)
        elif not isinstance(label, int):
            raise TypeError(f"label must be an int, an integer tensor or None, got {type(label).__name__}")
        lab = torch.as_tensor(label, device=device)
        if lab.is_floating_point() or lab.is_complex():
            raise TypeError("label must be an int or an integer tensor")
        lab = lab.long().expand(n) if lab.ndim == 0 else lab.long()
        if lab.shape != (n,) or ((lab < 0) | (lab > self.num_classes)).any():
            raise ValueError(
                f"label must hold {n} values in 0..{self.num_classes} ({self.num_classes} = null)"
            )
        return lab

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor | float, label: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        samples(x, "x", dim=self.dim, model=self)
        shape = x.shape
        flat = x.reshape(shape[0], -1)
        s = _sigma_vector(sigma, flat)
        sd2 = self.sigma_data**2
        c_in = 1 / (s**2 + sd2).sqrt()
        c_skip = sd2 / (s**2 + sd2)
        c_out = s * self.sigma_data / (s**2 + sd2).sqrt()
        parts = [flat * c_in[:, None], noise_embedding(s, self.embed)]
        lab = self._labels(label, shape[0], x.device)
        if lab is not None:
            parts.append(self.label_embedding(lab))
        out = c_skip[:, None] * flat + c_out[:, None] * self.net(torch.cat(parts, dim=1))
        return out.reshape(shape)
