"""Curvature as a linear operator: Hessian- and Gauss-Newton-vector products of the mean loss.

The operators act on flat vectors of length ``op.numel`` (parameters concatenated in ``op.params``
order), like hessian-eigenthings / curvlinops. They never read or write the caller's ``param.grad``
and never change parameters or buffers: only ``torch.autograd.grad`` / ``torch.func`` are used, except that
the cached product's vector-Jacobian product may take the measured private fast path of
:mod:`labkit.hessian._fastpath` (off with ``LABKIT_FAST_HVP=0``; same numbers either way). Parameters,
batches, flat vectors and model modes come from the autograd core (:mod:`labkit.autograd`); every forward
pass runs on copies of the model's buffers (:func:`labkit.hessian._inputs.run_model`), so ``train_mode=True``
means batch statistics and active dropout, and never an update of the caller's BatchNorm running statistics
(the same as ``exact_hessian``, which works on a copy of the model).

Reference for Hessian-vector products: Pearlmutter, *Fast Exact Multiplication by the Hessian*,
Neural Computation 1994.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from labkit.autograd import as_batches, flatten, resolve_params, train_mode, unflatten, zeros_if_none
from labkit.hessian import _inputs
from labkit.hessian._fastpath import vjp

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]

BACKENDS = ("double_backward", "double_backward_fresh", "func")

# names this module exported before the autograd core existed (as_batches, resolve_params, flatten,
# unflatten, model_mode, vjp): the core's functions, and the fast path's vjp, under their old names
model_mode = train_mode


def checked_loss(loss_fn: LossFn, outputs: torch.Tensor, targets: torch.Tensor, name: str = "data") -> torch.Tensor:
    """``loss_fn(outputs, targets)``, which must be a scalar; targets the loss cannot take (a class index out of
    range, a wrong dtype) are a ``ValueError`` naming ``name``'s targets, with the loss's own message attached."""
    try:
        loss = loss_fn(outputs, targets)
    except (IndexError, RuntimeError) as exc:
        text = str(exc)
        if not isinstance(exc, IndexError) and "target" not in text.lower():
            raise  # not about the targets: the loss's own error
        raise ValueError(f"loss_fn cannot take the model's outputs (shape {tuple(outputs.shape)}) with {name} "
                         f"targets (shape {tuple(targets.shape)}, dtype {targets.dtype}): "
                         f"{text.splitlines()[0] if text else type(exc).__name__}") from exc
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a scalar tensor (mean loss of the batch), got {shape}")
    return loss


class CurvatureOperator:
    """Base class: a symmetric ``numel x numel`` operator on flat vectors (``op @ v``, ``op.matvec(v)``).

    It satisfies :class:`labkit.hessian.protocol.Operator` (``shape``, ``numel``, ``dtype``, ``device``,
    ``matvec``). A subclass implements ``_matvec(v)``; products run with the model in the operator's
    mode (eval unless ``train_mode=True``, each submodule's mode restored) unless the subclass sets
    ``runs_model = False`` (its products only traverse a graph built earlier: no forward pass).
    """

    runs_model: bool = True
    model: nn.Module
    params: list[nn.Parameter]
    numel: int

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Any,
        *,
        params: Sequence[nn.Parameter] | None = None,
        train_mode: bool = False,
    ):
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}")
        if not isinstance(train_mode, bool):
            raise TypeError(f"train_mode must be a bool, got {type(train_mode).__name__}")
        self.model = model
        self.loss_fn = loss_fn
        self.params = resolve_params(model, params)
        _inputs.finite_params(model, self.params)
        self.batches = _inputs.batches(data, model)
        self.train_mode = train_mode
        self.numel = sum(p.numel() for p in self.params)
        self.num_examples = sum(len(x) for x, _ in self.batches)
        self.weights = [len(x) / self.num_examples for x, _ in self.batches]
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        self.matvecs = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.numel, self.numel)

    def _batch(self, i: int) -> Batch:
        x, y = self.batches[i]
        return x.to(self.device), y.to(self.device)

    def _check_vector(self, v: torch.Tensor) -> torch.Tensor:
        v = _inputs.flat_vector(v, self.numel, "v")
        return v.to(device=self.device, dtype=self.dtype).contiguous()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's outputs on copies of its buffers (train-mode BatchNorm leaves the caller's stats alone)."""
        return _inputs.run_model(self.model, x)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """The product of the operator with a flat floating vector ``v`` (any floating dtype; an integer
        vector is a ``TypeError``, as its product would be rounded); returned in ``v``'s dtype."""
        w = self._check_vector(v)
        self.matvecs += 1
        if self.runs_model:
            with torch.enable_grad(), train_mode(self.model, self.train_mode):
                out = self._matvec(w)
        else:  # the graph is built: no forward pass, no mode switch
            out = self._matvec(w)
        if out.requires_grad:
            out = out.detach()
        return out if out.dtype == v.dtype else out.to(v.dtype)

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """Apply the operator to each column of a ``(numel, m)`` matrix."""
        if vectors.ndim != 2 or vectors.shape[0] != self.numel:
            raise ValueError(f"vectors must have shape ({self.numel}, m), got {tuple(vectors.shape)}")
        return torch.stack([self.matvec(vectors[:, j]) for j in range(vectors.shape[1])], dim=1)

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        if isinstance(v, torch.Tensor) and v.ndim == 2:
            return self.matmat(v)
        return self.matvec(v)

    def to_dense(self) -> torch.Tensor:
        """Materialise the operator column by column (``numel`` products; small models only)."""
        eye = torch.eye(self.numel, dtype=self.dtype, device=self.device)
        return self.matmat(eye)

    def loss(self) -> float:
        """The mean loss over the data (batches weighted by their size)."""
        total = 0.0
        with torch.no_grad(), train_mode(self.model, self.train_mode):
            for i, w in enumerate(self.weights):
                x, y = self._batch(i)
                total += w * float(checked_loss(self.loss_fn, self._forward(x), y))
        return total

    def gradient(self) -> torch.Tensor:
        """The flat gradient of the mean loss (never stored in ``param.grad``)."""
        grads = [torch.zeros_like(p) for p in self.params]
        with torch.enable_grad(), train_mode(self.model, self.train_mode):
            for i, w in enumerate(self.weights):
                x, y = self._batch(i)
                loss = checked_loss(self.loss_fn, self._forward(x), y)
                for acc, g in zip(grads, torch.autograd.grad(loss, self.params, allow_unused=True), strict=True):
                    if g is not None:
                        acc.add_(g, alpha=w)
        return flatten(grads)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(numel={self.numel}, batches={len(self.batches)}, examples={self.num_examples})"


class HessianOperator(CurvatureOperator):
    """The Hessian of the mean loss over ``data`` with respect to ``params`` as a linear operator.

    ``op @ v`` returns ``H v`` for a flat vector ``v`` of length ``op.numel``. ``data`` is an
    ``(inputs, targets)`` pair or an iterable of batches; each batch's mean loss is weighted by its
    size, so an uneven last batch counts right. ``loss_fn(outputs, targets)`` returns the batch mean.

    Backends (same numbers, different cost):

    - ``"double_backward"`` (default): the gradient graph of the size-weighted sum of the batch losses
      is built once, at construction (one forward and one backward pass), and each product is one
      backward pass through it (Pearlmutter's trick), about the cost of a gradient. Fastest on CPU. The
      graph is a snapshot of the parameters (and floating buffers) it was built at: each product first
      compares them with a copy kept at build time (``torch.equal``, about 0.5% of a product on the digits
      MLP), and rebuilds the graph when they changed, or when they were written in place and restored
      (``loss_surface_*``, SAM's ``worst_case_sharpness``), so a product always uses the current parameters.
    - ``"double_backward_fresh"``: forward + double backward for every product (low memory, always current).
    - ``"func"``: ``torch.func`` forward-over-reverse (``jvp`` of ``grad``); falls back to
      reverse-over-reverse for losses whose backward is not forward-differentiable (``F.mse_loss``).

    The model runs in eval mode during products unless ``train_mode=True`` (its modes are restored); train
    mode uses batch statistics and active dropout but never updates the caller's buffers. Inputs must be
    finite and in the model's dtype, parameters finite, ``v`` a flat floating vector.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Any,
        *,
        params: Sequence[nn.Parameter] | None = None,
        backend: str = "double_backward",
        train_mode: bool = False,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        super().__init__(model, loss_fn, data, params=params, train_mode=train_mode)
        self.backend = backend
        self._cached_grad: list[torch.Tensor] | None = None
        if backend == "double_backward":
            self._build_cache()
        elif backend == "func":
            names = {id(p): n for n, p in model.named_parameters()}
            self._names = [names[id(p)] for p in self.params]
            self._forward_over_reverse = True

    def _watched(self) -> tuple[torch.Tensor, ...]:
        """What the cached graph depends on: the parameters and the model's floating buffers."""
        buffers = (b for b in self.model.buffers() if b is not None and b.is_floating_point())
        return (*self.params, *buffers)

    def _is_current(self) -> bool:
        return all(map(torch.equal, self._watch, self._built_at))

    def _build_cache(self) -> None:
        # One graph for the whole data: the size-weighted sum of the batch losses, differentiated once
        # with create_graph. Each product is then one backward pass through it (retain_graph), with no
        # forward pass, no per-batch bookkeeping and no extra nodes (one batch: the loss itself).
        total: torch.Tensor | None = None
        with torch.enable_grad(), train_mode(self.model, self.train_mode):
            for i, w in enumerate(self.weights):
                x, y = self._batch(i)
                loss = checked_loss(self.loss_fn, self._forward(x), y)
                if len(self.weights) > 1:
                    loss = loss * w
                total = loss if total is None else total + loss
        assert total is not None
        if not math.isfinite(total.item()):
            raise ValueError(f"the loss over data is not finite ({total.item()}) at the model's parameters")
        with torch.enable_grad():
            grads = torch.autograd.grad(total, self.params, create_graph=True, allow_unused=True)
        self._cached_grad = zeros_if_none(grads, self.params)
        self.runs_model = False
        # what a product needs, prepared once: the gradients that depend on params (none: the loss is
        # linear in params) and how to cut a flat vector into their shapes
        self._pair_index = tuple(i for i, g in enumerate(self._cached_grad) if g.requires_grad)
        self._pair_grads = tuple(self._cached_grad[i] for i in self._pair_index)
        self._params_tuple = tuple(self.params)
        offsets = [0]
        for p in self.params[:-1]:
            offsets.append(offsets[-1] + p.numel())
        # (shape, contiguous strides, offset) of each gradient in a flat vector: one as_strided view each
        self._pieces = tuple(
            (self.params[i].shape, torch.empty(self.params[i].shape, device="meta").stride(), offsets[i])
            for i in self._pair_index
        )
        # the values the graph was built at: a product rebuilds it when they changed (see _cached_matvec)
        self._watch = self._watched()
        self._built_at = tuple(t.detach().clone() for t in self._watch)

    def _hvp_from_grads(self, grads: Sequence[torch.Tensor], v: torch.Tensor, retain: bool) -> list[torch.Tensor]:
        vs = unflatten(v, self.params)
        pairs = [(g, u) for g, u in zip(grads, vs, strict=True) if g.requires_grad]
        if not pairs:  # the loss is linear in params: zero Hessian
            return [torch.zeros_like(p) for p in self.params]
        # vector-Jacobian product of the gradient with v (Pearlmutter): no extra dot-product graph
        hv = vjp([g for g, _ in pairs], self.params, [u for _, u in pairs], retain_graph=retain)
        return zeros_if_none(hv, self.params)

    def _cached_matvec(self, v: torch.Tensor) -> torch.Tensor:
        if not self._is_current():  # parameters or buffers changed since the graph was built
            self._build_cache()
        if not self._pair_index:  # the loss is linear in params: zero Hessian
            return torch.zeros_like(v)
        base = v.storage_offset()  # v is contiguous (_check_vector)
        pieces = tuple(v.as_strided(shape, stride, base + offset) for shape, stride, offset in self._pieces)
        try:
            hv = vjp(self._pair_grads, self._params_tuple, pieces, retain_graph=True)
        except RuntimeError as exc:
            # same values, but written in place since the build (restored by a landscape or SAM): autograd
            # refuses the graph's saved tensors; rebuild it at the current (equal) values, once
            if "modified by an inplace operation" not in str(exc):
                raise
            self._build_cache()
            hv = vjp(self._pair_grads, self._params_tuple, pieces, retain_graph=True)
        if any(h is None for h in hv):
            hv = zeros_if_none(hv, self.params)
        return torch.cat([h.reshape(-1) for h in hv])

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        if self.backend == "double_backward":
            return self._cached_matvec(v)
        if self.backend == "double_backward_fresh":
            out = torch.zeros(self.numel, dtype=self.dtype, device=self.device)
            for i, w in enumerate(self.weights):
                x, y = self._batch(i)
                loss = checked_loss(self.loss_fn, self._forward(x), y)
                grads = zeros_if_none(
                    torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True), self.params
                )
                out.add_(flatten(self._hvp_from_grads(grads, v, retain=False)), alpha=w)
            return out
        return self._func_matvec(v)

    def _func_matvec(self, v: torch.Tensor) -> torch.Tensor:
        from torch.func import grad, jvp

        primals = tuple(p.detach() for p in self.params)
        tangents = tuple(unflatten(v, self.params))
        out = torch.zeros(self.numel, dtype=self.dtype, device=self.device)
        for i, w in enumerate(self.weights):
            x, y = self._batch(i)

            def loss_of(ps: tuple[torch.Tensor, ...], x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                named = dict(zip(self._names, ps, strict=True))
                return checked_loss(self.loss_fn, _inputs.run_model(self.model, x, tensors=named), y)

            if self._forward_over_reverse:
                try:
                    _, hv = jvp(grad(loss_of), (primals,), (tangents,))
                except RuntimeError as exc:  # some losses (e.g. F.mse_loss) lack a forward-mode-safe backward
                    if "ZeroTensor" not in str(exc):
                        raise
                    self._forward_over_reverse = False
            if not self._forward_over_reverse:  # reverse-over-reverse fallback, same numbers

                def directional(ps: tuple[torch.Tensor, ...], loss_of: Any = loss_of) -> torch.Tensor:
                    return sum((g * t).sum() for g, t in zip(grad(loss_of)(ps), tangents, strict=True))

                hv = grad(directional)(primals)
            out.add_(flatten(hv), alpha=w)
        return out


class GGNOperator(CurvatureOperator):
    """The generalized Gauss-Newton matrix ``G = mean_i J_i^T H_L,i J_i`` of the mean loss.

    ``J`` is the Jacobian of the model outputs with respect to ``params`` and ``H_L`` the Hessian of the
    loss with respect to the outputs. For cross-entropy (or squared error) ``H_L`` is positive
    semi-definite, so ``G`` is too; ``H = G + (terms weighted by the loss gradient)``, and the outliers
    of the Hessian spectrum come from ``G`` (Sagun et al. 2017; Papyan 2019, arXiv:1901.08244).
    Each product costs one forward pass and three backward passes per batch.
    """

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        vs = unflatten(v, self.params)
        out = torch.zeros(self.numel, dtype=self.dtype, device=self.device)
        for i, w in enumerate(self.weights):
            x, y = self._batch(i)
            outputs = self._forward(x)
            loss = checked_loss(self.loss_fn, outputs, y)
            (g_out,) = torch.autograd.grad(loss, outputs, create_graph=True)
            # J v by the double-vjp trick: u -> J^T u is linear in u, differentiate it along v.
            u = torch.zeros_like(outputs, requires_grad=True)
            jt_u = zeros_if_none(
                torch.autograd.grad(outputs, self.params, u, create_graph=True, allow_unused=True),
                self.params,
            )
            dot = sum((a * b).sum() for a, b in zip(jt_u, vs, strict=True))
            (jv,) = torch.autograd.grad(dot, u, retain_graph=True)
            if g_out.requires_grad:
                (hjv,) = torch.autograd.grad(g_out, outputs, jv, retain_graph=True)
            else:  # loss linear in outputs
                hjv = torch.zeros_like(outputs)
            gv = zeros_if_none(torch.autograd.grad(outputs, self.params, hjv, allow_unused=True), self.params)
            out.add_(flatten(gv), alpha=w)
        return out


__all__ = [
    "BACKENDS", "Batch", "CurvatureOperator", "GGNOperator", "HessianOperator", "LossFn", "as_batches",
    "checked_loss", "flatten", "model_mode", "resolve_params", "unflatten", "vjp",
]
