"""labkit.data.digits takes any non-negative seed, the 63-bit stream seeds of a Run included."""

import pytest
import torch

from labkit.data import digits
from labkit.runtime import start


def test_digits_takes_a_run_stream_seed():
    seed = start(seed=0, device="cpu").seed_for("split")
    assert seed >= 2**32
    a, b = digits(seed=seed), digits(seed=seed)
    assert torch.equal(a.train_x, b.train_x)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        digits(seed=-1)
