"""Sanity checks for saliency maps (Adebayo et al. 2018): model-parameter and data randomization tests."""
from interpretorch.sanity.checks import (SanityResult, Verdict, VerdictRule, cascading_verdicts, data_randomization,
                                         model_randomization)
from interpretorch.sanity.estimate import estimate_model_randomization
from interpretorch.sanity.randomize import Block, plan_steps, randomization_blocks, randomized_models
from interpretorch.sanity.similarity import METRICS, baselines, compare

__all__ = ["SanityResult", "Verdict", "VerdictRule", "cascading_verdicts", "data_randomization",
           "model_randomization", "estimate_model_randomization", "Block", "plan_steps", "randomization_blocks", "randomized_models", "METRICS",
           "baselines", "compare"]
