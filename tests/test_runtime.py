import random

import numpy as np
import pytest
import torch

from labkit.runtime import check_scale, make_generator, pick_device, setup


def test_setup_seeds_everything_the_same_way():
    setup(123)
    first = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    setup(123)
    second = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2])
    setup(124)
    assert not torch.equal(torch.rand(3), second[2])


def test_setup_returns_device_and_sets_one_thread_on_cpu():
    before = torch.get_num_threads()
    try:
        device = setup(0, "cpu")
        assert device == torch.device("cpu")
        assert torch.get_num_threads() == 1
        setup(0, "cpu", threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_auto_device_follows_cuda_availability():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected
    assert pick_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")


@pytest.mark.parametrize("bad", ["gpu0", "tpu"])
def test_unknown_device_names_the_argument(bad):
    with pytest.raises(ValueError, match="device must be"):
        pick_device(bad)


@pytest.mark.parametrize("kwargs, match", [
    ({"seed": -1}, "seed must be"),
    ({"seed": 1.5}, "seed must be"),
    ({"seed": 0, "threads": 0}, "threads must be"),
])
def test_bad_setup_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        setup(**kwargs)


def test_scale_check_and_generator():
    assert check_scale("teach") == "teach"
    with pytest.raises(ValueError, match="scale must be one of"):
        check_scale("huge")
    assert torch.equal(torch.rand(4, generator=make_generator(7)), torch.rand(4, generator=make_generator(7)))
