"""Property-based checks of the core's public functions: every call either raises a ValueError/TypeError that
names the argument, or returns a finite result of the documented shape."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labkit.autograd import even_chunks, flatten, unflatten
from labkit.models import mlp
from labkit.runtime import start
from labkit.training import fit, fit_loss

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
ODD = st.one_of(st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
                st.text(max_size=3))


def raises_naming(fn, name):
    """Run ``fn``; a ValueError/TypeError must name ``name``. Returns the result or None."""
    try:
        return fn()
    except (ValueError, TypeError) as exc:
        assert name in str(exc), f"error does not name {name!r}: {exc}"
        return None


@SETTINGS
@given(seed=ODD, scale=st.one_of(st.sampled_from(["teach", "paper"]), ODD), device=st.one_of(
    st.sampled_from(["cpu", "auto"]), ODD))
def test_start_accepts_good_parameters_and_names_bad_ones(seed, scale, device):
    good = isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 and scale in ("teach", "paper") \
        and device in ("cpu", "auto")
    name = "seed" if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0) else (
        "scale" if scale not in ("teach", "paper") else "device")
    run = raises_naming(lambda: start(seed=seed, scale=scale, device=device), name)
    assert (run is not None) == good
    torch.set_num_threads(1)


@SETTINGS
@given(steps=ODD, batch_size=st.one_of(st.none(), ODD), eval_every=st.one_of(st.none(), ODD),
       checkpoint_every=st.one_of(st.none(), ODD))
def test_fit_names_each_bad_option(steps, batch_size, eval_every, checkpoint_every):
    torch.manual_seed(0)
    model = mlp(3, [4], 2)
    x, y = torch.randn(8, 3), torch.arange(8) % 2
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    names = {"steps": steps, "batch_size": batch_size, "eval_every": eval_every, "checkpoint_every": checkpoint_every}
    try:
        hist = fit(model, fit_loss(), (x, y), optimizer=opt, steps=steps, batch_size=batch_size,
                   eval_every=eval_every, checkpoint_every=checkpoint_every)
    except (ValueError, TypeError) as exc:
        assert any(n in str(exc) for n in names), f"error names none of {list(names)}: {exc}"
        return
    assert len(hist.loss) == steps and all(math.isfinite(v) for v in hist.loss)


@SETTINGS
@given(sizes=st.lists(st.integers(0, 4), min_size=1, max_size=4), extra=st.integers(-2, 2))
def test_flatten_unflatten_round_trip_or_a_clear_error(sizes, extra):
    like = [torch.randn(s, 2) for s in sizes]
    flat = flatten(like)
    assert flat.shape == (2 * sum(sizes),)
    vector = torch.randn(flat.numel() + extra)
    out = raises_naming(lambda: unflatten(vector, like), "vector")
    assert (out is not None) == (extra == 0)


@SETTINGS
@given(n=st.integers(-3, 200), size=ODD)
def test_even_chunks_cover_the_range_or_name_the_size(n, size):
    chunks = raises_naming(lambda: even_chunks(n, size), "chunk size")
    if chunks is None:
        return
    covered = [i for s in chunks for i in range(s.start, s.stop)]
    assert covered == list(range(max(n, 0)))
    assert all(s.stop - s.start <= size for s in chunks)
    lengths = [s.stop - s.start for s in chunks]
    assert not lengths or max(lengths) - min(lengths) <= len(lengths)


def test_property_settings_are_deterministic():
    assert SETTINGS.derandomize and SETTINGS.database is None
    with pytest.raises(AssertionError):
        raises_naming(lambda: (_ for _ in ()).throw(ValueError("something else")), "seed")
