"""EK-FAC: the Gauss–Newton matrix of each Linear layer as eigenvalue-corrected Kronecker factors.

For a Linear layer with input ``a`` (a 1 appended for the bias) and output ``s``, an example's gradient is
``g aᵀ`` (``g``: the gradient w.r.t. ``s``). K-FAC (Martens & Grosse, arXiv 1503.05671) approximates the
layer's block of the Gauss–Newton matrix by ``S ⊗ A`` with ``A = E[a aᵀ]`` and ``S = E[g gᵀ]``; EK-FAC (George
et al., *Fast Approximate Natural Gradient Descent in a Kronecker-factored Eigenbasis*, arXiv 1806.03884) keeps
the eigenvectors ``Q_S ⊗ Q_A`` and refits the eigenvalues to the diagonal of the true matrix in that basis,
``Λ* = E[(Q_Sᵀ g aᵀ Q_A)²]``. Grosse et al. (*Studying Large Language Model Generalization with Influence
Functions*, arXiv 2308.03296, Sec. 2.2) use it to invert the damped Gauss–Newton matrix for influence:
``(G + λI)⁻¹ v = Q (Q ᵀ v / (Λ* + λ))`` layer by layer (block-diagonal across layers).

Here the pseudo-gradients are not sampled: each example's loss Hessian w.r.t. the model's outputs is factored
as ``H = L Lᵀ`` and every column of ``L`` is back-propagated, so ``Σ_k g_k g_kᵀ = Jᵀ H J`` exactly (for
cross-entropy this is the expectation over labels drawn from the model, the "true Fisher"). With one Linear layer
and one example the factorization is exact: EK-FAC equals the Gauss–Newton matrix.

Covered layers: ``nn.Linear`` on inputs of shape ``(N, in)`` and ``nn.Conv2d`` (``groups=1``, zero padding given
as numbers), each applied once per forward pass. A convolution's gradient is ``Σ_t g_t a_tᵀ`` over output
positions ``t`` (``a_t``: the unfolded input patch): its factors are the KFC ones of Grosse & Martens (*A
Kronecker-factored approximate Fisher matrix for convolution layers*, arXiv 1602.01407), ``A = E[Σ_t a_t a_tᵀ]``,
``S = E[Σ_t g_t g_tᵀ]``, and the eigenvalue correction uses the exact per-example gradient ``Σ_t g_t a_tᵀ``. Any
other layer holding a chosen parameter is a ``NotImplementedError`` naming it: choose ``params`` among the covered
layers' weights and biases to leave it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from labkit.autograd import resolve_params, train_mode
from labkit.influence.per_example import LossFn, check_loss_fn, check_params_finite, checked_data, output_hessians


@dataclass(frozen=True)
class LayerFactors:
    """One Linear or Conv2d layer's factors: eigenvectors of ``A`` (``(in+1, in+1)`` with a bias, else ``(in, in)``) and
    of ``S`` (``(out, out)``), the corrected eigenvalues ``(out, in[+1])``, and where the layer's weight and
    bias sit in the flat parameter vector."""

    name: str
    q_a: torch.Tensor
    q_s: torch.Tensor
    eigenvalues: torch.Tensor
    weight_slice: slice
    bias_slice: slice | None


@dataclass(frozen=True)
class EKFACFactors:
    """EK-FAC factors of the Gauss–Newton matrix of the mean loss, one :class:`LayerFactors` per Linear layer,
    for a flat parameter vector of length ``numel`` (the chosen parameters in order)."""

    layers: tuple[LayerFactors, ...]
    numel: int

    def inverse_hvp(self, vectors: torch.Tensor, *, damping: float) -> torch.Tensor:
        """``(G_EKFAC + damping I)⁻¹ v`` for each row ``v`` of ``vectors`` (``(m, numel)``): a ``(m, numel)``
        tensor in ``vectors``' dtype. ``damping=0`` with a zero eigenvalue is a ``ValueError``."""
        return self._apply(vectors, damping=damping, power=-1)

    def matvec(self, vectors: torch.Tensor) -> torch.Tensor:
        """``G_EKFAC v`` for each row ``v`` of ``vectors`` (``(m, numel)``)."""
        return self._apply(vectors, damping=0.0, power=1)

    def _apply(self, vectors: torch.Tensor, *, damping: float, power: int) -> torch.Tensor:
        if not isinstance(vectors, torch.Tensor) or vectors.ndim != 2 or vectors.shape[1] != self.numel:
            raise ValueError(f"vectors must be a (m, {self.numel}) tensor")
        if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not damping >= 0:
            raise ValueError(f"damping must be a non-negative number, got {damping!r}")
        v = vectors.to(torch.float64)
        out = torch.zeros_like(v)
        m = len(v)
        for layer in self.layers:
            out_dim = layer.q_s.shape[0]
            w = v[:, layer.weight_slice].reshape(m, out_dim, -1)  # a conv weight (out, in, kh, kw) as (out, in*kh*kw)
            d = torch.cat([w, v[:, layer.bias_slice].unsqueeze(2)], 2) if layer.bias_slice is not None else w
            rot = layer.q_s.T @ d @ layer.q_a
            lam = layer.eigenvalues + damping
            if power < 0:
                if bool((lam <= 0).any()):
                    raise ValueError(f"layer {layer.name!r} has a zero eigenvalue: use damping > 0")
                rot = rot / lam
            else:
                rot = rot * lam
            back = layer.q_s @ rot @ layer.q_a.T
            in_dim = w.shape[2]
            out[:, layer.weight_slice] = back[:, :, :in_dim].reshape(m, -1)
            if layer.bias_slice is not None:
                out[:, layer.bias_slice] = back[:, :, in_dim]
        return out.to(vectors.dtype)


def _layers(model: nn.Module, chosen: Sequence[torch.Tensor]) -> list[tuple[str, nn.Linear, slice, slice | None]]:
    offsets, start = {}, 0
    for p in chosen:
        offsets[id(p)] = slice(start, start + p.numel())
        start += p.numel()
    found, claimed = [], set()
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if id(p) in offsets]
        if not own:
            continue
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            raise NotImplementedError(f"EK-FAC covers nn.Linear and nn.Conv2d layers only; layer {name!r} is "
                                      f"{type(module).__name__}: leave its parameters out of params")
        if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.padding_mode != "zeros"
                                              or isinstance(module.padding, str)):
            raise NotImplementedError(f"EK-FAC covers nn.Conv2d with groups=1 and numeric zero padding; layer {name!r} "
                                      f"has groups={module.groups}, padding={module.padding!r}, "
                                      f"padding_mode={module.padding_mode!r}")
        if id(module.weight) not in offsets:
            raise NotImplementedError(f"EK-FAC needs layer {name!r}'s weight whenever its bias is chosen")
        bias = offsets.get(id(module.bias)) if module.bias is not None else None
        found.append((name, module, offsets[id(module.weight)], bias))
        claimed.update(id(p) for p in own)
    missing = [p for p in chosen if id(p) not in claimed]
    if missing:
        raise NotImplementedError("EK-FAC: a chosen parameter belongs to no module of model")
    return found


def fit_ekfac(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    params: Sequence[nn.Parameter] | None = None,
) -> EKFACFactors:
    """Fit EK-FAC factors of the Gauss–Newton matrix of the mean loss over ``data`` (float64).

    One forward pass per batch and one backward pass per output dimension (the columns of each example's
    output-Hessian factor); the inputs and output gradients of each layer are kept for the eigenvalue correction
    (memory ``n × (in + outputs × out)`` per layer). The model runs in eval mode and is left as found.
    """
    check_loss_fn(loss_fn)
    chosen = resolve_params(model, params)
    check_params_finite(model, chosen)
    batches = checked_data(data, model)
    layers = _layers(model, chosen)
    inputs: dict[str, list[torch.Tensor]] = {n: [] for n, *_ in layers}
    grads: dict[str, list[torch.Tensor]] = {n: [] for n, *_ in layers}
    device = chosen[0].device

    for x, y in batches:
        x, y = x.to(device), y.to(device)
        seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        handles = []
        for name, module, _, _ in layers:
            def hook(mod, args, output, name=name, seen=seen):
                if name in seen:
                    raise NotImplementedError(f"EK-FAC: layer {name!r} runs more than once per forward pass")
                inp = args[0].detach()
                if isinstance(mod, nn.Conv2d):
                    if inp.ndim != 4:
                        raise NotImplementedError(f"EK-FAC: layer {name!r} gets unbatched inputs; use (N, C, H, W)")
                    inp = F.unfold(inp, mod.kernel_size, dilation=mod.dilation, padding=mod.padding,
                                   stride=mod.stride).transpose(1, 2)  # (N, T, in*kh*kw)
                elif inp.ndim != 2:
                    raise NotImplementedError(f"EK-FAC: layer {name!r} gets inputs of shape "
                                              f"{tuple(inp.shape)}; only (N, in) inputs are covered")
                else:
                    inp = inp.unsqueeze(1)  # (N, 1, in): one position
                seen[name] = (inp, output)
            handles.append(module.register_forward_hook(hook))
        try:
            with train_mode(model, False), torch.enable_grad():
                out = model(x)
        finally:
            for h in handles:
                h.remove()
        if out.ndim != 2:
            raise ValueError(f"EK-FAC needs outputs of shape (N, C), got {tuple(out.shape)}")
        with torch.enable_grad():
            h_out = output_hessians(loss_fn, out.detach(), y)  # (N, C, C)
        evals, evecs = torch.linalg.eigh(h_out.to(torch.float64))
        factor = (evecs * evals.clamp_min(0).sqrt().unsqueeze(1)).to(out.dtype)  # H = L Lᵀ, columns of L
        outs = [seen[n][1] for n, *_ in layers]
        per_layer = [[] for _ in layers]
        for k in range(out.shape[1]):
            gs = torch.autograd.grad(out, outs, factor[:, :, k], retain_graph=True)
            for j, g in enumerate(gs):
                g = g.detach()
                per_layer[j].append(g.flatten(2).transpose(1, 2) if g.ndim == 4 else g.unsqueeze(1))  # (N, T, out)
        for j, (name, _module, _, bias) in enumerate(layers):
            a = seen[name][0]
            if bias is not None:
                a = torch.cat([a, torch.ones(*a.shape[:2], 1, dtype=a.dtype, device=a.device)], 2)
            inputs[name].append(a.to(torch.float64))  # (N, T, in')
            grads[name].append(torch.stack(per_layer[j], 1).to(torch.float64))  # (N, C, T, out)
    fitted = []
    for name, _, wslice, bslice in layers:
        a = torch.cat(inputs[name])  # (n, T, in')
        g = torch.cat(grads[name])  # (n, C, T, out)
        n = len(a)
        cov_a = torch.einsum("nti,ntj->ij", a, a) / n
        cov_s = torch.einsum("nkto,nktp->op", g, g) / n
        q_a = torch.linalg.eigh(cov_a).eigenvectors
        q_s = torch.linalg.eigh(cov_s).eigenvectors
        if a.shape[1] == 1:  # one position: (Q_Sᵀ g aᵀ Q_A)² factorizes
            rot_a = (a[:, 0] @ q_a) ** 2  # (n, in')
            rot_g = ((g[:, :, 0] @ q_s) ** 2).sum(1)  # (n, out)
            lam = rot_g.T @ rot_a / n  # (out, in')
        else:  # the exact per-example gradient Σ_t g_t a_tᵀ, rotated
            lam = torch.zeros(q_s.shape[0], q_a.shape[0], dtype=torch.float64, device=a.device)
            for part in range(0, n, 64):
                grad = torch.einsum("nkto,nti->nkoi", g[part : part + 64], a[part : part + 64])
                lam += ((q_s.T @ grad @ q_a) ** 2).sum((0, 1))
            lam /= n
        fitted.append(LayerFactors(name, q_a, q_s, lam, wslice, bslice))
    return EKFACFactors(tuple(fitted), sum(p.numel() for p in chosen))


__all__ = ["EKFACFactors", "LayerFactors", "fit_ekfac"]
