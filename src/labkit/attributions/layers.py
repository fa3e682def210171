"""Saliency at every layer, combined across layers, and how class-sensitive it is.

After Rebuffi, Fong, Ji and Vedaldi, *There and Back Again: Revisiting Backpropagation Saliency
Methods*, CVPR 2020 (https://arxiv.org/abs/2004.02866): a layer-based method (``grad_cam``,
``norm_grad``, ...) can be read at any layer; maps from several layers can be combined; and a method is
*class-sensitive* when its maps for the most and the least likely class differ (their rank correlation
is low). Maps here are (N, H, W) tensors as the CAM functions return them, never min-max scaled except
inside :func:`combine_layer_maps`, which needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from labkit import checks
from labkit.attributions._common import check_callable, check_logits, check_model_input, evaluating, forward

CORRELATIONS = ("spearman", "pearson")
LayerMethod = Callable[..., torch.Tensor]
_METHOD = "method(model, x, target, *, layer, ...) returning maps (N, H, W), a layer-based map such as grad_cam"


def conv_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """The direct children of ``model`` that are or contain an ``nn.Conv2d``, by child name, in order.

    For :func:`labkit.models.cnn` these are the conv-[norm]-activation blocks, so each block's output is
    the post-activation feature map of one conv layer (the layers the paper reads saliency from).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    blocks = {
        name: child
        for name, child in model.named_children()
        if any(isinstance(m, nn.Conv2d) for m in child.modules())
    }
    if not blocks:
        raise ValueError("model has no direct child that is or contains an nn.Conv2d")
    return blocks


def _named_layers(model: nn.Module, layers: object) -> dict[str, nn.Module]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(layers, nn.Module):
        raise TypeError("layers must be a mapping {name: module} or a sequence of modules, got a single module")
    names = {id(m): name for name, m in model.named_modules()}
    if isinstance(layers, Mapping):
        named = dict(layers)
    elif isinstance(layers, Sequence) and not isinstance(layers, str):
        named = {}
        for layer in layers:
            if not isinstance(layer, nn.Module):
                raise TypeError(f"layers must hold nn.Module objects, got {type(layer).__name__}")
            named[names.get(id(layer), type(layer).__name__)] = layer
    else:
        raise TypeError(
            f"layers must be a mapping {{name: module}} or a sequence of modules, got {type(layers).__name__}"
        )
    if not named:
        raise ValueError("layers must name at least one layer")
    for name, layer in named.items():
        if not isinstance(layer, nn.Module):
            raise TypeError(f"layers[{name!r}] must be an nn.Module, got {type(layer).__name__}")
        if id(layer) not in names:
            raise ValueError(f"layers[{name!r}] ({type(layer).__name__}) is not a submodule of the model")
    return named


def layer_maps(
    method: LayerMethod,
    model: nn.Module,
    x: torch.Tensor,
    target: int | torch.Tensor,
    *,
    layers: Mapping[str, nn.Module] | Sequence[nn.Module],
    **kwargs: object,
) -> dict[str, torch.Tensor]:
    """``{name: method(model, x, target, layer=layer, **kwargs)}`` for every layer (Rebuffi et al., 2020).

    ``method`` is a layer-based map such as ``grad_cam`` or ``norm_grad``; ``layers`` a mapping of names to
    submodules or a sequence of submodules (named by their module path, e.g. ``"3"``). Keep the default
    ``upsample=True`` to get maps of one shape that :func:`combine_layer_maps` can combine.
    """
    named = _named_layers(model, layers)
    check_callable(method, "method", (model, x, target), {"layer": next(iter(named.values())), **kwargs},
                   _METHOD)
    return {name: method(model, x, target, layer=layer, **kwargs) for name, layer in named.items()}


def _check_maps(maps: object, name: str) -> torch.Tensor:
    checks.tensor(maps, name, floating=True, finite=False)
    assert isinstance(maps, torch.Tensor)
    if maps.ndim < 2 or maps.shape[0] == 0 or maps[0].numel() < 2:
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1 and at least 2 values per map, "
                         f"got {tuple(maps.shape)}")
    if not torch.isfinite(maps).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return maps


def _constant(flat: torch.Tensor, rtol: float) -> torch.Tensor:
    """Rows whose spread is at most ``rtol`` times their largest magnitude (an all-zero row included)."""
    spread = flat.max(1).values - flat.min(1).values
    return spread <= rtol * flat.abs().max(1).values


def _average_ranks(flat: torch.Tensor) -> torch.Tensor:
    """Ranks 0..M-1 within each row, ties sharing their average rank (as scipy.stats.rankdata)."""
    srt = flat.sort(dim=1).values
    lo = torch.searchsorted(srt, flat, side="left")
    hi = torch.searchsorted(srt, flat, side="right") - 1
    return (lo + hi).to(flat.dtype) / 2


def map_correlation(
    a: torch.Tensor, b: torch.Tensor, *, kind: str = "spearman", rtol: float = 1e-6
) -> torch.Tensor:
    """Per-example correlation (N,) between two batches of maps, each flattened.

    ``kind="spearman"`` (rank correlation with averaged ties, the class-sensitivity measure of Rebuffi et al.,
    2020) or ``"pearson"``. It is NaN where either map is constant (spread at most ``rtol`` times its largest
    magnitude, e.g. an all-zero Grad-CAM after the ReLU): a correlation with a constant is undefined, so
    average with ``nanmean`` and report how many were undefined.
    """
    a, b = _check_maps(a, "a"), _check_maps(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    checks.choice(kind, "kind", CORRELATIONS)
    rtol = checks.number(rtol, "rtol", low=0.0, high=1.0, high_open=True)
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    undefined = _constant(fa, rtol) | _constant(fb, rtol)
    if kind == "spearman":
        fa, fb = _average_ranks(fa.contiguous()), _average_ranks(fb.contiguous())
    fa = fa - fa.mean(1, keepdim=True)
    fb = fb - fb.mean(1, keepdim=True)
    denom = fa.norm(dim=1) * fb.norm(dim=1)
    corr = (fa * fb).sum(1) / torch.where(undefined | (denom == 0), torch.ones_like(denom), denom)
    corr = torch.where(undefined | (denom == 0), torch.full_like(corr, float("nan")), corr.clamp(-1, 1))
    return corr.to(a.dtype)


def max_min_class_correlation(
    method: LayerMethod,
    model: nn.Module,
    x: torch.Tensor,
    *,
    layer: nn.Module,
    kind: str = "spearman",
    **kwargs: object,
) -> torch.Tensor:
    """Class sensitivity (Rebuffi et al., 2020): per example, the correlation (N,) between the maps of the
    most and the least likely class (argmax and argmin of the logits) at ``layer``.

    Near 1: the map hardly depends on the class explained (class-insensitive); near 0 or below: it does.
    NaN where a map is constant (see :func:`map_correlation`; the paper's code drops these).
    ``kwargs`` go to ``method`` (e.g. ``relu=False`` for ``grad_cam``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    x = check_model_input(model, x)
    checks.choice(kind, "kind", CORRELATIONS)
    zeros = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    check_callable(method, "method", (model, x, zeros), {"layer": layer, **kwargs}, _METHOD)
    with torch.no_grad(), evaluating(model):
        logits = check_logits(forward(model, x), x.shape[0], zeros)
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("model gave NaN or infinite logits: check that its parameters are finite")
    top = logits.argmax(1)
    bottom = logits.argmin(1)
    maps_top = method(model, x, top, layer=layer, **kwargs)
    maps_bottom = method(model, x, bottom, layer=layer, **kwargs)
    return map_correlation(maps_top, maps_bottom, kind=kind)


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    spread = hi - lo
    safe = torch.where(spread > 0, spread, torch.ones_like(spread))
    out = torch.where(spread > 0, (flat - lo) / safe, torch.ones_like(flat))
    return out.view_as(maps)


def combine_layer_maps(maps: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> torch.Tensor:
    """Combine maps from several layers as the authors' code does (Rebuffi et al., 2020, "combi"): min-max
    normalise each example's map to [0, 1], then multiply the layers' maps.

    All maps must share one shape (N, H, W) (compute them with ``upsample=True``). A constant map carries
    no spatial information and counts as all ones (it leaves the product unchanged).
    """
    if isinstance(maps, torch.Tensor):
        raise TypeError("maps must be a mapping {layer name: maps} or a sequence of map tensors, got one tensor")
    if isinstance(maps, Mapping):
        items = list(maps.items())
    elif isinstance(maps, Sequence) and not isinstance(maps, str):
        items = list(enumerate(maps))
    else:
        raise TypeError(f"maps must be a mapping or a sequence of tensors, got {type(maps).__name__}")
    if not items:
        raise ValueError("maps must hold at least one layer's maps")
    shape = None
    for name, m in items:
        _check_maps(m, f"maps[{name!r}]")
        if shape is None:
            shape = m.shape
        elif m.shape != shape:
            raise ValueError(f"maps[{name!r}] has shape {tuple(m.shape)}, the first has {tuple(shape)}; "
                             "compute every layer's maps with upsample=True")
    out = _minmax(items[0][1])
    for _, m in items[1:]:
        out = out * _minmax(m)
    return out


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Pointing game (Zhang et al., 2016; the paper's localization test): per example, whether the map's
    maximum lies inside the object's mask. Returns a bool tensor (N,); a constant map points nowhere (False).

    ``maps`` and ``masks`` are (N, H, W) (or any equal shapes (N, ...)); ``masks`` is non-zero on the object.
    """
    maps = _check_maps(maps, "maps")
    checks.tensor(masks, "masks", finite=True)
    if masks.shape != maps.shape:
        raise ValueError(f"masks must have the maps' shape {tuple(maps.shape)}, got {tuple(masks.shape)}")
    flat = maps.flatten(1)
    peak = flat.argmax(1, keepdim=True)
    hit = masks.flatten(1).to(maps.device).gather(1, peak).squeeze(1) != 0
    return hit & ~_constant(flat, 0.0)
