"""The default experiment: the 8x8 handwritten digits that ship with the repo, on a CPU.

  python main.py                                # NCSN's VE SDE, annealed Langevin dynamics
  python main.py --config=configs/digits.py:vdm # Variational Diffusion Models (Kingma et al. 2021)

Variants:

  (none)  the defaults of configs/default.py
  vdm     VDM's bound (training.loss='vdm') with its learned schedule and Fourier features of the input, the
          discrete decoder over the digits' 17 levels: bits/dim of the digits themselves (docs/vdm.md)

How long it takes is measured in bench/README.md (fresh-clone times).
"""

from scorejax.configs.default import get_default_config

VARIANTS = ("", "vdm")


def get_config(variant=""):
  if variant not in VARIANTS:
    raise ValueError(f"unknown digits variant {variant!r}; valid choices: {', '.join(v for v in VARIANTS if v)}")
  config = get_default_config()
  if variant == "vdm":
    vdm(config)
  return config


def vdm(config):
  """VDM on the digits (Kingma et al. 2021, Sec. 3-5): the continuous-time bound in bits/dim, the learned log-SNR
  `gamma(t)` from VDM's -13.3 to 5 (models/vdm.py: LearnedSchedule), whose shape minimises the estimator's
  variance, a noise prediction network conditioned on `gamma / 2`, and Fourier features `(3, 4)`: periods of 2
  levels and 1 level of the 17 in [0, 1]. Sampled by DPM-Solver over the learned schedule's log-SNR."""
  training, model, sampling = config.training, config.model, config.sampling
  training.loss, training.schedule_gradient, training.low_discrepancy = "vdm", "variance", True
  model.schedule, model.gamma_min, model.gamma_max = "learned", -13.3, 5.0
  model.prediction, model.conditioning = "noise", "log_sigma"
  model.input_fourier = (3, 4)
  sampling.method, sampling.num_steps, sampling.dpm_solver_order = "dpm_solver", 50, 2
