"""Gradient attributions: input-gradient methods, class activation maps and their evaluation metrics.

Every method is a plain function ``f(model, x, target, *, ...)`` returning signed, unscaled tensors on
the input's device; the caller's ``param.grad`` and train/eval modes are left as they were. Results
with more than one value are NamedTuples (``LayerGrad``, ``IGResult``, ``Quadrature``) or frozen
dataclasses (``Curve``, ``RoarResult``).

``labkit.attributions.data`` holds the pillar's data sets (BlockDigits, two-digit canvases) and
``labkit.attributions.experiments`` the notebooks' experiments (the models they train, their losses,
explainers with fixed noise, DiffROAR).
"""

from labkit.attributions.cam import (
    LayerGrad,
    conservation_error,
    grad_cam,
    grad_cam_pp,
    layer_activation_and_grad,
    norm_grad,
    smooth_grad_cam_pp,
    xgrad_cam,
)
from labkit.attributions.gradients import (
    IGResult,
    Quadrature,
    ig_points,
    input_x_gradient,
    integrated_gradients,
    integrated_gradients_with_delta,
    noise_scale,
    saliency,
    smoothgrad,
)
from labkit.attributions.layers import (
    combine_layer_maps,
    conv_blocks,
    layer_maps,
    map_correlation,
    max_min_class_correlation,
    pointing_game,
)
from labkit.attributions.lrp import lrp_epsilon
from labkit.attributions.metrics import (
    Curve,
    RoarResult,
    deletion_curve,
    feature_order,
    gini_index,
    infidelity,
    insertion_curve,
    instability,
    max_sensitivity,
    remove_features,
    roar,
)
from labkit.attributions.robust import pgd_perturb

__all__ = [
    "Curve",
    "IGResult",
    "LayerGrad",
    "Quadrature",
    "RoarResult",
    "combine_layer_maps",
    "conservation_error",
    "conv_blocks",
    "deletion_curve",
    "feature_order",
    "gini_index",
    "grad_cam",
    "grad_cam_pp",
    "ig_points",
    "infidelity",
    "input_x_gradient",
    "insertion_curve",
    "instability",
    "integrated_gradients",
    "integrated_gradients_with_delta",
    "layer_activation_and_grad",
    "layer_maps",
    "lrp_epsilon",
    "map_correlation",
    "max_min_class_correlation",
    "max_sensitivity",
    "noise_scale",
    "norm_grad",
    "pgd_perturb",
    "pointing_game",
    "remove_features",
    "roar",
    "saliency",
    "smooth_grad_cam_pp",
    "smoothgrad",
    "xgrad_cam",
]
