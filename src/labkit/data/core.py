"""A train/test split container and scikit-learn's bundled 8x8 digits as tensors."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch


@dataclass
class Split:
    """Tensors of a fixed train/test split. ``to(device)`` moves every tensor field."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def to(self, device: str | torch.device) -> Split:
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)

    @property
    def num_classes(self) -> int:
        return int(torch.cat([self.train_y, self.test_y]).max().item()) + 1

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(train={tuple(self.train_x.shape)}, test={tuple(self.test_x.shape)}, "
                f"device={self.train_x.device})")


def digits(
    *,
    test_fraction: float = 0.25,
    seed: int = 0,
    image: bool = False,
    classes: list[int] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Split:
    """scikit-learn's 1797 8x8 handwritten digits, pixels scaled to [0, 1], a stratified seeded split.

    ``image=True`` gives shape (N, 1, 8, 8), else (N, 64). ``classes`` keeps a subset of digits and
    relabels them 0..len(classes)-1 in the given order. Bundled with scikit-learn: no download.
    ``seed`` is any non-negative int (a ``Run.seed_for`` stream seed too; scikit-learn gets it mod 2**32).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    bunch = load_digits()
    x = bunch.data.astype(np.float32) / 16.0
    y = bunch.target.astype(np.int64)
    if classes is not None:
        classes = list(classes)
        if len(classes) < 2 or len(set(classes)) != len(classes) or not all(0 <= c <= 9 for c in classes):
            raise ValueError(f"classes must be at least two distinct digits in 0..9, got {classes!r}")
        relabel = np.full(10, -1, dtype=np.int64)
        relabel[classes] = np.arange(len(classes))
        keep = relabel[y] >= 0
        x, y = x[keep], relabel[y[keep]]
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed % 2**32, stratify=y)
    shape = (-1, 1, 8, 8) if image else (-1, 64)

    def as_x(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).reshape(shape).to(device=device, dtype=dtype)

    def as_y(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(device)

    return Split(as_x(x_tr), as_y(y_tr), as_x(x_te), as_y(y_te))
