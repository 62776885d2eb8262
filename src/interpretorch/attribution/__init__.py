"""Attribution methods: the CAM family, score-based CAMs, gradient and perturbation attributions, and the registry."""
from interpretorch.attribution.cam import CAM_METHODS, layer_cams
from interpretorch.attribution.gradient import (deconvnet, gradient, gradient_x_input, guided_backprop,
                                                guided_gradcam, integrated_gradients, relu_rule, smoothgrad, vargrad)
from interpretorch.attribution.perturbation import RiseMasks, occlusion, rise
from interpretorch.attribution.registry import available_methods, explain, register
from interpretorch.attribution.score import ablation_cam, score_cam

__all__ = ["CAM_METHODS", "layer_cams", "available_methods", "explain", "register", "ablation_cam", "score_cam",
           "gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "vargrad", "guided_backprop",
           "deconvnet", "guided_gradcam", "relu_rule", "occlusion", "rise", "RiseMasks"]
