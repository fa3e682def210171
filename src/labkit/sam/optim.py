"""Sharpness-aware minimization: SAM, ASAM and norm-only SAM as one small optimizer wrapper.

SAM (Foret et al., 2021, https://arxiv.org/abs/2010.01412) takes the gradient at the worst point of a
rho-ball around the weights and applies it at the weights themselves:

    e(w) = rho * g / ||g||,   w <- base_step(w, grad L(w + e(w))).

ASAM (Kwon et al., 2021, https://arxiv.org/abs/2102.11600) measures the ball in the weight-scaled norm
``||T^-1 e|| <= rho`` with ``T = |w| + eta``, which gives ``e = rho * T^2 g / ||T g||``. Norm-only SAM
(Mueller et al., 2023, https://arxiv.org/abs/2306.04226) perturbs only the affine parameters of the
normalization layers and still lets the base optimizer update every parameter.

Corner cases this implementation guarantees (each is tested):

* ``rho = 0`` reproduces the base optimizer bit for bit (``step`` then skips the second pass);
* the perturbation has norm exactly ``rho`` (ASAM: weight-scaled norm ``rho``), and a zero gradient
  gives no perturbation instead of NaNs;
* the weights are restored by copy (not by subtracting ``e``), so they come back bit for bit;
* parameters without a gradient are neither perturbed nor counted in the norm; non-finite gradients give no
  perturbation (the base step then sees them, as it would without SAM, and ``fit`` stops on the NaN loss);
* every number (``rho``, ``adaptive_eta``, the base optimizer's ``lr``, ``momentum``...) is checked finite, in
  range and representable in the parameters' dtype, in the constructor, its parameter groups and
  ``add_param_group``;
* ``param_groups`` and ``state`` are the base optimizer's own objects, so LR schedulers act on the
  base step and ``state_dict`` carries the base optimizer's momentum buffers and round-trips.

BatchNorm policy (``bn``): the running statistics are a property of the weights ``w``, not of the
perturbed ``w + e``. With ``model=`` given and ``bn="first"`` (default), ``step(closure)`` snapshots the
running statistics of every BatchNorm module before the second pass and puts them back after it, so
only the first pass updates them. ``bn="both"`` lets both passes update them (what a naive loop does).
When you call ``first_step``/``second_step`` yourself, wrap the second forward pass in
:func:`frozen_running_stats`.

Porting from davda54/sam: there ``step(closure)`` expects the first backward to be done already (``loss.backward();
opt.step(closure)``). Here ``step(closure)`` follows torch.optim's closure contract and calls the closure for the
first pass too, so that loop runs three forward-backward passes (and, unless the closure zeroes the gradients,
adds the first two). ``step`` warns once per optimizer when it finds gradients computed since the last
``zero_grad`` (or since its own previous step); drop the ``backward()`` before ``step(closure)``.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from labkit import checks
from labkit.autograd import check_module
from labkit.sam._inputs import check_bool, check_group, check_options, optimizer_defaults

_BN_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm,)
#: Module types whose affine parameters norm-only SAM perturbs (selected by type, never by name).
NORM_LAYER_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, lazy variants, InstanceNorm
    nn.LayerNorm,
    nn.GroupNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


@contextmanager
def frozen_running_stats(model: nn.Module | None) -> Iterator[None]:
    """Run a block without changing the BatchNorm running statistics of ``model`` (restored by copy).

    Use it around the second (perturbed) forward pass of a hand-written SAM loop. ``None`` is a no-op.
    """
    if model is not None:
        check_module(model)
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    if model is not None:
        for module in model.modules():
            if isinstance(module, _BN_TYPES):
                for name in ("running_mean", "running_var", "num_batches_tracked"):
                    buf = getattr(module, name, None)
                    if isinstance(buf, torch.Tensor):
                        saved.append((buf, buf.clone()))
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, copy in saved:
                buf.copy_(copy)


def norm_parameters(
    model: nn.Module, *, types: tuple[type[nn.Module], ...] = NORM_LAYER_TYPES
) -> list[nn.Parameter]:
    """The trainable affine parameters (weight and bias) of the normalization layers of ``model``.

    Layers are recognised by module type (BatchNorm, InstanceNorm, LayerNorm, GroupNorm, RMSNorm by
    default), so renaming a layer cannot silently change the selection (Mueller et al., 2023).
    """
    check_module(model)
    if isinstance(types, type):
        types = (types,)
    if not (isinstance(types, tuple) and types
            and all(isinstance(t, type) and issubclass(t, nn.Module) for t in types)):
        raise TypeError(f"types must be a non-empty tuple of torch.nn.Module subclasses, got {types!r}")
    chosen: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, types):
            for p in module.parameters(recurse=False):
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    chosen.append(p)
    return chosen


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimization around any ``torch.optim`` base optimizer (Foret et al., 2021).

    ``SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)`` builds the base
    optimizer from ``base_kwargs`` on the same parameter groups. Use it as
    ``loss = opt.step(closure)`` where the closure zeroes the gradients, computes the loss, calls
    ``backward()`` and returns the loss (the returned loss is the one at the unperturbed weights), or
    by hand: ``loss.backward(); opt.first_step(zero_grad=True); loss_fn().backward(); opt.second_step()``.

    Options (keyword-only):

    * ``rho``: radius of the ball (>= 0). ``rho = 0`` is exactly the base optimizer.
    * ``adaptive``: ASAM (Kwon et al., 2021): the ball is ``||e / (|w| + adaptive_eta)|| <= rho``.
    * ``perturb``: the parameters to perturb (default: all). Norm-only SAM passes the normalization
      layers' affine parameters (see :func:`norm_only_sam`); the base step still updates all.
    * ``ascent_weight_decay``: if True, the ascent direction is ``g + weight_decay * w`` (the gradient
      of the L2-regularised loss, using each group's ``weight_decay``); if False (default) it is the
      loss gradient ``g`` alone and weight decay acts only in the base (descent) step.
    * ``model`` and ``bn``: the BatchNorm policy of ``step`` (see the module docstring).

    Every number (``rho``, ``adaptive_eta`` and the base optimizer's ``lr``, ``momentum``, ``betas``...) must
    be finite, here and in :meth:`add_param_group`.

    Ported from davda54/sam? Its ``step(closure)`` expects ``loss.backward()`` to be done before it; this
    ``step(closure)`` runs the first pass itself (torch.optim's closure contract), so a ``backward()`` before
    it is a wasted third pass. ``step`` warns (once per optimizer) when it finds such gradients.
    """

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer_cls: type[torch.optim.Optimizer],
        *,
        rho: float = 0.05,
        adaptive: bool = False,
        adaptive_eta: float = 0.0,
        perturb: Iterable[torch.Tensor] | None = None,
        ascent_weight_decay: bool = False,
        model: nn.Module | None = None,
        bn: str = "first",
        **base_kwargs: Any,
    ):
        if not (isinstance(base_optimizer_cls, type)
                and issubclass(base_optimizer_cls, torch.optim.Optimizer)):
            raise TypeError("base_optimizer_cls must be a torch.optim.Optimizer subclass such as "
                            f"torch.optim.SGD, got {base_optimizer_cls!r}")
        rho = checks.number(rho, "rho", low=0)
        adaptive = check_bool(adaptive, "adaptive")
        adaptive_eta = checks.number(adaptive_eta, "adaptive_eta", low=0)
        ascent_weight_decay = check_bool(ascent_weight_decay, "ascent_weight_decay")
        reference = optimizer_defaults(base_optimizer_cls)
        check_options(base_kwargs, reference=reference)
        if bn not in ("first", "both"):
            raise ValueError("bn must be 'first' (running stats updated by the first pass only) or 'both', "
                             f"got {bn!r}")
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
        params = list(params)
        if not params:
            raise ValueError("params is empty: SAM needs at least one parameter (or parameter group) "
                             "to optimize")
        defaults = dict(rho=rho, adaptive=adaptive, adaptive_eta=adaptive_eta)
        super().__init__(params, defaults)
        for i, group in enumerate(self.param_groups):  # per-group options given to the constructor
            check_group(group, f"params[{i}]", reference)
        self.base_optimizer = base_optimizer_cls(self.param_groups, **base_kwargs)
        for i, group in enumerate(self.base_optimizer.param_groups):  # with the base's values filled in
            check_group(group, f"params[{i}]", reference)
        # One set of groups and one state for both: schedulers, state_dict and add_param_group see the base.
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self.defaults.update(self.base_optimizer.defaults)
        self.ascent_weight_decay = bool(ascent_weight_decay)
        self.model = model
        self.bn = bn
        all_ids = {id(p) for g in self.param_groups for p in g["params"]}
        if perturb is None:
            self._perturb_ids: set[int] | None = None
        else:
            perturb = list(perturb)
            if not perturb:
                raise ValueError("perturb is empty: pass None to perturb every parameter, "
                                 "or at least one parameter")
            ids = {id(p) for p in perturb}
            if not ids <= all_ids:
                raise ValueError("perturb must be a subset of the optimized params")
            self._perturb_ids = ids
        self._backup: dict[torch.Tensor, torch.Tensor] = {}
        self._perturbed: list[torch.Tensor] = []
        # The ported-loop trap (see step): which gradients step left (weak references), whether zero_grad ran
        # since, and whether the warning was given. Gradients present now count as not computed for step.
        self._in_step = False
        self._cleared = False
        self._warned_backward = False
        self._remember_grads()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the (shared) groups: SAM's options default to this optimizer's, the rest to the base's."""
        if not hasattr(self, "base_optimizer"):  # during __init__: SAM's own bookkeeping
            super().add_param_group(param_group)
            return
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict with 'params', got {type(param_group).__name__}")
        params = param_group.get("params")
        if isinstance(params, torch.Tensor):
            param_group["params"] = [params]
        elif params is not None and not isinstance(params, (set, list)):
            param_group["params"] = list(params)  # a generator would be used up by the checks below
        for key in ("rho", "adaptive", "adaptive_eta"):
            param_group.setdefault(key, self.defaults[key])
        check_group(param_group, "param_group", optimizer_defaults(type(self.base_optimizer)))
        self.base_optimizer.add_param_group(param_group)

    # -- the two half-steps --------------------------------------------------------------------------
    def _ascent_terms(self) -> list[tuple[dict[str, Any], torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """(group, param, direction d, scale T or None) for every parameter SAM perturbs now."""
        terms = []
        for group in self.param_groups:
            wd = group.get("weight_decay", 0.0) if self.ascent_weight_decay else 0.0
            for p in group["params"]:
                if p.grad is None or not p.requires_grad:
                    continue
                if self._perturb_ids is not None and id(p) not in self._perturb_ids:
                    continue
                d = p.grad.add(p, alpha=wd) if wd else p.grad
                t = p.abs().add_(group["adaptive_eta"]) if group["adaptive"] else None
                terms.append((group, p, d, t))
        return terms

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move to ``w + e(w)`` using the current gradients (kept in a backup for ``second_step``)."""
        if self._perturbed:
            raise RuntimeError("first_step called twice without second_step: "
                               "the weights are already perturbed")
        terms = self._ascent_terms()
        if terms:
            device = terms[0][1].device
            norms = [torch.linalg.vector_norm(d if t is None else d * t).to(device) for _, _, d, t in terms]
            norm = torch.linalg.vector_norm(torch.stack(norms))
            inv = torch.where(norm > 0, 1.0 / norm, torch.zeros_like(norm))  # zero gradient: no perturbation
            for group, p, d, t in terms:
                if group["rho"] == 0:
                    continue
                e = d * (inv.to(p.device) * group["rho"])
                if t is not None:
                    e.mul_(t).mul_(t)
                buf = self._backup.get(p)
                if buf is None or buf.shape != p.shape or buf.dtype != p.dtype or buf.device != p.device:
                    buf = self._backup[p] = torch.empty_like(p)
                buf.copy_(p)
                p.add_(e)
                self._perturbed.append(p)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def restore(self) -> None:
        """Put the weights back to the unperturbed ``w`` (bit for bit); a no-op when not perturbed."""
        for p in self._perturbed:
            p.copy_(self._backup[p])
        self._perturbed = []

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore ``w`` and take the base optimizer's step with the gradients computed at ``w + e``."""
        self.restore()
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    # -- the ported-loop trap --------------------------------------------------------------------------
    def _params(self) -> Iterator[torch.Tensor]:
        for group in self.param_groups:
            yield from group["params"]

    def _remember_grads(self) -> None:
        self._grad_refs = {id(p): (None if p.grad is None else weakref.ref(p.grad)) for p in self._params()}
        self._cleared = False

    def zero_grad(self, set_to_none: bool = True) -> None:
        """``torch.optim.Optimizer.zero_grad``; outside ``step`` it also notes that the gradients were cleared."""
        super().zero_grad(set_to_none=set_to_none)
        if not self._in_step:
            self._cleared = True

    def _computed_since(self) -> bool:
        """Whether some parameter has a non-zero gradient computed after ``zero_grad`` or after the previous
        ``step`` (a gradient object step did not leave, or any gradient after ``zero_grad``)."""
        for p in self._params():
            g = p.grad
            if g is None:
                continue
            ref = self._grad_refs.get(id(p))
            if (self._cleared or ref is None or ref() is not g) and bool(g.ne(0).any()):
                return True
        return False

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        """One SAM step; ``closure`` zeroes grads, computes the loss, calls backward and returns the loss.

        Returns the loss at the unperturbed weights (the first closure call). The closure runs twice: at
        ``w`` and at ``w + e`` (torch.optim's closure contract, unlike davda54/sam's ``step``, which expects
        the first backward done before it). Gradients computed before ``step(closure)`` since the last
        ``zero_grad`` mean a loop ported from davda54/sam: a wasted third pass whose gradients are added to
        the first unless the closure zeroes them. ``step`` warns about it once per optimizer (a
        ``UserWarning``); the fix is to drop the ``loss.backward()`` before ``opt.step(closure)`` and let
        the closure call ``opt.zero_grad()`` first.
        """
        if closure is None:
            raise TypeError("SAM.step needs a closure that zeroes the grads, computes the loss, calls "
                            "backward and returns the loss (or call first_step/second_step yourself)")
        if not callable(closure):
            raise TypeError(f"closure must be callable, got {type(closure).__name__}")
        if not self._warned_backward and self._computed_since():
            self._warned_backward = True
            warnings.warn(
                "SAM.step(closure) found gradients already computed since the last zero_grad: labkit's SAM calls "
                "the closure for the first pass itself (torch.optim's closure contract), unlike davda54/sam's "
                "step, which expects loss.backward() done before it. This loop runs three forward-backward "
                "passes per step, and the earlier gradients are added to the first pass's unless the closure "
                "zeroes them. Fix: remove the loss.backward() before opt.step(closure) and start the closure "
                "with opt.zero_grad() (or call first_step/second_step by hand). Warned once per optimizer.",
                UserWarning, stacklevel=4)
        closure = torch.enable_grad()(closure)
        self._in_step = True
        try:
            loss = closure()
            if all(g["rho"] == 0 for g in self.param_groups):
                self.base_optimizer.step()  # rho = 0: exactly the base optimizer, no second pass
                return loss
            self.first_step(zero_grad=False)
            try:
                with frozen_running_stats(self.model if self.bn == "first" else None):
                    closure()
            except BaseException:
                self.restore()
                raise
            self.second_step()
            return loss
        finally:
            self._in_step = False
            self._remember_grads()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()``; the groups and state stay shared with the base optimizer."""
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state

    def __repr__(self) -> str:
        g = self.param_groups[0]
        kind = "ASAM" if g["adaptive"] else "SAM"
        scope = "all params" if self._perturb_ids is None else f"{len(self._perturb_ids)} perturbed tensors"
        return f"{kind}(rho={g['rho']}, {scope}, base={self.base_optimizer!r})"


def norm_only_sam(
    model: nn.Module,
    base_optimizer_cls: type[torch.optim.Optimizer],
    *,
    rho: float = 0.05,
    adaptive: bool = False,
    **kwargs: Any,
) -> SAM:
    """Norm-only SAM ("SAM-ON", Mueller et al., 2023, https://arxiv.org/abs/2306.04226).

    Every trainable parameter of ``model`` is optimized, but only the affine parameters of its
    normalization layers (chosen by module type, see :func:`norm_parameters`) are perturbed.
    The BatchNorm policy of ``step`` is applied to ``model``.
    """
    chosen = norm_parameters(model)
    if not chosen:
        raise ValueError("model has no trainable normalization-layer parameters (BatchNorm, LayerNorm, "
                         "GroupNorm, InstanceNorm, RMSNorm with affine=True); norm-only SAM has nothing "
                         "to perturb")
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs.setdefault("model", model)
    return SAM(params, base_optimizer_cls, rho=rho, adaptive=adaptive, perturb=chosen, **kwargs)
