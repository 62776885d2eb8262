"""Attribution methods: the CAM family, score-based CAMs, and the method registry."""
from interpretorch.attribution.cam import CAM_METHODS, layer_cams
from interpretorch.attribution.registry import available_methods, explain, register
from interpretorch.attribution.score import ablation_cam, score_cam

__all__ = ["CAM_METHODS", "layer_cams", "available_methods", "explain", "register", "ablation_cam", "score_cam"]
