"""Training dynamics: how gradient descent moves through training.

Batch size and curvature (:mod:`labkit.dynamics.curvature`: the top Hessian eigenvalue of mini-batch losses
next to the full-batch one, the largest stable learning rate per batch size; Granziol et al., *Learning Rates
as a Function of Batch Size: A Random Matrix Theory Approach to Neural Network Training*, arXiv 2006.09092),
outliers with opposing signals (:mod:`labkit.dynamics.opposing`), incremental learning in matrix sensing
(:mod:`labkit.dynamics.sensing`) and gradient surgery (:mod:`labkit.dynamics.surgery`).
"""

__all__: list[str] = []
