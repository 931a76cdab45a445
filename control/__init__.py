"""Controllable generation: conditional `score_fn`s and per-step constraints built from a `score_fn`.

Guidance (`guidance.py`) turns an unconditional score into the score of a conditional law, so that every
sampler serves it unchanged. Constraints (`constraints.py`) are the maps `(x, t, z) -> x` that a sampler
which accepts them applies after each of its steps (inpainting, colorization); they know the SDE's
kernel, never a network, and the samplers never learn what a constraint means.
"""

from scorejax.control.constraints import colorization_constraint, inpainting_constraint, known_values_constraint
from scorejax.control.guidance import class_log_prob, classifier_free_guidance, classifier_guidance

__all__ = [
  "classifier_guidance",
  "classifier_free_guidance",
  "class_log_prob",
  "known_values_constraint",
  "inpainting_constraint",
  "colorization_constraint",
]
