"""BlockDigits (a BlockMNIST analogue from scikit-learn's 8x8 digits) and a two-digit canvas.

BlockMNIST (Shah, Jain & Netrapalli, 2021, https://arxiv.org/abs/2102.12781) stacks two blocks: one
holds the digit (the discriminative block), the other a fixed "null" patch identical for every image;
which block holds the digit is random. Here each block is an 8x8 digit-sized square.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from labkit import checks
from labkit.data.core import Split, digits


def _check_dtype(dtype: object) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return dtype


@dataclass
class BlockDigits(Split):
    """A Split of (N, 1, 16, 8) images plus masks (N, 1, 16, 8) of the block that holds the digit.

    Not frozen: it extends the core's ``labkit.data.Split`` (a frozen dataclass cannot extend it)."""

    train_mask: torch.Tensor = None  # type: ignore[assignment]
    test_mask: torch.Tensor = None  # type: ignore[assignment]


def null_patch(value: float = 1.0) -> torch.Tensor:
    """The fixed non-discriminative 8x8 patch: a hollow square (the same for every image and class)."""
    value = checks.number(value, "value", low=-torch.finfo(torch.float32).max, high=torch.finfo(torch.float32).max)
    p = torch.zeros(8, 8)
    p[1:7, 1] = p[1:7, 6] = p[1, 1:7] = p[6, 1:7] = value
    return p


def _blocks(x: torch.Tensor, top: torch.Tensor, patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.shape[0]
    img = torch.zeros(n, 1, 16, 8, dtype=x.dtype)
    mask = torch.zeros(n, 1, 16, 8, dtype=x.dtype)
    pt = patch.to(x.dtype)
    for i in range(n):
        d, o = (slice(0, 8), slice(8, 16)) if top[i] else (slice(8, 16), slice(0, 8))
        img[i, 0, d] = x[i, 0]
        img[i, 0, o] = pt
        mask[i, 0, d] = 1.0
    return img, mask


def block_digits(
    *,
    classes: tuple[int, ...] = (0, 1),
    test_fraction: float = 0.25,
    seed: int = 0,
    patch_value: float = 1.0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> BlockDigits:
    """BlockDigits: digits of ``classes`` (relabelled 0..k-1) in the top or bottom 8x8 block of a 16x8
    image, a fixed hollow-square patch in the other block. The block is drawn per image from ``seed``.
    Pixels in [0, 1]; ``train_mask``/``test_mask`` mark the digit block."""
    checks.integer(seed, "seed", low=0)
    test_fraction = checks.number(test_fraction, "test_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
    _check_dtype(dtype)
    largest = min(torch.finfo(dtype).max, torch.finfo(torch.float32).max)
    patch_value = checks.number(patch_value, "patch_value", low=-largest, high=largest)
    base = digits(test_fraction=test_fraction, seed=seed, image=True, classes=list(classes), dtype=dtype)
    rng = np.random.default_rng(seed)
    patch = null_patch(patch_value)
    tr_top = torch.from_numpy(rng.random(len(base.train_x)) < 0.5)
    te_top = torch.from_numpy(rng.random(len(base.test_x)) < 0.5)
    tr, trm = _blocks(base.train_x, tr_top, patch)
    te, tem = _blocks(base.test_x, te_top, patch)
    return BlockDigits(tr, base.train_y, te, base.test_y, trm, tem).to(device)


@dataclass(frozen=True)
class Canvas:
    """Two-digit canvases: ``images`` (N, 1, 16, 16), ``labels`` (N, 2) distinct classes (left-to-right
    in the order placed), ``targets`` (N, 10) multi-hot, ``masks`` (N, 2, 16, 16) of each digit's square."""

    images: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor
    masks: torch.Tensor

    def to(self, device: str | torch.device) -> Canvas:
        return Canvas(*(t.to(device) for t in (self.images, self.labels, self.targets, self.masks)))


def two_digit_canvas(
    n: int,
    *,
    split: str = "train",
    seed: int = 0,
    data_seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Canvas:
    """``n`` 16x16 canvases, each with two digits of different classes in two distinct random quadrants.

    Digits come from the ``split`` ("train" or "test") part of ``labkit.data.digits(seed=data_seed)``, so
    train and test canvases never share a digit image. For localization: each class's attribution
    should fall inside its own digit's quadrant (``masks``).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    checks.positive_int(n, "n")
    checks.integer(seed, "seed", low=0)
    checks.integer(data_seed, "data_seed", low=0)
    _check_dtype(dtype)
    base = digits(seed=data_seed, image=True, dtype=dtype)
    x, y = (base.train_x, base.train_y) if split == "train" else (base.test_x, base.test_y)
    rng = np.random.default_rng(seed)
    images = torch.zeros(n, 1, 16, 16, dtype=dtype)
    masks = torch.zeros(n, 2, 16, 16, dtype=dtype)
    labels = torch.zeros(n, 2, dtype=torch.long)
    for i in range(n):
        a = int(rng.integers(len(x)))
        b = int(rng.integers(len(x)))
        while int(y[b]) == int(y[a]):
            b = int(rng.integers(len(x)))
        quads = rng.choice(4, size=2, replace=False)
        for j, (idx, q) in enumerate(zip((a, b), quads, strict=True)):
            r, c = 8 * (int(q) // 2), 8 * (int(q) % 2)
            images[i, 0, r : r + 8, c : c + 8] = x[idx, 0]
            masks[i, j, r : r + 8, c : c + 8] = 1.0
            labels[i, j] = y[idx]
    targets = torch.zeros(n, 10, dtype=dtype)
    targets.scatter_(1, labels, 1.0)
    return Canvas(images, labels, targets, masks).to(device)
