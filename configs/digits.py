"""The default experiment: the 8x8 handwritten digits that ship with the repo, on a CPU.

  python main.py                                 # EDM (Karras et al. 2022), 2000 steps: the default (issue 19)
  python main.py --config=configs/digits.py:ncsn # the default until issue 19: NCSN's VE SDE, annealed Langevin
  python main.py --config=configs/digits.py:vdm  # Variational Diffusion Models (Kingma et al. 2021)

Variants:

  (none)  EDM's loss and preconditioning (Karras et al. 2022), EMA 0.99, EDM's Heun sampler at 35 NFE, 2000 steps:
          the recipe chosen by measurement for issue 19 (bench/README.md, "Choosing the digits default")
  edm     the same: the name it had before it became the default
  ncsn    the defaults of configs/default.py: NCSN's discrete VE loss over 50 levels from sigma 0.01 to 5 (Song &
          Ermon 2019), EMA 0.999, annealed Langevin dynamics (5 steps a level), 8000 steps; the default until issue 19
  vdm     VDM's bound (training.loss='vdm') with its learned schedule and Fourier features of the input, the
          discrete decoder over the digits' 17 levels: bits/dim of the digits themselves (docs/vdm.md); on the
          defaults of configs/default.py, as ncsn

How long it takes is measured in bench/README.md (fresh-clone times).
"""

from scorejax.configs.default import get_default_config

VARIANTS = ("", "edm", "ncsn", "vdm")


def get_config(variant=""):
  if variant not in VARIANTS:
    raise ValueError(f"unknown digits variant {variant!r}; valid choices: {', '.join(v for v in VARIANTS if v)}")
  config = get_default_config()  # ncsn: configs/default.py as it is
  if variant in ("", "edm"):
    edm(config)
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


def edm(config):
  """The default (and `edm`): the digits recipe of issue 19, chosen by bench/digits_recipe.py (bench/README.md,
  "Choosing the digits default"). Over 3 seeds its samples sit at the held-out floor of FID and KID (the digits
  classifier's features, 200 images per set: FID 37.3 +- 0.5 against the floor's 36.6, whose draw-to-draw sd is
  7.3), with fewer near-copies of training digits than held-out digits have (1.7% against 5.4%), where the VE
  SDE's continuous loss with the probability-flow ODE stays 7-8 FID above the floor. 4000 steps measured the same
  FID and KID. Every class lies in 8-12% of 5000 samples in each of 3 seeds (8.0-11.9%, binomial s.e. 0.4 points),
  though each run tilts its classes by up to 2 points beyond sampling noise, so that a draw of 1000 samples meets
  that bar less often (18-49% of draws) than a perfect sampler's (74%).

  - EDM's loss and preconditioning (Karras et al. 2022; docs/edm.md): ln sigma ~ N(-1.2, 1.2^2), the denoiser's
    c_skip/c_out/c_in for sigma_data = 0.376, the std of the training digits in [0, 1];
  - the VE SDE over EDM's range sigma 0.002-80: the loss draws sigma itself, the range is the sampler's;
  - EMA 0.99 per step (a half-life of 69 steps): in a short run configs/default.py's 0.999 still carries the
    early weights; EDM's half-life of 25 kimg capped at 5% of the images seen measured the same;
  - EDM's deterministic Heun sampler, 18 steps on the rho = 7 grid: 35 score evaluations;
  - 2000 steps at batch 64 and lr 2e-3 (configs/default.py's network, ncsn_small nf=16); the time it takes is in
    bench/README.md."""
  training, model, sampling = config.training, config.model, config.sampling
  training.loss, training.sde, training.continuous = "edm", "vesde", True
  training.n_iters, training.snapshot_freq = 2_000, 2_000
  model.prediction, model.scale_by_sigma, model.sigma_data = "edm", False, 0.376
  model.sigma_min, model.sigma_max = 0.002, 80.0
  model.ema_rate = 0.99
  sampling.method, sampling.num_steps, sampling.rho, sampling.s_churn = "edm", 18, 7.0, 0.0
