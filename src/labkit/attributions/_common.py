"""Shared checks and the one gradient primitive every attribution method is built on.

Model modes, the generator rule and chunking come from the autograd core (:mod:`labkit.autograd`):
:func:`evaluating` evaluates a model in eval mode and leaves it as found (``.grad``, ``requires_grad``,
every submodule's mode, buffers); a ``generator`` may live on the CPU or on the input's device, numbers
are drawn on its device and then moved to the input's (``labkit.autograd.randn`` / ``rand``).

Arguments are checked once, at a public function's entry (:func:`check_model_input`, :func:`check_target`,
:mod:`labkit.checks` for numbers), never inside the chunk loops.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from labkit import autograd, checks

# Input elements per forward/backward chunk when chunk_size="auto". Measured on a 2-core CPU, one
# thread, batch 64 x 50 points through cnn(channels=(16, 32)) (benchmarks/bench_attributions.py):
# 2**16 gives 832 rows on 1x8x8 inputs (four chunks; one 3200-row pass was 1.2-1.4x slower) and 64 rows
# on 1x28x28 ones (one point a chunk; 320 rows, whose saved activations outgrow the cache, were
# 1.1-1.2x slower, more so on a busy machine). 2**17 was within 10%; 2**18 1.15-1.35x slower.
AUTO_CHUNK_ELEMENTS = 2**16


class ModelInputError(ValueError):
    """``model(x)`` failed inside torch (a wrong feature size or channel count, a device mismatch...)."""


def check_model(model: object, name: str = "model") -> None:
    """A callable; an ``nn.Module`` must hold no parameter or buffer on the ``meta`` device."""
    if not callable(model):
        raise TypeError(f"{name} must be a callable (an nn.Module or function), got {type(model).__name__}")
    if isinstance(model, nn.Module):
        for t in (*model.parameters(), *model.buffers()):
            if t.device.type == "meta":
                raise ValueError(f"{name} has parameters on the 'meta' device (shapes only, no values): "
                                 "load or initialise them first (model.to_empty(device=...) and load a state dict)")


def check_input(x: object, name: str = "x") -> torch.Tensor:
    """``x`` must be a finite floating tensor with a batch dimension, not on the ``meta`` device."""
    checks.tensor(x, name, floating=True, finite=False)
    assert isinstance(x, torch.Tensor)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape (N, ...) with N >= 1 and at least one feature dimension, "
            f"got {tuple(x.shape)}"
        )
    return checks.tensor(x, name, finite=True)


def check_model_input(model: object, x: object, name: str = "x") -> torch.Tensor:
    """:func:`check_model`, :func:`check_input` and ``x``'s dtype equal to the model's (when it is a module)."""
    check_model(model)
    x = check_input(x, name)
    return checks.same_dtype_as_model(x, model, name)


def check_image_input(model: object, x: object, name: str = "x") -> torch.Tensor:
    """:func:`check_model_input` for image batches (N, C, H, W): layer maps are read at image resolution."""
    x = check_model_input(model, x, name)
    if x.ndim != 4:
        hint = f" (for one-channel images use {name}.unsqueeze(1))" if x.ndim == 3 else ""
        raise ValueError(f"{name} must be a batch of images of shape (N, C, H, W) with a channel dimension{hint}, "
                         f"got {tuple(x.shape)}")
    return x


def check_target(target: object, n: int, device: torch.device, name: str = "target") -> torch.Tensor:
    """Return ``target`` as a LongTensor of shape (n,) on ``device`` (range against C is checked later)."""
    if isinstance(target, bool):
        raise TypeError(f"{name} must be an int or a LongTensor of shape (N,), got a bool")
    if isinstance(target, int):
        t = torch.full((n,), target, dtype=torch.long, device=device)
    elif isinstance(target, torch.Tensor):
        checks.tensor(target, name, finite=False)
        if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"{name} must be an integer tensor, got dtype {target.dtype}")
        if target.ndim == 0:
            t = target.to(device=device, dtype=torch.long).expand(n).clone()
        elif target.shape != (n,):
            raise ValueError(f"{name} must be an int or have shape (N,) = ({n},), got {tuple(target.shape)}")
        else:
            t = target.to(device=device, dtype=torch.long)
    else:
        raise TypeError(f"{name} must be an int or a LongTensor of shape (N,), got {type(target).__name__}")
    if (t < 0).any():
        raise ValueError(f"{name} must be a non-negative class index, got min {int(t.min())}")
    return t


def check_logits(out: object, rows: int, target: torch.Tensor, name: str = "target") -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != rows:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model(x) must return logits of shape (N, C) = ({rows}, C), got {shape}")
    if int(target.max()) >= out.shape[1]:
        raise ValueError(f"{name} must be < number of classes C={out.shape[1]}, got {int(target.max())}")
    return out


def forward(model: Callable[[torch.Tensor], Any], x: torch.Tensor, name: str = "x") -> Any:
    """``model(x)``, with torch's errors about the input (wrong feature size, missing channels, ...)
    turned into a :class:`ModelInputError` that names ``name`` and its shape."""
    try:
        return model(x)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as err:
        raise ModelInputError(
            f"model could not be applied to {name} of shape {tuple(x.shape)} and dtype {x.dtype}: check that "
            f"{name} has the feature size, channels and dtype the model expects (torch said: {err})"
        ) from err


def target_score(model: Callable[[torch.Tensor], Any], x: torch.Tensor, target: torch.Tensor,
                 name: str = "target") -> torch.Tensor:
    """The (N,) logits of the target classes."""
    out = check_logits(forward(model, x), x.shape[0], target, name)
    return out.gather(1, target[:, None]).squeeze(1)


@contextlib.contextmanager
def evaluating(model: object) -> Iterator[None]:
    """Evaluate ``model`` in eval mode (no dropout, no BatchNorm statistics update) and leave it as found:
    ``.grad``, ``requires_grad``, every submodule's mode and every buffer (``labkit.autograd.preserve_model``;
    parameters are never written here, so their values are not copied). Plain functions pass through."""
    if not isinstance(model, nn.Module):
        yield
        return
    with autograd.preserve_model(model, params=False), autograd.train_mode(model, False):
        yield


def input_grad(model: Callable[[torch.Tensor], Any], x: torch.Tensor,
               target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the summed target score w.r.t. ``x`` (one autograd root for the whole batch).

    Only the input is a differentiation leaf, so parameter ``.grad`` fields are never written.
    Returns (gradient shaped like x, the (N,) scores).
    """
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        score = target_score(model, xr, target)
        (g,) = torch.autograd.grad(score.sum(), xr)
    return g, score.detach()


def finite_result(out: torch.Tensor, what: str = "attributions", *, source: str = "model",
                  context: str = "") -> torch.Tensor:
    """Refuse a non-finite result (checked once, at the end): ``source`` gave NaN or infinite values
    (``context`` names the options that moved the inputs, e.g. " at x plus noise (noise=...)")."""
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{source} gave NaN or infinite {what}{context}: check that {source}'s parameters "
                         "and outputs are finite at these inputs")
    return out


def check_callable(fn: object, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], expected: str) -> bool:
    """``fn`` must be callable as ``fn(*args, **kwargs)`` (checked on its signature, nothing is run):
    otherwise a TypeError naming ``name`` and the ``expected`` signature. False when ``fn`` has no signature
    to check (some builtins): the caller then learns it from the first call."""
    if not callable(fn):
        raise TypeError(f"{name} must be a callable {expected}, got {type(fn).__name__}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: cannot tell before calling
        return False
    try:
        signature.bind(*args, **kwargs)
    except TypeError as err:
        label = getattr(fn, "__name__", type(fn).__name__)
        plain = signature.replace(parameters=[p.replace(annotation=inspect.Parameter.empty)
                                              for p in signature.parameters.values()],
                                  return_annotation=inspect.Signature.empty)
        raise TypeError(f"{name} must be a callable {expected}; {label}{plain} does not fit ({err})") from None
    return True


def channels_last_copy(x: torch.Tensor) -> torch.Tensor:
    """A copy of a 4-D batch with channels-last strides (also for C = 1, where ``.contiguous(
    memory_format=torch.channels_last)`` keeps NCHW strides and so the NCHW kernels downstream)."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    return out.copy_(x)


class PointGrads:
    """``input_grad`` for the chunks of perturbed inputs of one attribution call, in the fastest layout.

    On CPU, 4-D batches are passed channels-last: oneDNN convolutions then keep that layout and the
    max-pool / ReLU kernels run vectorised (a 2x2 max-pool is ~10x faster than on NCHW), which makes a
    forward/backward of a small CNN 1.2-1.4x faster. Values are the same up to float rounding. A model
    that cannot take such a batch (e.g. one calling ``.view`` on its activations) raises a RuntimeError;
    the chunk is then redone in the caller's layout, which the remaining chunks keep.
    """

    def __init__(self, model: Callable[[torch.Tensor], Any], x: torch.Tensor):
        self.model = model
        self.shape = tuple(x.shape)
        self.channels_last = x.ndim == 4 and x.device.type == "cpu"

    def __call__(self, pts: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            try:
                return input_grad(self.model, channels_last_copy(pts), target)[0]
            except (RuntimeError, ModelInputError):
                self.channels_last = False
        try:
            return input_grad(self.model, pts, target)[0]
        except ModelInputError as err:
            raise ModelInputError(
                f"model could not be applied to x of shape {self.shape} (evaluated at {len(pts)} perturbed copies "
                f"of its examples): check that x has the feature size, channels and dtype the model expects "
                f"(torch said: {err.__cause__})"
            ) from err.__cause__


def resolve_chunk(chunk_size: int | str, feature_numel: int) -> int:
    """Rows (perturbed inputs) per forward/backward pass."""
    if isinstance(chunk_size, str) and chunk_size == "auto":
        return max(1, AUTO_CHUNK_ELEMENTS // max(1, feature_numel))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be 'auto' or a positive int, got {chunk_size!r}")
    return chunk_size


def chunks(n_points: int, n_examples: int, rows: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield (p0, p1, e0, e1): blocks of path points / noise samples x examples of at most ``rows`` rows
    (at least one point of one example), of near-equal sizes.

    When a chunk holds every example, several points go together; otherwise each point is split
    over example blocks. Points are always visited in order, so random draws per point are reproducible
    whatever the chunk size. Blocks are :func:`labkit.autograd.even_chunks` (50 points at 32 a chunk:
    25 + 25, not 32 + 18).
    """
    if rows >= n_examples:
        for points in autograd.even_chunks(n_points, max(1, rows // n_examples)):
            yield points.start, points.stop, 0, n_examples
    else:
        blocks = autograd.even_chunks(n_examples, rows)
        for p in range(n_points):
            for examples in blocks:
                yield p, p + 1, examples.start, examples.stop


def check_positive_int(value: object, name: str) -> int:
    """A positive int (bools refused): ``TypeError`` for another type, ``ValueError`` below 1."""
    return checks.positive_int(value, name)


def check_nonneg_float(value: object, name: str) -> float:
    """A finite number >= 0 (bools, NaN and infinities refused)."""
    return checks.number(value, name, low=0.0)


def fits_dtype(value: float, name: str, dtype: torch.dtype) -> float:
    """``value`` (already a finite number) must be representable in ``dtype`` (float32 tops out near 3.4e38)."""
    if abs(value) > torch.finfo(dtype).max:
        raise ValueError(f"{name}={value} does not fit in x's dtype {dtype} (largest {torch.finfo(dtype).max})")
    return value


def check_number_or_tensor(value: object, x: torch.Tensor, name: str) -> torch.Tensor:
    """A finite number, or a finite tensor shaped like ``x``, like one example of ``x`` or a scalar,
    as a tensor shaped like ``x`` on its device and of its dtype (baselines and fill values)."""
    if isinstance(value, torch.Tensor):
        checks.tensor(value, name, finite=True)
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be a real number or a real tensor, got dtype {value.dtype}")
        if value.shape not in (x.shape, x.shape[1:], ()):
            raise ValueError(f"{name} must be a number or have shape {tuple(x.shape)} or {tuple(x.shape[1:])}, "
                             f"got {tuple(value.shape)}")
        out = value.detach().to(device=x.device, dtype=x.dtype).expand_as(x)
    elif value is None:
        raise TypeError(f"{name} must be a number or a tensor, got None")
    else:
        out = torch.full_like(x, fits_dtype(checks.number(value, name), name, x.dtype))
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} does not fit in x's dtype {x.dtype} (it overflows to infinity)")
    return out


def check_generator(generator: object, device: torch.device) -> torch.Generator | None:
    """labkit's generator rule: a ``torch.Generator`` on the CPU or on the input's ``device``, or None
    (then torch's global CPU generator). Draw with ``labkit.autograd.randn(..., generator=, device=)``."""
    generator = autograd.check_generator(generator)
    if generator is not None and generator.device.type not in ("cpu", device.type):
        raise ValueError(f"generator is on {generator.device}; it must be on the CPU or on the input's device {device}")
    return generator
