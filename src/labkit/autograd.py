"""The autograd core every pillar uses: parameters as flat vectors, the model-state guard, the generator
rule, data batches and chunks.

* :func:`resolve_params`: the parameters to differentiate, refusing another model's parameters.
* :func:`flatten` / :func:`unflatten`: parameters (or gradients) to one vector and back.
* :func:`preserve_model`: a context manager that leaves a model as it found it (parameters, ``.grad``,
  ``requires_grad``, every submodule's train/eval mode, buffers such as BatchNorm running statistics).
  :func:`train_mode` sets the mode of every submodule for a block and restores each one's flag.
* The generator rule: a ``generator`` may live on the CPU (the default, and what ``Run.generator``
  gives) or on the data's device; numbers are drawn on the generator's device and then moved to the
  data's device (:func:`randn`, :func:`rand`, :func:`randint`, :func:`randperm`, :func:`rademacher`).
* :func:`as_batches` / :func:`as_pair`: ``(inputs, targets)`` data; :func:`even_chunks`: near-equal
  chunks of a range.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]


# --- parameters ------------------------------------------------------------------------------------


def check_module(model: object, name: str = "model") -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    return model


def resolve_params(model: nn.Module, params: Sequence[torch.Tensor] | None = None) -> list[nn.Parameter]:
    """The parameters to differentiate: ``params`` (each checked to belong to ``model``, no repeats) or
    all of ``model``'s trainable parameters."""
    check_module(model)
    if params is None:
        chosen = [p for p in model.parameters() if p.requires_grad]
    else:
        if isinstance(params, torch.Tensor) or not isinstance(params, Iterable):
            raise TypeError(f"params must be a sequence of the model's parameters or None, got {type(params).__name__}")
        owned = {id(p) for p in model.parameters()}
        chosen = list(params)
        for i, p in enumerate(chosen):
            if not isinstance(p, torch.Tensor) or id(p) not in owned:
                raise ValueError(f"params[{i}] is not a parameter of model")
        if len({id(p) for p in chosen}) != len(chosen):
            raise ValueError("params lists the same parameter twice")
    if not chosen:
        raise ValueError("no parameters to differentiate: model has no trainable parameters (or params is empty)")
    return chosen


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one flat vector."""
    if not tensors:
        raise ValueError("flatten needs at least one tensor")
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Split a flat vector into views shaped like ``like``."""
    total = sum(t.numel() for t in like)
    if vector.ndim != 1 or vector.numel() != total:
        raise ValueError(f"vector must be flat with {total} entries, got shape {tuple(vector.shape)}")
    out, i = [], 0
    for t in like:
        n = t.numel()
        out.append(vector[i : i + n].view_as(t))
        i += n
    return out


def zeros_if_none(grads: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``torch.autograd.grad(..., allow_unused=True)`` gives None for unused inputs: make those zeros."""
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, like, strict=True)]


# --- the model-state guard -------------------------------------------------------------------------


@contextlib.contextmanager
def train_mode(model: nn.Module, train: bool) -> Iterator[nn.Module]:
    """Put ``model`` and every submodule in train (``True``) or eval mode for the block; restore each
    submodule's own flag afterwards (``model.train(was)`` would not: it sets all of them alike)."""
    if not isinstance(model, nn.Module):  # plain functions have no mode
        yield model
        return
    flags = [(m, m.training) for m in model.modules()]
    model.train(train)
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def preserve_model(model: nn.Module, *, params: bool = True) -> Iterator[nn.Module]:
    """Leave ``model`` as found after the block: every parameter's value (``params=True``), ``.grad`` and
    ``requires_grad``, every submodule's train/eval mode and every buffer (BatchNorm running statistics,
    ``num_batches_tracked``). Values are copied back in place, so references to the parameters stay valid.
    """
    check_module(model)
    named = list(model.named_parameters())
    saved_values = [p.detach().clone() for _, p in named] if params else None
    saved_grads = [None if p.grad is None else p.grad.detach().clone() for _, p in named]
    saved_flags = [p.requires_grad for _, p in named]
    buffers = [b for b in model.buffers() if b is not None]
    saved_buffers = [b.detach().clone() for b in buffers]
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        with torch.no_grad():
            for i, (_, p) in enumerate(named):
                if saved_values is not None and not torch.equal(p, saved_values[i]):
                    p.copy_(saved_values[i])
                p.requires_grad_(saved_flags[i])
                p.grad = saved_grads[i]
            for b, s in zip(buffers, saved_buffers, strict=True):
                if not torch.equal(b, s):
                    b.copy_(s)
        for m, flag in modes:
            m.training = flag


# --- the generator rule ----------------------------------------------------------------------------


def check_generator(generator: object, name: str = "generator") -> torch.Generator | None:
    """``generator`` must be a ``torch.Generator`` (on any device) or None."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def generator_device(generator: torch.Generator | None) -> torch.device:
    """Where ``generator`` draws: its own device, the CPU when it is None."""
    return generator.device if generator is not None else torch.device("cpu")


def _drawn(draw: Any, *args: Any, generator: torch.Generator | None, device: Any, **kwargs: Any) -> torch.Tensor:
    check_generator(generator)
    out = draw(*args, generator=generator, device=generator_device(generator), **kwargs)
    return out if device is None else out.to(device)


def randn(shape: Sequence[int], *, generator: torch.Generator | None = None, device: Any = None,
          dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard normal numbers drawn on the generator's device, then moved to ``device``."""
    return _drawn(torch.randn, tuple(shape), generator=generator, device=device, dtype=dtype)


def rand(shape: Sequence[int], *, generator: torch.Generator | None = None, device: Any = None,
         dtype: torch.dtype | None = None) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device, then moved to ``device``."""
    return _drawn(torch.rand, tuple(shape), generator=generator, device=device, dtype=dtype)


def randint(low: int, high: int, shape: Sequence[int], *, generator: torch.Generator | None = None,
            device: Any = None) -> torch.Tensor:
    """Integers in ``[low, high)`` drawn on the generator's device, then moved to ``device``."""
    return _drawn(torch.randint, low, high, tuple(shape), generator=generator, device=device)


def randperm(n: int, *, generator: torch.Generator | None = None, device: Any = None) -> torch.Tensor:
    """A permutation of ``range(n)`` drawn on the generator's device, then moved to ``device``."""
    return _drawn(torch.randperm, n, generator=generator, device=device)


def rademacher(shape: Sequence[int], *, generator: torch.Generator | None = None, device: Any = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Independent +-1 entries (the probes of Hutchinson's estimator)."""
    return randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1


# --- data ------------------------------------------------------------------------------------------


def _is_pair(obj: object) -> bool:
    return isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(t, torch.Tensor) for t in obj)


def as_batches(data: Any, name: str = "data") -> list[Batch]:
    """Normalise ``data`` to a non-empty list of ``(inputs, targets)`` batches.

    ``data`` is one ``(inputs, targets)`` pair of tensors or an iterable of such pairs (a list, a
    ``DataLoader``...). Empty batches are dropped; no batch left is a ``ValueError``.
    """
    if _is_pair(data):
        batches = [tuple(data)]
    else:
        if isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
            raise TypeError(f"{name} must be an (inputs, targets) pair of tensors or an iterable of such pairs, "
                            f"got {type(data).__name__}")
        batches = []
        for i, batch in enumerate(data):
            if not _is_pair(batch):
                raise TypeError(f"{name} batch {i} must be an (inputs, targets) pair of tensors, "
                                f"got {type(batch).__name__}")
            batches.append(tuple(batch))
    batches = [b for b in batches if len(b[0]) > 0]
    if not batches:
        raise ValueError(f"{name} is empty: expected at least one non-empty (inputs, targets) batch")
    for i, (x, y) in enumerate(batches):
        if len(x) != len(y):
            raise ValueError(f"{name} batch {i}: inputs have {len(x)} rows but targets have {len(y)}")
    return batches  # type: ignore[return-value]


def as_pair(data: Any, name: str = "data") -> Batch:
    """One non-empty ``(inputs, targets)`` pair of tensors with as many targets as inputs."""
    if not _is_pair(data):
        raise TypeError(f"{name} must be an (inputs, targets) pair of tensors, got {type(data).__name__}")
    x, y = data
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"{name} must be non-empty with as many targets as inputs, got {len(x)} and {len(y)}")
    return x, y


def even_chunks(n: int, size: int) -> list[slice]:
    """Split ``range(n)`` into the fewest slices of at most ``size`` items, of near-equal lengths
    (50 items at 32 a chunk: 25 + 25, not 32 + 18)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"chunk size must be a positive int, got {size!r}")
    if n <= 0:
        return []
    blocks = -(-n // size)
    per = -(-n // blocks)
    return [slice(i, min(n, i + per)) for i in range(0, n, per)]


__all__ = [
    "as_batches", "as_pair", "check_generator", "check_module", "even_chunks", "flatten", "generator_device",
    "preserve_model", "rademacher", "rand", "randint", "randn", "randperm", "resolve_params", "train_mode",
    "unflatten", "zeros_if_none",
]
