"""One grokking run through :func:`labkit.training.fit`: full-batch AdamW (betas 0.9/0.98), losses,
interventions and progress measures recorded at an evaluation cadence.

Power et al. (2022, arXiv:2201.02177) train with AdamW, betas (0.9, 0.98) and weight decay 1 on a
fixed split of a modular-arithmetic table; every measure of the grokking notebooks is a history
column here, so a checkpointed run resumes with the same curves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from labkit.data.core import Split
from labkit.grokking.optim import GrokfastEMA, PerpGrad
from labkit.grokking.progress import (
    GrokSummary,
    fourier_concentration,
    fourier_power,
    grok_step,
    nlm_cosine,
    softmax_collapse_fraction,
    weight_norm,
)
from labkit.grokking.stablemax import classification_loss

OPTIMIZERS = ("adamw", "perp_adamw", "grokfast_adamw", "sgd", "perp_sgd")
BETAS = (0.9, 0.98)


def make_optimizer(model: nn.Module, name: str = "adamw", *, lr: float = 1e-3, weight_decay: float = 1.0,
                   betas: tuple[float, float] = BETAS, eps: float | None = None,
                   **kwargs: Any) -> torch.optim.Optimizer:
    """AdamW with the grokking betas, or ⊥AdamW / Grokfast-AdamW / SGD / ⊥SGD (``name``).

    ``eps`` is Adam's guard in m / (sqrt(v) + eps) (None: torch's 1e-8). Prieto et al.'s reference code
    uses ``eps=1e-25`` and ``betas=(0.9, 0.999)`` for its StableMax runs: late in a run without weight
    decay the gradients fall far below 1e-8, and with the default guard the steps shrink with them
    (about lr * |g| / eps instead of lr). ``betas`` and ``eps`` apply to the Adam-based optimizers only
    (``eps`` with "sgd" / "perp_sgd" is an error). Extra keywords go to the wrapper (``rescale``,
    ``ema_alpha``, ``ema_lamb``) or the base optimizer.
    """
    if len(tuple(betas)) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    if eps is not None and not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps >= 0):
        raise ValueError(f"eps must be a non-negative float or None, got {eps!r}")
    params = model.parameters()
    if name in ("sgd", "perp_sgd"):
        if eps is not None:
            raise ValueError(f"eps is an Adam option; optimizer {name!r} has none")
        if name == "sgd":
            return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, **kwargs)
        return PerpGrad(params, torch.optim.SGD, lr=lr, weight_decay=weight_decay, **kwargs)
    adam = dict(lr=lr, weight_decay=weight_decay, betas=tuple(betas), **({} if eps is None else {"eps": eps}))
    if name == "adamw":
        return torch.optim.AdamW(params, **adam, **kwargs)
    if name == "perp_adamw":
        return PerpGrad(params, torch.optim.AdamW, **adam, **kwargs)
    if name == "grokfast_adamw":
        return GrokfastEMA(params, torch.optim.AdamW, **adam, **kwargs)
    raise ValueError(f"optimizer name must be one of {OPTIMIZERS}, got {name!r}")


@dataclass
class GrokRun:
    """A finished run: its :class:`labkit.training.History`, the grokking summary and the model."""

    history: Any
    summary: GrokSummary
    model: nn.Module

    def spectra(self) -> torch.Tensor:
        """The recorded Fourier spectra (n_evals, p//2+1) when ``spectrum=True`` was asked for."""
        cols = sorted((c for c in self.history.rows[-1] if c.startswith("freq_")), key=lambda c: int(c[5:]))
        if not cols:
            raise ValueError("no spectrum recorded: run with spectrum=True")
        return torch.tensor([self.history[c] for c in cols]).T


def train_grokking(
    model: nn.Module,
    data: Split,
    *,
    optimizer: torch.optim.Optimizer,
    steps: int,
    loss: str = "softmax",
    eval_every: int | Sequence[int] = 50,
    measures: Sequence[str] = ("acc", "loss", "weight_norm"),
    spectrum: bool = False,
    extra_metrics: Mapping[str, Callable[[nn.Module], float]] | None = None,
    stop_after_grok: bool = False,
    snapshots: Sequence[int] = (),
    checkpoint: str | os.PathLike | None = None,
    on_nonfinite: str = "stop",
    progress: bool | None = None,
    desc: str = "grokking",
) -> GrokRun:
    """Full-batch training on ``data`` with ``loss`` in "softmax", "softmax64", "stablemax", "mse".

    ``measures`` picks history columns: "acc" (train_acc, test_acc), "loss" (train_loss, test_loss),
    "weight_norm", "collapse" (softmax_collapse: float32 Softmax Collapse share of the training set),
    "nlm_cosine" (cos(-grad, theta) on the training loss) and "fourier" (fourier_conc: top-5 share of
    the embedding's Fourier power; needs ``model.operand_embeddings()``). ``spectrum=True`` also
    records the whole spectrum as columns freq_0..freq_{p//2}. ``stop_after_grok`` ends the run at the
    first evaluation with train accuracy >= 99% and test accuracy >= 95% (so the summary has both steps).
    ``snapshots`` lists steps whose model state is kept in ``history.snapshots`` (see ``fit``).
    """
    from labkit.training import fit

    if not isinstance(data, Split):
        raise TypeError(f"data must be a labkit.data.Split, got {type(data).__name__}")
    known = {"acc", "loss", "weight_norm", "collapse", "nlm_cosine", "fourier"}
    unknown = set(measures) - known
    if unknown:
        raise ValueError(f"measures must be a subset of {sorted(known)}, got unknown {sorted(unknown)}")
    if ("fourier" in measures or spectrum) and not hasattr(model, "operand_embeddings"):
        raise ValueError("the 'fourier' measure and spectrum=True need a model with operand_embeddings()")
    criterion = classification_loss(loss)
    xtr, ytr, xte, yte = data.train_x, data.train_y, data.test_x, data.test_y

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return criterion(m(batch[0]), batch[1])

    cache: dict[str, Any] = {}

    def train_logits(m: nn.Module) -> torch.Tensor:
        """Train logits computed once per evaluation (keyed by the parameters' in-place versions)."""
        key = (id(m), tuple(p._version for p in m.parameters()))
        if cache.get("key") != key:
            with torch.no_grad():
                cache["logits"] = m(xtr)
            cache["key"] = key
        return cache["logits"]

    metrics: dict[str, Callable[[nn.Module], float]] = {}
    if "acc" in measures:
        metrics["train_acc"] = lambda m: (train_logits(m).argmax(-1) == ytr).float().mean().item()
        metrics["test_acc"] = lambda m: (m(xte).argmax(-1) == yte).float().mean().item()
    if "loss" in measures:
        metrics["train_loss"] = lambda m: criterion(train_logits(m), ytr).item()
        metrics["test_loss"] = lambda m: criterion(m(xte), yte).item()
    if "weight_norm" in measures:
        metrics["weight_norm"] = weight_norm
    if "collapse" in measures:
        metrics["softmax_collapse"] = lambda m: softmax_collapse_fraction(train_logits(m), ytr)
    if "nlm_cosine" in measures:
        metrics["nlm_cosine"] = lambda m: nlm_cosine(m, lambda mm: criterion(mm(xtr), ytr))
    if "fourier" in measures:
        metrics["fourier_conc"] = lambda m: fourier_concentration(m.operand_embeddings())
    if spectrum:
        def spec_metric(k: int) -> Callable[[nn.Module], float]:
            return lambda m: float(fourier_power(m.operand_embeddings())[k])

        n_freq = data.num_classes // 2 + 1
        for k in range(n_freq):
            metrics[f"freq_{k}"] = spec_metric(k)
    metrics.update(extra_metrics or {})

    stop_when = None
    if stop_after_grok and "acc" in measures:
        stop_when = lambda h: h.last("test_acc") >= 0.95 and h.last("train_acc") >= 0.99  # noqa: E731
    history = fit(model, loss_fn, (xtr, ytr), optimizer=optimizer, steps=steps, metrics=metrics,
                  eval_every=eval_every, stop_when=stop_when, snapshots=snapshots, checkpoint=checkpoint,
                  on_nonfinite=on_nonfinite, progress=progress, desc=desc)
    summary = grok_step(history) if "acc" in measures else GrokSummary(None, None, 0.99, 0.95)
    return GrokRun(history, summary, model)
