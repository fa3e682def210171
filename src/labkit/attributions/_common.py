"""Shared checks and the one gradient primitive every attribution method is built on.

Model modes, the generator rule and chunking come from the autograd core (:mod:`labkit.autograd`):
``train_mode(model, False)`` evaluates in eval mode and restores every submodule's flag; a
``generator`` may live on the CPU or on the input's device, numbers are drawn on its device and then
moved to the input's (``labkit.autograd.randn`` / ``rand``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from labkit import autograd

# Input elements per forward/backward chunk when chunk_size="auto". Measured on a 2-core CPU, one
# thread, batch 64 x 50 points through cnn(channels=(16, 32)) (benchmarks/bench_attributions.py):
# 2**16 gives 832 rows on 1x8x8 inputs (four chunks; one 3200-row pass was 1.2-1.4x slower) and 64 rows
# on 1x28x28 ones (one point a chunk; 320 rows, whose saved activations outgrow the cache, were
# 1.1-1.2x slower, more so on a busy machine). 2**17 was within 10%; 2**18 1.15-1.35x slower.
AUTO_CHUNK_ELEMENTS = 2**16


def check_model(model: object) -> None:
    if not callable(model):
        raise TypeError(f"model must be a callable (an nn.Module or function), got {type(model).__name__}")


def check_input(x: object, name: str = "x") -> torch.Tensor:
    """``x`` must be a finite floating tensor with a batch dimension."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape (N, ...) with N >= 1 and at least one feature dimension, "
            f"got {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_target(target: object, n: int, device: torch.device) -> torch.Tensor:
    """Return ``target`` as a LongTensor of shape (n,) on ``device`` (range against C is checked later)."""
    if isinstance(target, bool):
        raise TypeError("target must be an int or a LongTensor of shape (N,), got a bool")
    if isinstance(target, int):
        t = torch.full((n,), target, dtype=torch.long, device=device)
    elif isinstance(target, torch.Tensor):
        if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"target must be an integer tensor, got dtype {target.dtype}")
        if target.ndim == 0:
            t = target.to(device=device, dtype=torch.long).expand(n).clone()
        elif target.shape != (n,):
            raise ValueError(f"target must be an int or have shape (N,) = ({n},), got {tuple(target.shape)}")
        else:
            t = target.to(device=device, dtype=torch.long)
    else:
        raise TypeError(f"target must be an int or a LongTensor of shape (N,), got {type(target).__name__}")
    if (t < 0).any():
        raise ValueError(f"target must be a non-negative class index, got min {int(t.min())}")
    return t


def check_logits(out: object, rows: int, target: torch.Tensor) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != rows:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model(x) must return logits of shape (N, C) = ({rows}, C), got {shape}")
    if int(target.max()) >= out.shape[1]:
        raise ValueError(f"target must be < number of classes C={out.shape[1]}, got {int(target.max())}")
    return out


def target_score(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The (N,) logits of the target classes."""
    out = check_logits(model(x), x.shape[0], target)
    return out.gather(1, target[:, None]).squeeze(1)


def input_grad(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the summed target score w.r.t. ``x`` (one autograd root for the whole batch).

    Only the input is a differentiation leaf, so parameter ``.grad`` fields are never written.
    Returns (gradient shaped like x, the (N,) scores).
    """
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        score = target_score(model, xr, target)
        (g,) = torch.autograd.grad(score.sum(), xr)
    return g, score.detach()


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

    def __init__(self, model: nn.Module, x: torch.Tensor):
        self.model = model
        self.channels_last = x.ndim == 4 and x.device.type == "cpu"

    def __call__(self, pts: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            try:
                return input_grad(self.model, channels_last_copy(pts), target)[0]
            except RuntimeError:
                self.channels_last = False
        return input_grad(self.model, pts, target)[0]


def resolve_chunk(chunk_size: int | str, feature_numel: int) -> int:
    """Rows (perturbed inputs) per forward/backward pass."""
    if chunk_size == "auto":
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
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_nonneg_float(value: object, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    return float(value)


def check_generator(generator: object, device: torch.device) -> torch.Generator | None:
    """labkit's generator rule: a ``torch.Generator`` on the CPU or on the input's ``device``, or None
    (then torch's global CPU generator). Draw with ``labkit.autograd.randn(..., generator=, device=)``."""
    generator = autograd.check_generator(generator)
    if generator is not None and generator.device.type not in ("cpu", device.type):
        raise ValueError(f"generator is on {generator.device}; it must be on the CPU or on the input's device {device}")
    return generator
