"""The operator protocol the curvature algorithms take, and two public operators to pass them.

Every algorithm of this pillar (``lanczos``, ``top_eigenvalues``, ``hutchinson_trace``,
``spectral_density``) works on a symmetric linear operator given by :class:`Operator`: ``shape``
``(P, P)``, ``numel`` ``P``, the ``dtype`` and ``device`` its products run in, and ``matvec(v)`` for a
flat vector ``v`` of length ``P`` (as in curvlinops and hessian-eigenthings). ``HessianOperator`` and
``GGNOperator`` are such operators; :class:`DenseOperator` wraps a materialised matrix and
:class:`LambdaOperator` any function ``v -> A v``, for tests, teaching and users' own operators.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

from labkit import checks


@runtime_checkable
class Operator(Protocol):
    """A symmetric ``numel x numel`` linear operator acting on flat vectors."""

    @property
    def shape(self) -> tuple[int, int]: ...

    @property
    def numel(self) -> int: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def matvec(self, v: torch.Tensor) -> torch.Tensor: ...


class LambdaOperator:
    """An operator from a function: ``LambdaOperator(fn, numel, dtype=..., device=...)``, ``op.matvec(v) = fn(v)``.

    ``fn`` takes a flat vector of length ``numel`` in ``dtype`` on ``device`` and returns ``A v`` of the same
    length. ``op @ v`` casts a floating ``v`` of another dtype or device to them and returns the product in ``v``'s
    dtype (as ``HessianOperator`` does); an integer ``v`` is a ``TypeError``, a ``(numel, m)`` matrix is applied
    column by column. ``matvecs`` counts the products.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        numel: int,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ):
        if not callable(fn):
            raise TypeError(f"fn must be callable as fn(v) -> A v, got {type(fn).__name__}")
        checks.positive_int(numel, "numel")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.fn = fn
        self.numel = numel
        self.dtype = dtype
        self.device = torch.device(device)
        self.matvecs = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.numel, self.numel)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``fn(v)`` for a flat floating vector ``v`` with finite entries (an integer vector is a ``TypeError``)."""
        from labkit.hessian._inputs import flat_vector

        flat_vector(v, self.numel, "v")
        self.matvecs += 1
        if v.dtype == self.dtype and v.device == self.device:
            return self.fn(v)
        out = self.fn(v.to(device=self.device, dtype=self.dtype))
        return out.to(v.dtype) if isinstance(out, torch.Tensor) else out

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        if isinstance(v, torch.Tensor) and v.ndim == 2:
            if v.shape[0] != self.numel:
                raise ValueError(f"vectors must have shape ({self.numel}, m), got {tuple(v.shape)}")
            return torch.stack([self.matvec(v[:, j]) for j in range(v.shape[1])], dim=1)
        return self.matvec(v)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(numel={self.numel}, dtype={self.dtype}, device={self.device})"


class DenseOperator(LambdaOperator):
    """A materialised symmetric matrix as an operator: ``DenseOperator(matrix).matvec(v) = matrix @ v``."""

    def __init__(self, matrix: torch.Tensor):
        if not isinstance(matrix, torch.Tensor):
            raise TypeError(f"matrix must be a torch.Tensor, got {type(matrix).__name__}")
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
            raise ValueError(f"matrix must be a non-empty square matrix, got shape {tuple(matrix.shape)}")
        if not matrix.is_floating_point():
            raise TypeError(f"matrix must be floating point, got {matrix.dtype}")
        checks.tensor(matrix, "matrix")
        self.matrix = matrix
        super().__init__(self._product, matrix.shape[0], dtype=matrix.dtype, device=matrix.device)

    def _product(self, v: torch.Tensor) -> torch.Tensor:
        return self.matrix @ v

    def to_dense(self) -> torch.Tensor:
        return self.matrix


_MEMBERS = ("shape", "numel", "dtype", "device", "matvec")  # the members of Operator


def as_operator(op: Any, name: str = "op") -> Operator:
    """``op`` checked against :class:`Operator`. An object with only ``numel`` and ``matvec`` (what the
    algorithms accepted before the protocol) is wrapped in a :class:`LambdaOperator` (its ``dtype`` and
    ``device`` if it has them, else float64 on the CPU, as before) with a ``DeprecationWarning``; anything
    else is a ``TypeError``."""
    if all(hasattr(op, member) for member in _MEMBERS) and callable(op.matvec):  # isinstance(op, Operator), 30x faster
        return op
    if callable(getattr(op, "matvec", None)) and hasattr(op, "numel") and not isinstance(op, torch.Tensor):
        # the one place that reads optional attributes: the duck type of the earlier releases
        warnings.warn(
            f"{name} is not an Operator (shape, numel, dtype, device, matvec): wrap it as "
            "LambdaOperator(fn, numel, dtype=..., device=...)",
            DeprecationWarning,
            stacklevel=3,
        )
        dtype = getattr(op, "dtype", torch.float64)
        return LambdaOperator(op.matvec, int(op.numel), dtype=dtype, device=getattr(op, "device", "cpu"))
    raise TypeError(
        f"{name} must be an operator with shape, numel, dtype, device and matvec(v) (HessianOperator, "
        f"DenseOperator(matrix), LambdaOperator(fn, numel)), got {type(op).__name__}"
    )


__all__ = ["DenseOperator", "LambdaOperator", "Operator", "as_operator"]
