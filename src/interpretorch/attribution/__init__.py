"""Attribution methods. Importing a module registers its methods; the import order is the registry's order."""
from interpretorch.attribution.registry import (MethodSpec, available_methods, bind, canonical, default_methods,
                                                explain, explain_targets, explain_targets_rows, get_method, method_specs,
                                                reexplainers, register, register_group, Geometry, describe_rows)
from interpretorch.attribution.cam import CAM_METHODS, CAM_RULES, cam_rule, layer_cams  # noqa: I001
from interpretorch.attribution.score import ablation_cam, score_cam
from interpretorch.attribution.gradient import gradient, gradient_x_input
from interpretorch.attribution.integrated import integrated_gradients
from interpretorch.attribution.noise import smoothgrad, vargrad
from interpretorch.attribution.guided import deconvnet, guided_backprop, guided_gradcam
from interpretorch.attribution.perturbation import RiseMasks, occlusion, rise
from interpretorch.attribution.relu_rules import relu_rule
from interpretorch.attribution.cam_variants import finer_cam, sess, shapley_cam, smooth_gradcampp
from interpretorch.attribution.groupcam import group_cam, ss_cam
from interpretorch.attribution.fullgrad import fullgrad
from interpretorch.attribution.masks import extremal_perturbation, meaningful_perturbation
from interpretorch.attribution.deeplift import deeplift, deeplift_shap
from interpretorch.attribution.shapley import feature_ablation, feature_permutation, gradient_shap, shapley_sampling
from interpretorch.attribution.surrogate import kernel_shap, lime
from interpretorch.attribution.lrp import lrp
from interpretorch.attribution.conductance import (internal_influence, layer_conductance, neuron_conductance,
                                                   neuron_gradient, neuron_integrated_gradients)
from interpretorch.attribution import cost  # noqa: F401  (the row counts of the methods above)
from interpretorch.attribution import multi_target  # noqa: F401  (explain_targets' one-forward passes)

__all__ = ["MethodSpec", "available_methods", "bind", "canonical", "default_methods", "explain", "explain_targets",
           "explain_targets_rows", "get_method",
           "method_specs", "reexplainers", "register", "register_group", "Geometry", "describe_rows", "CAM_METHODS", "CAM_RULES", "cam_rule",
           "layer_cams",
           "ablation_cam", "score_cam", "gradient", "gradient_x_input", "integrated_gradients", "smoothgrad",
           "vargrad", "guided_backprop", "deconvnet", "guided_gradcam", "relu_rule", "occlusion", "rise",
           "RiseMasks", "shapley_cam", "finer_cam", "smooth_gradcampp", "sess", "group_cam", "ss_cam", "fullgrad",
           "extremal_perturbation", "meaningful_perturbation", "deeplift", "deeplift_shap",
           "gradient_shap", "shapley_sampling", "feature_ablation", "feature_permutation",
           "kernel_shap", "lime", "lrp", "layer_conductance", "internal_influence", "neuron_gradient",
           "neuron_integrated_gradients", "neuron_conductance"]
