"""One grokking run through :func:`labkit.training.fit`: full-batch AdamW (betas 0.9/0.98), losses,
interventions and progress measures recorded at an evaluation cadence.

Power et al. (2022, arXiv:2201.02177) train with AdamW, betas (0.9, 0.98) and weight decay 1 on a
fixed split of a modular-arithmetic table; every measure of the grokking notebooks is a history
column here, so a checkpointed run resumes with the same curves.

The set-up the grokking notebooks share lives here too: :func:`fresh_model` (a one-hot MLP initialised
from a seed, e.g. ``run.seed_for("init")``) and :func:`modular_run` (fresh model + :func:`make_optimizer`
+ :func:`train_grokking` in one call).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from labkit import checks
from labkit.autograd import check_module, train_mode
from labkit.data.core import Split
from labkit.grokking.models import OneHotMLP
from labkit.grokking.modular import ModularSplit
from labkit.grokking.optim import LARGEST, GrokfastEMA, PerpGrad, check_hyperparameters
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
from labkit.runtime import check_seed, pick_device

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
    check_module(model)
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {OPTIMIZERS}, got {name!r}")
    check_hyperparameters({"lr": lr, "weight_decay": weight_decay})
    try:
        check_hyperparameters({"betas": betas})
    except TypeError as err:  # betas given as a string, a number, ...
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}") from err
    if eps is not None:
        try:
            checks.number(eps, "eps", low=0.0, high=LARGEST)
        except (TypeError, ValueError) as err:
            raise ValueError(f"eps must be a non-negative float or None, got {eps!r}") from err
    check_hyperparameters(kwargs)
    if "ema_alpha" in kwargs:
        checks.number(kwargs["ema_alpha"], "ema_alpha", low=0.0, high=1.0, high_open=True)
    if "ema_lamb" in kwargs:
        checks.number(kwargs["ema_lamb"], "ema_lamb", low=0.0, high=LARGEST)
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


@dataclass(frozen=True)
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
    stop_when: Callable[[Any], bool] | None = None,
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
    ``stop_when(history)``, called after every evaluation, ends the run early too (an explorer passes
    ``lambda h: progress(h.steps[-1], steps)`` so its Stop button ends a run and the curves so far remain).
    ``snapshots`` lists steps whose model state is kept in ``history.snapshots`` (see ``fit``).
    """
    from labkit.training import fit

    check_module(model)
    if not isinstance(data, Split):
        raise TypeError(f"data must be a labkit.data.Split, got {type(data).__name__}")
    if isinstance(measures, str):
        raise TypeError(f"measures must be a sequence of measure names, not the string {measures!r}")
    for name, metric in (extra_metrics or {}).items():
        if not callable(metric):
            raise TypeError(f"extra_metrics[{name!r}] must be a callable metric(model) -> float")
    known = {"acc", "loss", "weight_norm", "collapse", "nlm_cosine", "fourier"}
    unknown = set(measures) - known
    if unknown:
        raise ValueError(f"measures must be a subset of {sorted(known)}, got unknown {sorted(unknown)}")
    if ("fourier" in measures or spectrum) and not hasattr(model, "operand_embeddings"):
        raise ValueError("the 'fourier' measure and spectrum=True need a model with operand_embeddings()")
    if stop_when is not None and not callable(stop_when):
        raise TypeError(f"stop_when must be None or a callable stop_when(history) -> bool, "
                        f"got {type(stop_when).__name__}")
    criterion = classification_loss(loss)
    check_data(model, data)
    xtr, ytr, xte, yte = data.train_x, data.train_y, data.test_x, data.test_y

    # The train logits feed several columns; compute them once per evaluation. The cache key is the number
    # of training-loss evaluations so far: the parameters change only through a step, which calls the loss.
    losses_taken = [0]
    cache: dict[str, Any] = {}

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        losses_taken[0] += 1
        return criterion(m(batch[0]), batch[1])

    def train_logits(m: nn.Module) -> torch.Tensor:
        if cache.get("key") != losses_taken[0]:
            with torch.no_grad():
                cache["logits"] = m(xtr)
            cache["key"] = losses_taken[0]
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
    # the measures that refuse NaN input record NaN once a run has diverged (on_nonfinite="stop" evaluates it)
    if "collapse" in measures:
        metrics["softmax_collapse"] = lambda m: _finite_or_nan(
            train_logits(m), lambda z: softmax_collapse_fraction(z, ytr))
    if "nlm_cosine" in measures:
        metrics["nlm_cosine"] = lambda m: _finite_or_nan(
            train_logits(m), lambda _: nlm_cosine(m, lambda mm: criterion(mm(xtr), ytr)))
    if "fourier" in measures:
        metrics["fourier_conc"] = lambda m: _finite_or_nan(m.operand_embeddings(), fourier_concentration)
    if spectrum:
        def spec_metric(k: int) -> Callable[[nn.Module], float]:
            return lambda m: _finite_or_nan(m.operand_embeddings(), lambda e: float(fourier_power(e)[k]))

        n_freq = data.num_classes // 2 + 1
        for k in range(n_freq):
            metrics[f"freq_{k}"] = spec_metric(k)
    metrics.update(extra_metrics or {})

    stop_at_grok = stop_after_grok and "acc" in measures

    def stop(h: Any) -> bool:
        if stop_at_grok and h.last("test_acc") >= 0.95 and h.last("train_acc") >= 0.99:
            return True
        return stop_when is not None and bool(stop_when(h))

    history = fit(model, loss_fn, (xtr, ytr), optimizer=optimizer, steps=steps, metrics=metrics,
                  eval_every=eval_every, stop_when=stop if stop_at_grok or stop_when is not None else None,
                  snapshots=snapshots, checkpoint=checkpoint,
                  on_nonfinite=on_nonfinite, progress=progress, desc=desc)
    summary = grok_step(history) if "acc" in measures else GrokSummary(None, None, 0.99, 0.95)
    return GrokRun(history, summary, model)


def _finite_or_nan(values: torch.Tensor, measure: Callable[[torch.Tensor], float]) -> float:
    return measure(values) if bool(torch.isfinite(values.detach()).all()) else float("nan")


def check_data(model: nn.Module, data: Split, name: str = "data") -> None:
    """Refuse data the model cannot train on, with errors naming ``name``: a :class:`ModularSplit` must hold
    residues of its ``p`` and match a model's ``p``; any split must be non-empty, finite, of the model's
    floating dtype, readable by the model (one example in eval mode, no gradient) and have labels inside the
    model's outputs."""
    if isinstance(data, ModularSplit):
        data.check(name)
        model_p = getattr(model, "p", None)
        if isinstance(model_p, int) and model_p != data.p:
            raise ValueError(f"{name} was made with p={data.p} but the model reads residues mod p={model_p}: "
                             "build the model and the split with the same p")
    for part in ("train_x", "train_y", "test_x", "test_y"):
        checks.tensor(getattr(data, part), f"{name}.{part}")
        if part.endswith("_x"):
            checks.same_dtype_as_model(getattr(data, part), model, f"{name}.{part}")
    xtr, ytr = data.train_x, data.train_y
    if not xtr.shape[0] or xtr.shape[0] != ytr.shape[0] or data.test_x.shape[0] != data.test_y.shape[0]:
        raise ValueError(f"{name} must have a non-empty training part and as many labels as inputs, got train "
                         f"{tuple(xtr.shape)} / {tuple(ytr.shape)}, test {tuple(data.test_x.shape)} / "
                         f"{tuple(data.test_y.shape)}")
    try:
        with torch.no_grad(), train_mode(model, False):
            out = model(xtr[:1])
    except (RuntimeError, IndexError) as err:
        raise ValueError(f"the model cannot read {name}.train_x of shape {tuple(xtr.shape)}: {err}") from err
    if isinstance(out, torch.Tensor) and out.ndim == 2 and not ytr.is_floating_point():
        for part in ("train_y", "test_y"):
            checks.class_indices(getattr(data, part), out.shape[1], f"{name}.{part} (the model has "
                                 f"{out.shape[1]} outputs)")


def fresh_model(p: int, *, seed: int, hidden: Sequence[int] = (128, 128), activation: str = "relu",
                bias: bool = True, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> OneHotMLP:
    """A :class:`OneHotMLP` for residues mod ``p`` initialised from ``seed`` (torch's default init under a
    seeded global generator, restored afterwards): the same seed gives the same network, so runs that
    differ only in their optimizer or loss start from the same weights (Power et al., 2022; Prieto et
    al., 2025). In a notebook: ``fresh_model(p, seed=run.seed_for("init"), ...)``. ``dtype`` (float32 or float64)
    is that of the weights: Prieto et al. train some runs in float64 (the init is drawn in float32, then cast)."""
    check_seed(seed)
    checks.integer(p, "p", low=2)
    device = pick_device(device)
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = OneHotMLP(p, hidden=hidden, activation=activation, bias=bias)
    return model.to(device=device, dtype=dtype)


def modular_run(
    data: ModularSplit,
    *,
    seed: int,
    steps: int,
    hidden: Sequence[int] = (128, 128),
    activation: str = "relu",
    bias: bool = True,
    optimizer: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 1.0,
    betas: tuple[float, float] = BETAS,
    eps: float | None = None,
    dtype: torch.dtype = torch.float32,
    **train_options: Any,
) -> GrokRun:
    """One grokking experiment on a modular-arithmetic split: :func:`fresh_model` from ``seed`` (on the
    data's device, weights in ``dtype``), :func:`make_optimizer` (``optimizer``, ``lr``, ``weight_decay``,
    ``betas``, ``eps``) and :func:`train_grokking` for ``steps`` full-batch steps; ``train_options`` go to
    :func:`train_grokking` (``loss``, ``eval_every``, ``measures``, ``spectrum``, ``stop_after_grok``,
    ``snapshots``, ``desc``, ...). Power et al. (2022): AdamW, betas (0.9, 0.98), weight decay 1.
    """
    if not isinstance(data, ModularSplit):
        raise TypeError(f"data must be a ModularSplit (labkit.grokking.modular_arithmetic), got {type(data).__name__}")
    data.check("data")
    check_seed(seed)
    model = fresh_model(data.p, seed=seed, hidden=hidden, activation=activation, bias=bias,
                        device=data.train_x.device, dtype=dtype)
    opt = make_optimizer(model, optimizer, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)
    return train_grokking(model, data, optimizer=opt, steps=steps, **train_options)
