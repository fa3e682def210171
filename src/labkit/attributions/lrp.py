"""Epsilon-LRP, a modified-backpropagation attribution: the contrast method of Integrated Gradients'
implementation invariance.

Layer-wise relevance propagation (Bach et al., 2015, *On Pixel-Wise Explanations for Non-Linear Classifier
Decisions by Layer-Wise Relevance Propagation*, PLoS ONE, https://doi.org/10.1371/journal.pone.0130140)
starts from the target logit and redistributes it layer by layer with the epsilon rule

    R_i = sum_j  a_i w_ij / (z_j + epsilon * sign(z_j))  R_j,      z_j = sum_i a_i w_ij + b_j,

passing relevance unchanged through element-wise activations. At ``epsilon = 0`` on a ReLU network this
equals input x gradient (Ancona et al., 2018, *Towards better understanding of gradient-based attribution
methods*, ICLR, Sec. 3), a function of the network's function only. With ``epsilon > 0`` the stabilizer is
an absolute number compared with the pre-activations ``z_j`` of one particular parameterization: rescaling
a hidden unit's incoming weights by ``c > 0`` and its outgoing ones by ``1 / c`` leaves the function
unchanged but changes ``z_j / (z_j + epsilon)``. Sundararajan, Taly & Yan (2017, Sec. 2.2) name LRP and
DeepLIFT as methods that break implementation invariance this way.
"""

from __future__ import annotations

import torch
from torch import nn

from labkit.attributions._common import (
    check_logits,
    check_model_input,
    check_nonneg_float,
    check_target,
    evaluating,
    finite_result,
)

PASS_THROUGH = (nn.ReLU, nn.Identity, nn.Dropout)
SUPPORTED = "nn.Sequential of nn.Linear, nn.ReLU, nn.Flatten, nn.Identity and nn.Dropout"


def stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``z + epsilon * sign(z)`` with ``sign(0) = +1`` (the epsilon rule's denominator)."""
    return z + epsilon * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def lrp_epsilon(model: nn.Module, x: torch.Tensor, target: int | torch.Tensor, *,
                epsilon: float = 0.01) -> torch.Tensor:
    """Epsilon-LRP relevance of each input feature for the target logit, shaped like ``x``.

    ``model`` must be an ``nn.Sequential`` of ``nn.Linear``, ``nn.ReLU``, ``nn.Flatten``, ``nn.Identity``
    and ``nn.Dropout`` (evaluated in eval mode, left as found). The relevance of the output layer is the
    target logit itself; biases and ``epsilon`` absorb part of it, so the input relevances sum to the logit
    only when both are zero. A zero denominator (``epsilon = 0`` and ``z_j = 0``) passes no relevance.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an {SUPPORTED}, got {type(model).__name__}")
    for i, m in enumerate(model):
        if not isinstance(m, (nn.Linear, nn.Flatten, *PASS_THROUGH)):
            raise TypeError(f"model[{i}] is {type(m).__name__}: lrp_epsilon supports an {SUPPORTED}")
    x = check_model_input(model, x)
    t = check_target(target, x.shape[0], x.device)
    epsilon = check_nonneg_float(epsilon, "epsilon")
    with evaluating(model), torch.no_grad():
        acts = [x.detach()]
        for m in model:
            acts.append(m(acts[-1]))
        out = check_logits(acts[-1], x.shape[0], t)
        relevance = torch.zeros_like(out)
        rows = torch.arange(out.shape[0], device=out.device)
        relevance[rows, t] = out[rows, t]
        for m, a, z in zip(reversed(model), reversed(acts[:-1]), reversed(acts[1:]), strict=True):
            if isinstance(m, nn.Linear):
                den = stabilize(z, epsilon)
                s = torch.where(den == 0, torch.zeros_like(relevance), relevance / torch.where(den == 0, 1.0, den))
                relevance = a * (s @ m.weight)
            elif isinstance(m, nn.Flatten):
                relevance = relevance.reshape(a.shape)
            # element-wise activations pass relevance through unchanged
    return finite_result(relevance, "relevances")
