"""labkit.sam.noise.noisy_labels: the label noise used by the SAM notebooks."""

from __future__ import annotations

import pytest
import torch

from labkit.sam.noise import noisy_labels


def test_exact_share_flipped_to_a_different_class_and_seeded():
    y = torch.arange(200) % 10
    noisy, flipped = noisy_labels(y, 0.3, generator=torch.Generator().manual_seed(0))
    assert int(flipped.sum()) == 60
    assert torch.equal(flipped, noisy != y)  # every chosen label really changed, no other did
    assert noisy.min() >= 0 and noisy.max() < 10
    again, _ = noisy_labels(y, 0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again) and torch.equal(y, torch.arange(200) % 10)
    none, mask = noisy_labels(y, 0.0)
    assert torch.equal(none, y) and not mask.any()


def test_new_classes_are_spread_over_the_other_classes():
    y = torch.zeros(3000, dtype=torch.long)
    noisy, _ = noisy_labels(y, 1.0, num_classes=4, generator=torch.Generator().manual_seed(1))
    counts = torch.bincount(noisy, minlength=4)
    assert counts[0] == 0 and all(abs(int(c) - 1000) < 120 for c in counts[1:])


def test_errors():
    y = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="rate"):
        noisy_labels(y, 1.5)
    with pytest.raises(TypeError, match="labels"):
        noisy_labels(y.float(), 0.1)
    with pytest.raises(ValueError, match="num_classes"):
        noisy_labels(y, 0.1, num_classes=2)


def test_result_is_a_named_tuple_that_still_unpacks():
    y = torch.arange(50) % 5
    out = noisy_labels(y, 0.2, generator=torch.Generator().manual_seed(1))
    noisy, flipped = out
    assert out.labels is noisy and out.flipped is flipped and int(flipped.sum()) == 10
