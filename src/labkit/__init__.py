"""labkit: a small, tested PyTorch library behind the labkit workbook notebooks.

Pillars: ``labkit.attributions``, ``labkit.hessian``, ``labkit.grokking``, ``labkit.diffusion``,
``labkit.sam``. Shared core: ``labkit.runtime``, ``labkit.repro``, ``labkit.data``, ``labkit.models``,
``labkit.training``, ``labkit.viz``, ``labkit.widgets``.
"""

from labkit.repro import Claim, ClaimNotReproduced, check_claims
from labkit.runtime import setup

__all__ = ["Claim", "ClaimNotReproduced", "check_claims", "setup"]
__version__ = "0.1.0"
