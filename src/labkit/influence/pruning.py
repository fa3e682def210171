"""Data pruning scores from early training: EL2N and GraNd, and the pruning rule that keeps a subset.

Paul, Ganguli and Dziugaite, *Deep Learning on a Data Diet: Finding Important Examples Early in Training*
(NeurIPS 2021, arXiv 2107.07075): the score of a training example is averaged over several independently
initialized networks, each trained only briefly (or not at all),

* EL2N: ``E_w ‖softmax(f_w(x)) − onehot(y)‖₂`` (the error's L2 norm),
* GraNd: ``E_w ‖∇_w ℓ(f_w(x), y)‖₂`` (the per-example gradient norm),

and the examples with the *highest* scores are kept. Kirsch, *Does 'Deep Learning on a Data Diet'
reproduce? Overall yes, but GraNd at Initialization does not* (arXiv 2303.14753) found GraNd at
initialization no better than random pruning and strongly correlated with the input norm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from labkit.autograd import check_generator, preserve_model, randperm
from labkit.influence.per_example import check_loss_fn, checked_data, per_example_grads

KEEP_RULES = ("hard", "easy", "random")


def _models(models: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    if isinstance(models, nn.Module):
        return [models]
    if isinstance(models, (str, bytes)) or not isinstance(models, Sequence) or not models:
        raise TypeError("models must be an nn.Module or a non-empty sequence of nn.Modules, "
                        f"got {type(models).__name__}")
    for i, m in enumerate(models):
        if not isinstance(m, nn.Module):
            raise TypeError(f"models[{i}] must be an nn.Module, got {type(m).__name__}")
    return list(models)


def el2n(models: nn.Module | Sequence[nn.Module], data: Any) -> torch.Tensor:
    """EL2N scores ``(n,)``: the mean over ``models`` of ``‖softmax(f(x_i)) − onehot(y_i)‖₂`` (Paul et al.,
    arXiv 2107.07075, Sec. 2, Eq. for χ).

    ``data`` is an ``(inputs, targets)`` pair or a list of such batches with integer class targets; each
    model returns ``(n, C)`` logits. Models run in eval mode and are left as found; no gradients are kept.
    """
    nets = _models(models)
    totals: torch.Tensor | None = None
    for k, model in enumerate(nets):
        batches = checked_data(data, model)
        parts = []
        with preserve_model(model, params=False), torch.no_grad():
            model.eval()
            for x, y in batches:
                if y.is_floating_point() or y.ndim != 1:
                    raise TypeError("data targets must be a 1-D tensor of class indices, "
                                    f"got {y.dtype} {tuple(y.shape)}")
                logits = model(x)
                if logits.ndim != 2:
                    raise ValueError(f"models[{k}] must return (n, C) logits, got shape {tuple(logits.shape)}")
                if len(y) and (int(y.min()) < 0 or int(y.max()) >= logits.shape[1]):
                    raise ValueError(f"data targets must lie in 0..{logits.shape[1] - 1}, "
                                     f"got {int(y.min())}..{int(y.max())}")
                onehot = torch.nn.functional.one_hot(y.to(logits.device), logits.shape[1]).to(logits.dtype)
                parts.append((logits.softmax(dim=1) - onehot).norm(dim=1))
        scores = torch.cat(parts)
        if not bool(torch.isfinite(scores).all()):
            raise ValueError(f"models[{k}] produced NaN or infinite outputs")
        totals = scores if totals is None else totals + scores
    assert totals is not None
    return totals / len(nets)


def grand(models: nn.Module | Sequence[nn.Module], loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
          data: Any, *, chunk_size: int | str = "auto") -> torch.Tensor:
    """GraNd scores ``(n,)``: the mean over ``models`` of the per-example gradient norm
    ``‖∇_w loss_fn(f_w(x_i), y_i)‖₂`` over all trainable parameters (Paul et al., arXiv 2107.07075, Sec. 2).

    Paul et al. evaluate it at initialization ("GraNd at init") and early in training; Kirsch
    (arXiv 2303.14753) found the at-initialization variant no better than random pruning. Gradients come
    from :func:`labkit.influence.per_example.per_example_grads` (eval mode, models left as found).
    """
    check_loss_fn(loss_fn)
    nets = _models(models)
    total: torch.Tensor | None = None
    for model in nets:
        norms = per_example_grads(model, loss_fn, data, chunk_size=chunk_size).norm(dim=1)
        total = norms if total is None else total + norms
    assert total is not None
    return total / len(nets)


def prune(scores: torch.Tensor, fraction: float, *, keep: str = "hard",
          generator: torch.Generator | None = None) -> torch.Tensor:
    """The indices (sorted ascending, a LongTensor) of the examples kept after pruning ``fraction`` of them.

    ``keep="hard"`` keeps the highest scores (Paul et al.'s rule: easy examples are dropped), ``"easy"`` the
    lowest, ``"random"`` a uniformly random subset drawn from ``generator`` (the scores then only set n).
    ``round(fraction * n)`` examples are dropped; ties are broken by index (the earlier example first).
    """
    if not isinstance(scores, torch.Tensor) or scores.ndim != 1 or scores.numel() == 0:
        raise TypeError(f"scores must be a non-empty 1-D tensor, got {type(scores).__name__}"
                        + (f" of shape {tuple(scores.shape)}" if isinstance(scores, torch.Tensor) else ""))
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores contain NaN or infinite values")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction (the share of examples pruned) must be a number in [0, 1), got {fraction!r}")
    if keep not in KEEP_RULES:
        raise ValueError(f"keep must be one of {KEEP_RULES}, got {keep!r}")
    generator = check_generator(generator)
    n = scores.numel()
    kept = n - int(round(fraction * n))
    if keep == "random":
        order = randperm(n, generator=generator, device=scores.device)
    else:
        order = torch.sort(-scores if keep == "hard" else scores, stable=True).indices
    return torch.sort(order[:kept]).values


def auroc(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for flagging ``positives`` (a bool mask): the probability that
    a random positive scores above a random negative, ties counting one half (the Mann-Whitney statistic).
    Paul et al. (arXiv 2107.07075, Sec. 5) use EL2N to find examples with corrupted labels."""
    if not isinstance(scores, torch.Tensor) or scores.ndim != 1:
        raise TypeError("scores must be a 1-D tensor")
    if not isinstance(positives, torch.Tensor) or positives.dtype != torch.bool or positives.shape != scores.shape:
        raise TypeError(f"positives must be a bool tensor of shape {tuple(scores.shape)}")
    pos, neg = scores[positives].double(), scores[~positives].double()
    if pos.numel() == 0 or neg.numel() == 0:
        raise ValueError("positives must mark at least one positive and one negative example")
    greater = (pos[:, None] > neg[None, :]).double().mean()
    ties = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * ties)





def train_copy(init: nn.Module, data: Any, *, indices: torch.Tensor | None = None, steps: int, lr: float,
               batch_size: int = 64, seed: int = 0, momentum: float = 0.9) -> nn.Module:
    """A trained copy of ``init`` (left as found): ``steps`` of mini-batch SGD with momentum on the cross-entropy
    of ``data`` (an ``(inputs, targets)`` pair) restricted to ``indices`` (all examples when None), batches
    drawn from ``seed``. The model the data-diet experiments train from a shared initialization."""
    import copy

    import torch.nn.functional as F

    from labkit.training import fit, fit_loss

    if not isinstance(init, nn.Module):
        raise TypeError(f"init must be an nn.Module, got {type(init).__name__}")
    x, y = checked_data(data, init)[0] if isinstance(data, tuple) else (None, None)
    if x is None:
        raise TypeError("data must be one (inputs, targets) pair of tensors")
    if indices is not None:
        if not isinstance(indices, torch.Tensor) or indices.dtype != torch.long or indices.ndim != 1 \
                or not len(indices):
            raise TypeError("indices must be a non-empty 1-D LongTensor (as prune returns)")
        x, y = x[indices], y[indices]
    model = copy.deepcopy(init)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    fit(model, fit_loss(F.cross_entropy), (x, y), optimizer=opt, steps=steps, batch_size=batch_size, seed=seed,
        progress=False, eval_every=steps)
    return model.eval()
__all__ = ["auroc", "el2n", "grand", "prune", "train_copy"]
