"""MLP and CNN builders shared by several pillars, and a parameter count."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

_ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "softplus": nn.Softplus, "identity": nn.Identity,
}
_NORMS = ("none", "batch", "layer")


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    *,
    activation: str = "relu",
    bias: bool = True,
    norm: str = "none",
) -> nn.Sequential:
    """A fully connected net ``in -> hidden[0] -> ... -> out`` (logits, no final activation).

    ``norm`` in {"none", "batch", "layer"} adds a normalization layer after each hidden linear layer.
    """
    if in_features < 1 or out_features < 1 or any(h < 1 for h in hidden):
        raise ValueError(
            f"layer sizes must be positive, got in={in_features}, hidden={list(hidden)}, out={out_features}")
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers.append(nn.Linear(width, h, bias=bias))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(h))
        elif norm == "layer":
            layers.append(nn.LayerNorm(h))
        layers.append(_activation(activation))
        width = h
    layers.append(nn.Linear(width, out_features, bias=bias))
    return nn.Sequential(*layers)


def cnn(
    in_channels: int = 1,
    num_classes: int = 10,
    *,
    channels: Sequence[int] = (16, 32),
    image_size: int = 8,
    activation: str = "relu",
    norm: str = "none",
    pool_every: int = 1,
) -> nn.Sequential:
    """A small conv net: 3x3 convs (padding 1), optional BatchNorm, 2x2 max-pool after every
    ``pool_every`` convs while the map is larger than 2x2, then global average pooling and a linear head.

    Each conv block is ``nn.Sequential(conv, [norm], act)`` so CAM methods can pick ``model[i]`` as layer.
    """
    if not channels:
        raise ValueError("channels must name at least one conv layer")
    if norm not in ("none", "batch", "group"):
        raise ValueError(f"norm must be 'none', 'batch' or 'group', got {norm!r}")
    layers: list[nn.Module] = []
    c_in, size = in_channels, image_size
    for i, c_out in enumerate(channels):
        block: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1)]
        if norm == "batch":
            block.append(nn.BatchNorm2d(c_out))
        elif norm == "group":
            block.append(nn.GroupNorm(min(4, c_out), c_out))
        block.append(_activation(activation))
        layers.append(nn.Sequential(*block))
        if (i + 1) % pool_every == 0 and size > 2 and i < len(channels) - 1:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
