"""Progress measures and diagnostics of grokking.

- ``grok_step``: when the model memorized (train >= 99%) and when it generalized (test >= 95%) and
  their ratio (Power et al., 2022, arXiv:2201.02177).
- ``softmax_collapse_fraction`` and ``nlm_cosine``: Softmax Collapse and the alignment of the gradient
  with the naive-loss-minimization direction (Prieto et al., 2025, arXiv:2501.04697).
- ``fourier_power`` / ``fourier_concentration`` / ``key_frequencies``: how much of an embedding's
  variation over residues lives in a few frequencies (Nanda et al., 2023, arXiv:2301.05217);
  ``progress_lead``: how much of such a measure's rise comes before the test accuracy moves.
- ``weight_norm`` and ``parameter_drift``: how large the weights are and how far they moved from a
  reference (Tian, 2025, arXiv:2509.21519: lazy memorization keeps the hidden layer near its start).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from labkit import checks
from labkit.autograd import check_module, flatten, preserve_model, resolve_params, zeros_if_none


@dataclass(frozen=True)
class GrokSummary:
    """``memorize_step``: first evaluation with train accuracy >= threshold; ``generalize_step``: first
    with test accuracy >= threshold; ``delay_ratio`` = generalize_step / max(memorize_step, 1)."""

    memorize_step: int | None
    generalize_step: int | None
    train_threshold: float
    test_threshold: float

    @property
    def memorized(self) -> bool:
        return self.memorize_step is not None

    @property
    def grokked(self) -> bool:
        return self.generalize_step is not None

    @property
    def delay_ratio(self) -> float | None:
        if self.memorize_step is None or self.generalize_step is None:
            return None
        return self.generalize_step / max(self.memorize_step, 1)

    def __str__(self) -> str:
        ratio = "—" if self.delay_ratio is None else f"{self.delay_ratio:.1f}x"
        return (f"train >= {self.train_threshold:.0%} at step {self.memorize_step}, "
                f"test >= {self.test_threshold:.0%} at step {self.generalize_step} (delay ratio {ratio})")


def grok_step(history: Any, *, train: str = "train_acc", test: str = "test_acc",
              train_threshold: float = 0.99, test_threshold: float = 0.95) -> GrokSummary:
    """Summarize a :class:`labkit.training.History` (or a mapping with "step", train, test lists)."""
    for name, value in (("train_threshold", train_threshold), ("test_threshold", test_threshold)):
        checks.number(value, name, low=0.0, high=1.0, low_open=True)
    steps = list(history["step"]) if isinstance(history, Mapping) and "step" in history else \
        getattr(history, "steps", None)
    if steps is None:
        raise TypeError("history must be a labkit.training.History or a mapping with 'step', "
                        f"{train!r} and {test!r} lists, got {type(history).__name__}")
    tr, te = _column(history, train, "train"), _column(history, test, "test")
    if not (len(steps) == len(tr) == len(te)):
        raise ValueError("history: steps, train and test columns must have the same length")
    first = lambda vals, thr: next((int(s) for s, v in zip(steps, vals, strict=True) if v >= thr), None)  # noqa: E731
    return GrokSummary(first(tr, train_threshold), first(te, test_threshold), train_threshold, test_threshold)


def _column(history: Any, key: Any, name: str, *, finite: bool = True) -> list[float]:
    """``history[key]`` as a list of numbers; a missing column or a NaN in it is an error naming ``name``."""
    try:
        values = list(history[key])
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(f"{name}: history has no column {key!r}") from err
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name}: column {key!r} must hold numbers, got {type(v).__name__}")
        if finite and not math.isfinite(v):
            raise ValueError(f"{name}: column {key!r} contains NaN or infinite values")
    return values


def progress_lead(history: Any, measure: str, *, test: str = "test_acc", below: float = 0.1) -> float:
    """The share of a progress measure's rise (first to last evaluation) already made at the last evaluation
    where the test accuracy is still below ``below``.

    Nanda et al. (2023) find that progress measures such as the Fourier concentration of the embedding rise
    gradually, well before the test accuracy jumps: a share well above 0 says the measure leads. NaN when
    the measure did not change; a ValueError when the test accuracy is never below ``below``.
    """
    checks.number(below, "below", low=0.0, high=1.0, low_open=True)
    values, acc = _column(history, measure, "measure"), _column(history, test, "test")
    if not values or len(values) != len(acc):
        raise ValueError(f"history: the measure and test columns must be non-empty and of the same length, got "
                         f"{len(values)} and {len(acc)}")
    low = [i for i, a in enumerate(acc) if a < below]
    if not low:
        raise ValueError(f"the {test!r} column is never below {below}: no evaluation before the jump")
    rise = values[-1] - values[0]
    return math.nan if rise == 0 else (values[low[-1]] - values[0]) / rise


def softmax_collapse_fraction(logits: torch.Tensor, target: torch.Tensor, *,
                              dtype: torch.dtype = torch.float32) -> float:
    """Share of examples in Softmax Collapse: their cross-entropy, computed in ``dtype``, is exactly 0.

    In float32 the sum ``sum_j exp(z_j - z_max)`` rounds to exactly 1 once the other logits are about
    17 below the top one (absorption); the loss and the gradient on the correct logit are then exactly
    zero, so the example stops teaching the model anything (Prieto et al., 2025, section 3). Examples
    whose top logit is not the target are never counted.
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or not logits.is_floating_point():
        got = getattr(logits, "shape", type(logits))
        raise ValueError(f"logits must be a floating (N, C) tensor, got {got}")
    checks.tensor(logits, "logits", nonempty=True)  # a NaN row would count as "not collapsed" silently
    if not isinstance(target, torch.Tensor) or target.dtype != torch.long or target.shape != logits.shape[:1]:
        raise ValueError(f"target must be a LongTensor of shape ({logits.shape[0]},)")
    checks.class_indices(target, logits.shape[1], "target")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    with torch.no_grad():
        losses = torch.nn.functional.cross_entropy(logits.detach().to(dtype), target, reduction="none")
        return (losses == 0).float().mean().item()


def nlm_cosine(model: nn.Module, loss: Callable[[nn.Module], torch.Tensor] | torch.Tensor, *,
               params: Sequence[torch.Tensor] | None = None) -> float:
    """cos(-grad L, theta): alignment of the descent direction with the naive-loss-minimization direction.

    Scaling all weights up scales the logits of a (near-)homogeneous network, which lowers the loss of a
    fitted training set without changing predictions. Prieto et al. (2025) show the gradient aligns with
    that direction (cosine near 1) after memorization. ``loss`` is a scalar tensor built from ``model``
    or a callable ``loss(model)``. Uses ``torch.autograd.grad``: ``param.grad`` is left untouched.
    """
    check_module(model)
    params = [p for p in resolve_params(model, params) if p.requires_grad]  # refuses another model's tensors
    if not params:
        raise ValueError("model has no trainable parameters among params")
    if not callable(loss) and not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss must be a scalar tensor or a callable loss(model), got {type(loss).__name__}")
    # the model as found afterwards: a forward in train mode must not move BatchNorm's running statistics
    with preserve_model(model, params=False), torch.enable_grad():
        value = loss(model) if callable(loss) else loss
        if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.requires_grad:
            raise ValueError("loss must be a scalar tensor built from model's parameters, or a callable "
                             "returning one")
        if not bool(torch.isfinite(value.detach()).all()):
            raise ValueError(f"loss is {float(value.detach())}: the cosine with a non-finite gradient is undefined")
        grads = torch.autograd.grad(value, params, allow_unused=True)
    g = flatten(zeros_if_none(grads, params))
    w = flatten([p.detach() for p in params])
    return torch.nn.functional.cosine_similarity(-g, w, dim=0).item()


def _embedding(embedding: torch.Tensor) -> torch.Tensor:
    """A finite real (p, d) or (m, p, d) tensor with p >= 2 as float64 (m, p, d): a NaN would otherwise come out
    as garbage frequencies (``topk`` / ``argmax`` of NaN) or be dropped from the purity silently."""
    if not isinstance(embedding, torch.Tensor) or embedding.ndim not in (2, 3):
        got = getattr(embedding, "shape", None)
        raise ValueError(f"embedding must have shape (p, d) or (m, p, d), got {got}")
    if embedding.is_complex() or embedding.dtype == torch.bool:
        raise TypeError(f"embedding must be a real tensor, got {embedding.dtype}")
    checks.tensor(embedding, "embedding", nonempty=True)
    if embedding.shape[-2] < 2:
        raise ValueError(f"embedding must cover p >= 2 residues (shape (p, d) or (m, p, d)), "
                         f"got shape {tuple(embedding.shape)}")
    e = embedding.detach().to(torch.float64)
    return e.unsqueeze(0) if e.ndim == 2 else e


def _top_k(top_k: int, n: int) -> int:
    checks.integer(top_k, "top_k")
    if not 1 <= top_k <= n:
        raise ValueError(f"top_k must be in [1, {n}], got {top_k}")
    return top_k


def fourier_power(embedding: torch.Tensor) -> torch.Tensor:
    """Power per frequency k = 0..p//2 of an embedding over the residues: (p, d) or (m, p, d) -> (p//2+1,).

    ``|DFT_a E[a, :]|^2`` summed over the feature dimension (and over the leading tables, e.g. the two
    operands of :class:`labkit.grokking.models.OneHotMLP`); frequencies k and p - k are merged.
    """
    e = _embedding(embedding)
    p = e.shape[1]
    spec = torch.fft.rfft(e, dim=1).abs().pow(2).sum(dim=(0, 2))  # (p//2+1,)
    # rfft keeps one of each pair (k, p-k): double those to count both (not k=0 nor k=p/2 for even p)
    weights = torch.full_like(spec, 2.0)
    weights[0] = 1.0
    if p % 2 == 0:
        weights[-1] = 1.0
    return (spec * weights / p).to(embedding.dtype if embedding.is_floating_point() else torch.float32)


def fourier_concentration(embedding: torch.Tensor, *, top_k: int = 5) -> float:
    """Share of the embedding's non-constant Fourier power in its ``top_k`` strongest frequencies.

    A random embedding spreads power over all p//2 frequencies (about top_k / (p//2)); the
    generalizing solution for modular addition uses a handful of key frequencies (close to 1).
    """
    power = fourier_power(embedding)[1:]
    _top_k(top_k, power.numel())
    total = power.sum()
    if total <= 0:
        return 0.0
    return (power.topk(top_k).values.sum() / total).item()


def key_frequencies(embedding: torch.Tensor, *, top_k: int = 5) -> list[int]:
    """The ``top_k`` frequencies (1..p//2) with the most power, strongest first."""
    power = fourier_power(embedding)[1:]
    _top_k(top_k, power.numel())
    return [int(i) + 1 for i in power.topk(top_k).indices]


def node_spectra(embedding: torch.Tensor) -> torch.Tensor:
    """Per hidden node (column) Fourier power over the residues, frequencies 1..p//2: (width, p//2).

    ``embedding`` is (p, width) or (m, p, width) (summed over the m tables); the constant is excluded.
    """
    e = _embedding(embedding)
    return torch.fft.rfft(e, dim=1).abs().pow(2).sum(dim=0)[1: e.shape[1] // 2 + 1].T


def feature_purity(embedding: torch.Tensor) -> float:
    """Mean over hidden nodes of the share of a node's Fourier power in its strongest frequency.

    Near 1 when every node has become a single-frequency (irreducible-representation) feature, as in
    the independent feature-learning stage of Tian (2025); about 2-3 / (p//2) for random weights.
    """
    spec = node_spectra(embedding)
    total = spec.sum(dim=1)
    keep = total > 0
    if not bool(keep.any()):
        return 0.0
    return (spec.max(dim=1).values[keep] / total[keep]).mean().item()


def frequency_coverage(embedding: torch.Tensor, *, purity: float = 0.5) -> torch.Tensor:
    """How many single-frequency hidden nodes each frequency 1..p//2 has: LongTensor (p//2,).

    A node counts as a feature of frequency k when k holds at least ``purity`` of its Fourier power.
    Tian (2025, arXiv:2509.21519), stage III (interactive feature learning): once nodes interact, the
    back-propagated gradient focuses on the features still missing, so the learned features cover every
    irreducible representation that the group task needs (a zero entry is a missing frequency).
    """
    checks.number(purity, "purity", low=0.0, high=1.0, low_open=True)
    spec = node_spectra(embedding)
    total = spec.sum(dim=1)
    share = torch.where(total > 0, spec.max(dim=1).values / total.clamp_min(1e-300), torch.zeros_like(total))
    dominant = spec.argmax(dim=1)
    return torch.bincount(dominant[share >= purity], minlength=spec.shape[1])


def node_frequencies(embedding: torch.Tensor) -> torch.Tensor:
    """The strongest frequency (1..p//2) of each hidden node: LongTensor (width,)."""
    return node_spectra(embedding).argmax(dim=1) + 1


def weight_norm(model: nn.Module | Sequence[torch.Tensor]) -> float:
    """The L2 norm of all parameters together (what weight decay shrinks)."""
    if not isinstance(model, nn.Module) and (isinstance(model, (str, bytes, torch.Tensor))
                                             or not isinstance(model, Sequence)):
        raise TypeError(f"model must be an nn.Module or a sequence of tensors, got {type(model).__name__}")
    params = list(model.parameters()) if isinstance(model, nn.Module) else list(model)
    if not params:
        raise ValueError("model: no parameters to measure")
    for p in params:
        checks.tensor(p, "model's parameters", finite=False)
    return torch.sqrt(sum(p.detach().double().pow(2).sum() for p in params)).item()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's parameters by name (a reference for :func:`parameter_drift`)."""
    check_module(model)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def parameter_drift(model: nn.Module, reference: Mapping[str, torch.Tensor], *,
                    names: Sequence[str] | None = None) -> float:
    """Relative distance ||theta - theta_ref|| / ||theta_ref|| over the parameters ``names`` (default all)."""
    check_module(model)
    if not isinstance(reference, Mapping):
        raise TypeError(f"reference must be a mapping name -> tensor (see snapshot), got {type(reference).__name__}")
    current = dict(model.named_parameters())
    if isinstance(names, str):
        raise TypeError("names must be a sequence of parameter names, not a single string")
    names = list(names) if names is not None else list(reference)
    if not names:
        raise ValueError("names: no parameters to compare")
    missing = [n for n in names if n not in current or n not in reference]
    if missing:
        raise ValueError(f"unknown parameter names {missing}; model has {sorted(current)}")
    for n in names:
        ref = checks.tensor(reference[n], f"reference[{n!r}]")
        if ref.shape != current[n].shape:
            raise ValueError(f"reference[{n!r}] has shape {tuple(ref.shape)} but the model's parameter has "
                             f"{tuple(current[n].shape)}: a snapshot of another architecture?")
        reference = {**reference, n: ref.to(current[n].device)}
    diff = sum((current[n].detach().double() - reference[n].double()).pow(2).sum() for n in names)
    base = sum(reference[n].double().pow(2).sum() for n in names)
    return (torch.sqrt(diff) / torch.sqrt(base).clamp_min(1e-30)).item()
