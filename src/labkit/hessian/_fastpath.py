"""The one place labkit calls a private torch internal: a vector-Jacobian product that skips
``torch.autograd.grad``'s Python-side checks.

``torch.autograd.grad`` validates its arguments in Python and then hands the work to
``torch.autograd.graph._engine_run_backward``. For the cached Hessian-vector product of a small model on
one CPU thread those checks cost about 10% of the product, so :func:`vjp` calls the engine function
directly when

- the switch is on: ``ENABLED`` (environment variable ``LABKIT_FAST_HVP``, on unless ``0``; change it at
  run time with :func:`use_fast_path`),
- this torch has the function, and
- no argument overrides torch functions (tensor subclasses such as ``torch.func`` wrappers).

Otherwise it is plain ``torch.autograd.grad``, bit for bit the same numbers (a test checks it).
``benchmarks/bench_hessian.py`` times both routes side by side.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import torch
from torch.overrides import has_torch_function

try:  # the function torch.autograd.grad hands its work to, after its Python-side argument checks
    from torch.autograd.graph import _engine_run_backward
except ImportError:  # pragma: no cover - other torch versions: the public route
    _engine_run_backward = None

ENABLED: bool = os.environ.get("LABKIT_FAST_HVP", "1").strip() != "0"
AVAILABLE: bool = _engine_run_backward is not None


def vjp(
    outputs: Sequence[torch.Tensor],
    inputs: Sequence[torch.Tensor],
    grad_outputs: Sequence[torch.Tensor],
    *,
    retain_graph: bool,
) -> tuple[torch.Tensor | None, ...]:
    """``torch.autograd.grad(outputs, inputs, grad_outputs, retain_graph=..., allow_unused=True)``.

    The caller guarantees plain tensors and ``grad_outputs`` shaped and typed like ``outputs``. Unused
    inputs give ``None``.
    """
    outputs, inputs, grad_outputs = tuple(outputs), tuple(inputs), tuple(grad_outputs)
    if not ENABLED or _engine_run_backward is None or has_torch_function(outputs + inputs + grad_outputs):
        return torch.autograd.grad(outputs, inputs, grad_outputs, retain_graph=retain_graph, allow_unused=True)
    return _engine_run_backward(outputs, grad_outputs, retain_graph, False, inputs, True, accumulate_grad=False)


@contextlib.contextmanager
def use_fast_path(enabled: bool) -> Iterator[None]:
    """Switch the fast path on or off for a block (the benchmark times both routes)."""
    global ENABLED
    was, ENABLED = ENABLED, bool(enabled)
    try:
        yield
    finally:
        ENABLED = was
