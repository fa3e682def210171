"""labkit: a small, tested PyTorch library behind the labkit workbook notebooks.

Pillars: ``labkit.attributions``, ``labkit.hessian``, ``labkit.grokking``, ``labkit.diffusion``,
``labkit.sam``. Start a notebook with ``run = labkit.start(seed=SEED, scale=SCALE, device=DEVICE, config=...)``.
Shared core: ``labkit.runtime``, ``labkit.autograd``, ``labkit.repro``, ``labkit.data``, ``labkit.models``,
``labkit.training``, ``labkit.viz``, ``labkit.widgets``.
"""

from labkit.repro import Check, Claim, ClaimNotReproduced, check_claims
from labkit.runtime import Run, setup, start

__all__ = ["Check", "Claim", "ClaimNotReproduced", "Run", "check_claims", "setup", "start"]
__version__ = "0.1.0"
