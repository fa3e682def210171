"""Label noise for robustness experiments (SAM pillar): flip a seeded share of labels to another class."""

from __future__ import annotations

from typing import NamedTuple

import torch

from labkit.autograd import randint, randperm


class NoisyLabels(NamedTuple):
    """The labels with noise (``labels``) and the boolean mask of the changed positions (``flipped``)."""

    labels: torch.Tensor
    flipped: torch.Tensor


def noisy_labels(
    labels: torch.Tensor,
    rate: float,
    *,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
) -> NoisyLabels:
    """Return ``(noisy, flipped)``: exactly ``round(rate * N)`` labels replaced by a uniformly drawn
    *different* class (symmetric label noise, as in Foret et al., 2021, Table 4), and the boolean mask of
    the changed positions. ``labels`` is not modified; randomness comes from ``generator``, drawn on the
    generator's device and moved to the labels' (the generator rule of :mod:`labkit.autograd`).
    """
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.dtype.is_floating_point:
        raise TypeError("labels must be a 1-D integer tensor of class indices")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate!r}")
    k = int(labels.max().item()) + 1 if num_classes is None else num_classes
    if k < 2 or (len(labels) and (labels.min() < 0 or labels.max() >= k)):
        raise ValueError(f"num_classes must be >= 2 and cover every label, got {k}")
    n = len(labels)
    idx = randperm(n, generator=generator, device=labels.device)[: round(rate * n)]
    shift = randint(1, k, (len(idx),), generator=generator, device=labels.device)
    noisy = labels.clone()
    noisy[idx] = (labels[idx] + shift) % k
    flipped = torch.zeros(n, dtype=torch.bool, device=labels.device)
    flipped[idx] = True
    return NoisyLabels(noisy, flipped)
