"""BlockDigits and the two-digit canvas."""

from __future__ import annotations

import pytest
import torch

from labkit.attributions.data import BlockDigits, block_digits, null_patch, two_digit_canvas


def test_block_digits_layout():
    data = block_digits(seed=3)
    assert isinstance(data, BlockDigits)
    assert data.train_x.shape[1:] == (1, 16, 8) and data.train_mask.shape == data.train_x.shape
    assert set(data.train_y.tolist()) == {0, 1}
    patch = null_patch()
    for x, m in ((data.train_x, data.train_mask), (data.test_x, data.test_mask)):
        top = m[:, 0, 0, 0] == 1
        assert 0.3 < top.float().mean() < 0.7  # the digit's block is random
        assert (m.sum((1, 2, 3)) == 64).all()
        # the other block is the same fixed patch for every image
        assert torch.equal(x[top][:, 0, 8:], patch.expand(int(top.sum()), 8, 8))
        assert torch.equal(x[~top][:, 0, :8], patch.expand(int((~top).sum()), 8, 8))
    same = block_digits(seed=3)
    assert torch.equal(same.train_x, data.train_x)


def test_two_digit_canvas():
    c = two_digit_canvas(40, seed=1)
    assert c.images.shape == (40, 1, 16, 16) and c.masks.shape == (40, 2, 16, 16)
    assert (c.labels[:, 0] != c.labels[:, 1]).all()
    assert ((c.masks[:, 0] * c.masks[:, 1]).sum() == 0) and (c.masks.sum((2, 3)) == 64).all()
    outside = c.images[:, 0] * (1 - c.masks.sum(1))
    assert outside.abs().sum() == 0
    assert (c.targets.sum(1) == 2).all()
    test = two_digit_canvas(5, split="test")
    assert test.images.shape == (5, 1, 16, 16)
    with pytest.raises(ValueError, match="split"):
        two_digit_canvas(3, split="val")
