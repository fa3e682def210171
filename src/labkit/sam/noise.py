"""Label noise for robustness experiments (SAM pillar): flip a seeded share of labels to another class."""

from __future__ import annotations

import torch


def noisy_labels(
    labels: torch.Tensor,
    rate: float,
    *,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(noisy, flipped)``: exactly ``round(rate * N)`` labels replaced by a uniformly drawn
    *different* class (symmetric label noise, as in Foret et al., 2021, Table 4), and the boolean mask of
    the changed positions. ``labels`` is not modified; randomness comes from ``generator`` (on the CPU).
    """
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.dtype.is_floating_point:
        raise TypeError("labels must be a 1-D integer tensor of class indices")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate!r}")
    k = int(labels.max().item()) + 1 if num_classes is None else num_classes
    if k < 2 or (len(labels) and (labels.min() < 0 or labels.max() >= k)):
        raise ValueError(f"num_classes must be >= 2 and cover every label, got {k}")
    n = len(labels)
    chosen = torch.randperm(n, generator=generator)[: round(rate * n)]
    shift = torch.randint(1, k, (len(chosen),), generator=generator)
    noisy = labels.clone()
    idx = chosen.to(labels.device)
    noisy[idx] = (labels[idx] + shift.to(labels.device)) % k
    flipped = torch.zeros(n, dtype=torch.bool, device=labels.device)
    flipped[idx] = True
    return noisy, flipped
