"""Concept-based explanations: CAVs, TCAV with significance testing, concept maps and concept discovery."""
