"""Label noise for robustness experiments (SAM pillar): flip a seeded share of labels to another class."""

from __future__ import annotations

from typing import NamedTuple

import torch

from labkit import checks
from labkit.autograd import check_generator, randint, randperm


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
    ``num_classes`` defaults to ``labels.max() + 1``; empty ``labels`` are an error.
    """
    if (not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.is_complex()
            or labels.dtype == torch.bool):
        raise TypeError("labels must be a 1-D integer tensor of class indices, got "
                        f"{getattr(labels, 'dtype', type(labels).__name__)}")
    checks.tensor(labels, "labels", ndim=1)
    if labels.numel() == 0:
        raise ValueError("labels is empty: noisy_labels needs at least one label")
    rate = checks.number(rate, "rate", low=0, high=1)
    check_generator(generator)
    if num_classes is not None:
        checks.integer(num_classes, "num_classes", low=2)
    if int(labels.min()) < 0:
        raise ValueError(f"labels must be class indices >= 0, got {int(labels.min())}")
    k = int(labels.max().item()) + 1 if num_classes is None else num_classes
    if k < 2 or labels.max() >= k:
        raise ValueError(f"num_classes must be >= 2 and cover every label, got {k}")
    n = len(labels)
    idx = randperm(n, generator=generator, device=labels.device)[: round(rate * n)]
    shift = randint(1, k, (len(idx),), generator=generator, device=labels.device)
    noisy = labels.clone()
    noisy[idx] = (labels[idx] + shift) % k
    flipped = torch.zeros(n, dtype=torch.bool, device=labels.device)
    flipped[idx] = True
    return NoisyLabels(noisy, flipped)
