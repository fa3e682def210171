"""Run-time set-up shared by every notebook: seeding, device choice and thread count."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

SCALES = ("teach", "paper")


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """Return a ``torch.device``: ``"auto"`` picks CUDA when present, else CPU.

    Raises ``ValueError`` for an unknown name or ``"cuda"`` on a machine without CUDA.
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available on this machine")
    return chosen


def check_scale(scale: str) -> str:
    """Validate a notebook ``SCALE`` value (``"teach"`` or ``"paper"``)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return scale


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (all devices)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeding the legacy global is the point here
    torch.manual_seed(seed)


def setup(seed: int = 0, device: str | torch.device = "auto", threads: int | None = None) -> torch.device:
    """Seed everything, pick the device and set torch's CPU thread count; return the device.

    ``threads=None`` means one thread on CPU (small models are fastest that way on a shared
    2-core machine) and torch's default on CUDA. ``LABKIT_THREADS`` overrides the default.
    """
    chosen = pick_device(device)
    seed_everything(seed)
    if threads is None:
        env = os.environ.get("LABKIT_THREADS")
        threads = int(env) if env else (1 if chosen.type == "cpu" else None)
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        torch.set_num_threads(threads)
    return chosen


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A seeded ``torch.Generator`` on ``device`` (for explicit ``generator=`` arguments)."""
    gen = torch.Generator(device=pick_device(device))
    gen.manual_seed(seed)
    return gen
