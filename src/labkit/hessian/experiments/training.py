"""Training set-ups shared by the Hessian notebooks' experiments: a seeded default initialisation, a copy of a
generator, and one training loop (Adam or plain (S)GD through :func:`labkit.training.fit`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from labkit import checks
from labkit.autograd import check_generator
from labkit.training import History, LossFn, cross_entropy, fit

OPTIMIZERS = ("adam", "sgd")


@contextlib.contextmanager
def seeded_init(seed: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """Seed torch's global generator with ``seed`` for a block (a module's default initialisation), then
    restore it."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def copy_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """A new generator in the same state (so several networks get the same draws), or None."""
    generator = check_generator(generator)
    if generator is None:
        return None
    twin = torch.Generator(device=generator.device)
    twin.set_state(generator.get_state())
    return twin


def train_network(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    lr: float,
    steps: int,
    optimizer: str = "adam",
    loss: LossFn = cross_entropy,
    target_loss: float | None = None,
    batch_size: int | None = None,
    batch_seed: int = 0,
    metrics: Mapping[str, Callable[[nn.Module], float]] | None = None,
    eval_every: int | None = None,
    snapshots: Sequence[int] = (),
    desc: str = "training",
) -> History:
    """Train ``model`` in place with Adam or plain (S)GD through :func:`labkit.training.fit`.

    ``target_loss``: stop at the first step whose training loss is below it (the loss is checked every
    step), so that several networks are compared at the same loss (Sagun et al. 2018). ``batch_size=None``
    is full-batch gradient descent; else seeded mini-batches (``batch_seed``, any non-negative int such as
    ``run.seed_for("batches")``: it is reduced to 32 bits, as ``fit`` multiplies its seed into a 64-bit one).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    checks.number(lr, "lr", low=0, low_open=True)
    checks.positive_int(steps, "steps")
    if target_loss is not None:
        checks.number(target_loss, "target_loss", low=0, low_open=True)
    if batch_size is not None:
        checks.positive_int(batch_size, "batch_size")
    if isinstance(batch_seed, bool) or not isinstance(batch_seed, int) or batch_seed < 0:
        raise ValueError(f"batch_seed must be a non-negative int, got {batch_seed!r}")
    make = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    stop = None
    if target_loss is not None:
        eval_every = 1

        def stop(h: History) -> bool:
            return bool(h.loss) and h.loss[-1] < target_loss

    return fit(model, loss, data, optimizer=make(model.parameters(), lr=lr), steps=steps, batch_size=batch_size,
               seed=batch_seed % 2**32, metrics=metrics, eval_every=eval_every, snapshots=snapshots, stop_when=stop,
               desc=desc)


__all__ = ["OPTIMIZERS", "copy_generator", "seeded_init", "train_network"]
