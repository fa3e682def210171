"""Which training examples made this prediction: gradients of the data rather than of the input.

* :func:`per_example_grads`: one gradient per example (``torch.func``), the start of every method here.
* :func:`influence_scores`: ``∇L(query)ᵀ (C + λI)⁻¹ ∇L(train)`` with C the Hessian or Gauss–Newton matrix,
  by ``"exact"``, ``"cg"``, ``"lissa"`` or ``"ekfac"`` (Koh & Liang 2017, arXiv 1703.04730; Grosse et al. 2023,
  arXiv 2308.03296); :func:`inverse_hvp` (CG / LiSSA, with convergence), :func:`exact_ggn`, :func:`fit_ekfac`.
* :func:`tracin`: TracInCP over checkpoints (Pruthi et al. 2020, arXiv 2002.08484).
* :func:`loo_retrain`: the ground truth, leave-one-out retraining; :func:`train_logistic_regression`.
* :func:`el2n`, :func:`grand`, :func:`prune`: data-pruning scores (Paul et al. 2021, arXiv 2107.07075).
* :func:`gradient_coherence`, :class:`Winsorized`: coherent gradients (Chatterjee & Zielinski 2022, arXiv 2203.10036).
* :func:`gradient_inversion`, :func:`prune_gradients`: deep leakage from gradients and its defense (Zhu et al. 2019,
  arXiv 1906.08935).
"""

from labkit.influence.coherence import Coherence, Winsorized, coherence_along, gradient_coherence, winsorized_mean
from labkit.influence.ekfac import EKFACFactors, LayerFactors, fit_ekfac
from labkit.influence.influence import CURVATURES, METHODS, InverseHVP, exact_ggn, influence_scores, inverse_hvp
from labkit.influence.leakage import (
    DefenseSweep,
    Inversion,
    example_gradient,
    gradient_distance,
    gradient_inversion,
    label_from_gradients,
    prune_gradients,
    pruning_defense,
    sigmoid_mlp,
)
from labkit.influence.per_example import per_example_grads
from labkit.influence.pruning import auroc, el2n, grand, prune, train_copy
from labkit.influence.retrain import loo_retrain, train_logistic_regression
from labkit.influence.tracin import tracin

__all__ = [
    "CURVATURES", "EKFACFactors", "InverseHVP", "LayerFactors", "METHODS", "exact_ggn", "fit_ekfac",
    "influence_scores", "inverse_hvp", "loo_retrain", "per_example_grads", "tracin", "train_logistic_regression",
    "auroc", "el2n", "grand", "prune", "train_copy",
    "Coherence", "Winsorized", "coherence_along", "gradient_coherence", "winsorized_mean",
    "DefenseSweep", "Inversion", "example_gradient", "gradient_distance", "gradient_inversion", "label_from_gradients",
    "prune_gradients", "pruning_defense", "sigmoid_mlp",
]
