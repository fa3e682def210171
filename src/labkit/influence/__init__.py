"""Which training examples made this prediction: gradients of the data rather than of the input.

* :func:`per_example_grads`: one gradient per example (``torch.func``), the start of every method here.
* :func:`influence_scores`: ``∇L(query)ᵀ (C + λI)⁻¹ ∇L(train)`` with C the Hessian or Gauss–Newton matrix,
  by ``"exact"``, ``"cg"``, ``"lissa"`` or ``"ekfac"`` (Koh & Liang 2017, arXiv 1703.04730; Grosse et al. 2023,
  arXiv 2308.03296); :func:`inverse_hvp` (CG / LiSSA, with convergence), :func:`exact_ggn`, :func:`fit_ekfac`.
* :func:`tracin`: TracInCP over checkpoints (Pruthi et al. 2020, arXiv 2002.08484).
* :func:`loo_retrain`: the ground truth, leave-one-out retraining; :func:`train_logistic_regression`.
"""

from labkit.influence.ekfac import EKFACFactors, LayerFactors, fit_ekfac
from labkit.influence.influence import CURVATURES, METHODS, InverseHVP, exact_ggn, influence_scores, inverse_hvp
from labkit.influence.per_example import per_example_grads
from labkit.influence.retrain import loo_retrain, train_logistic_regression
from labkit.influence.tracin import tracin

__all__ = [
    "CURVATURES", "EKFACFactors", "InverseHVP", "LayerFactors", "METHODS", "exact_ggn", "fit_ekfac",
    "influence_scores", "inverse_hvp", "loo_retrain", "per_example_grads", "tracin", "train_logistic_regression",
]
