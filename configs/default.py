"""Fields shared by every experiment, named as in score_sde where a counterpart exists.

This file is the one home of every default: the SDEs, losses and samplers take these fields as
required arguments (run/builders.py passes the fields that each one names)."""

import ml_collections


def get_default_config():
  # The aligned comments document the fields: the formatter leaves them as they are.
  # fmt: off
  config = ml_collections.ConfigDict()
  config.seed = 42
  config.import_from = ""             # --mode=import: the score_sde checkpoint file (checkpoint_<n>)
  config.published_params = 0         # the parameter count of the published network that a config reproduces,
  config.published_source = ""        # and where it is from: --mode=info prints it beside this network's (0: none)
  config.extensions = ""              # your own modules that register an SDE, sampler, loss or network, imported
                                      # before anything is built: comma-separated .py files or module names

  config.training = training = ml_collections.ConfigDict()
  training.batch_size = 64
  training.n_iters = 8_000
  training.log_freq = 100
  training.snapshot_freq = 2_000
  training.snapshot_sampling = True   # write samples at every snapshot
  training.n_jitted_steps = 1         # optimizer steps per device dispatch (a lax.scan)
  training.max_to_keep = 3            # checkpoints kept
  training.sde = "vesde"              # vesde | vpsde | subvpsde
  training.continuous = False         # False: the discrete SMLD (VE) / DDPM (VP) loss over num_scales levels
  training.reduce_mean = True         # mean (not sum) of the squared error over data dimensions
  training.likelihood_weighting = False  # weight g(t)^2: a bound on the negative log-likelihood
  training.eps = 1e-5                 # smallest time of the continuous losses and of a classifier's noise
  training.loss = "sde"               # sde: score_sde's losses (above) | edm: Karras et al. 2022 (log-normal sigma) |
                                      # vdm: the variational bound of Kingma et al. 2021, bits/dim (docs/vdm.md)
  training.p_mean = -1.2              # edm: ln sigma ~ N(p_mean, p_std^2)
  training.p_std = 1.2
  training.low_discrepancy = True     # vdm: the batch's times t_i = (u + i / n) mod 1 (VDM, App. I.1), else i.i.d.
  training.schedule_gradient = "vlb"  # vdm, learned schedule: vlb (the bound's gradient, google-research/vdm) |
                                      # variance (its shape minimises the estimator's variance, VDM Sec. 5.3)
  training.dtype = "float32"          # compute dtype of the network (bfloat16 on GPU/TPU); parameters stay float32
  training.label_dropout = 0.1        # class-conditional models: fraction of labels dropped to the null label
                                      # (classifier-free guidance, Ho & Salimans 2022)

  config.sampling = sampling = ml_collections.ConfigDict()
  sampling.method = "ald"             # annealed Langevin dynamics
  sampling.n_steps_each = 5
  sampling.step_lr = 1e-5
  sampling.noise_removal = True       # final Tweedie denoising step
  sampling.num_samples = 64
  sampling.batch_size = 64
  sampling.eps = 1e-3                 # final time of the SDE/ODE samplers
  sampling.time_grid = "auto"         # pc: uniform (N steps from T to eps) | discrete (the chain's N levels) |
                                      # auto: discrete when training.continuous=False, else uniform
  # pc: predictor-corrector (Song et al. 2021, Alg. 1-3)
  sampling.predictor = "reverse_diffusion"  # euler_maruyama | reverse_diffusion | ancestral_sampling | none
  sampling.corrector = "langevin"     # langevin | ald | resample (RePaint's jumps, for constraints) | none
  sampling.snr = 0.16                 # Langevin corrector: signal-to-noise ratio of each step
  sampling.probability_flow = False   # pc predictor on the probability-flow ODE
  # edm, ddim, dpm_solver: few-step samplers over sampling.num_steps steps
  sampling.num_steps = 50             # (EDM's paper uses 18 with rho = 7)
  sampling.rho = 7.0                  # edm: sigma schedule exponent
  sampling.s_churn = 0.0              # edm: stochasticity (0 = deterministic Heun)
  sampling.s_min = 0.0
  sampling.s_max = float("inf")
  sampling.s_noise = 1.0
  sampling.ddim_eta = 0.0             # ddim: 0 deterministic, 1 DDPM-like
  sampling.dpm_solver_order = 2       # dpm_solver: 1, 2 or 3
  sampling.skip_type = "logSNR"       # ddim, dpm_solver time grid: logSNR | time_uniform
  # ode: the probability-flow ODE
  sampling.ode_solver = "rk45"        # rk45 | tsit5 (adaptive, diffrax) | euler | heun | rk4 (ode_steps)
  sampling.ode_steps = 100
  sampling.rtol = 1e-5
  sampling.atol = 1e-5
  sampling.ode_max_steps = 4096       # adaptive solvers: attempted steps before giving up
  # class guidance (control/guidance.py)
  sampling.class_label = -1           # the class to sample, or -1: unconditional, or -2: every class in turn
  sampling.guidance_scale = ml_collections.config_dict.placeholder(float)
                                      # w: classifier-free (1 + w) s(x, y) - w s(x), or s(x) + w grad log p(y | x);
                                      # None: 1 for classifier-free guidance, and for classifier guidance the
                                      # scale saved with the classifier's run (its own sampling.guidance_scale)
  sampling.classifier_workdir = ""    # a run of a classifier of noisy inputs (configs/digits_classifier.py): guides
                                      # sampling.class_label by its gradient instead of classifier-free guidance
  # inpainting and colorization of held-out images (control/constraints.py; sampling.method='pc')
  sampling.inpaint_mask = ""          # the region to fill: center | left | right | top | bottom | random:<fraction>
                                      # | a PNG file (white: fill)
  sampling.colorize = False           # colour images from their grayscale

  config.eval = evaluate = ml_collections.ConfigDict()
  evaluate.batch_size = 1_000         # test examples for the per-noise-level losses
  evaluate.num_levels = 10            # noise levels (times) at which they are reported
  evaluate.enable_bpd = False         # likelihood of the test split (bits/dim for images, nats/dim for vectors)
  evaluate.bpd_methods = "bound,ode"  # bound: VDM's variational bound of the data as they are (images: discrete
                                      # decoder, no dequantization) | ode: the probability-flow ODE (images:
                                      # uniformly dequantized); each under its own keys (bpd_bound, bpd_ode)
  evaluate.bpd_num_repeats = 1        # passes over the examples: draws of dequantization (ode; score_sde: 5) or of
                                      # times and noise (bound)
  evaluate.bpd_num_examples = 0       # test examples for the likelihood; 0: the whole test split
  evaluate.eps = 1e-5                 # the ODE runs from t = eps to T; a fixed schedule's bound covers [eps, T]
  evaluate.ode_solver = "rk45"        # rk45 | tsit5 (adaptive, diffrax) | euler | heun | rk4 (ode_steps)
  evaluate.ode_steps = 100
  evaluate.rtol = 1e-5
  evaluate.atol = 1e-5
  evaluate.ode_max_steps = 4096
  evaluate.hutchinson_type = "rademacher"  # or gaussian: probes of the divergence estimator
  evaluate.num_probes = 1             # Hutchinson probes per evaluation, drawn once per solve
  evaluate.exact_trace = False        # exact divergence (low dimension only)
  # Sample quality (evaluation/): FID, Inception Score, KID, precision/recall and data copying
  evaluate.reference = "held_out"     # held_out: against half of the held-out split at equal sample counts, the
                                      # other half the floor, over num_draws draws | train: against the training
                                      # split, as the FID literature (configs/cifar.py)
  evaluate.num_draws = 20             # held_out: draws of the halves and of the images measured
  evaluate.samples_file = ""          # score these images instead of a checkpoint's samples: an .npz (key images or
                                      # samples) or a folder of PNGs
  evaluate.num_samples = 1_000        # samples drawn with `sampling` (papers report 50_000 for CIFAR-10)
  evaluate.begin_step = -1            # -1: the newest checkpoint; else every checkpoint from begin_step
  evaluate.end_step = -1              # ... to end_step (-1: the newest), skipping those with an eval_<step>.json
  evaluate.inception_weights = ""     # RGB images: pytorch-fid's pt_inception-2015-12-05-6726825d.pth, or an .npz of it
  evaluate.stats_dir = ""             # cached statistics of real data and the digits classifier, shareable by
                                      # runs; "": <workdir>/eval/stats and <workdir>/eval/digits_classifier
  evaluate.feature_batch_size = 250   # images per feature-network call
  evaluate.pr_max = 10_000            # precision/recall compare at most this many features per side

  config.data = data = ml_collections.ConfigDict()
  data.dataset = "digits"
  data.shape = (8, 8, 1)
  data.centered = False               # images in [-1, 1] instead of [0, 1]
  data.random_flip = False            # left-right flips of training images
  data.uniform_dequantization = False # (k + u) / 256 instead of k / 255 for training images
  data.root = "data"                  # where file-backed datasets (cifar10) live
  data.verify_checksum = True
  data.download = False               # cifar10: download a missing archive into data.root (needs network)
  data.augment_p = 0.0                # EDM's non-leaking augmentation (datasets/augment.py): its probability p,
                                      # > 0 needs images and model.augment_dim=9 (EDM's CIFAR-10: 0.12)

  config.model = model = ml_collections.ConfigDict()
  model.name = "ncsn_small"
  model.sigma_min = 0.01
  model.sigma_max = 5.0
  model.num_scales = 50               # N: levels of the discrete losses and samplers
  model.beta_min = 0.1                # VP and sub-VP SDEs
  model.beta_max = 20.0
  model.dropout = 0.0
  model.ema_rate = 0.999              # EMA of the weights: its decay per step (while ema_halflife_kimg = 0)
  model.ema_halflife_kimg = 0.0       # > 0: EDM's EMA instead, by the half-life of the old weights in thousands of
                                      # training images (Karras et al. 2022: 500)
  model.ema_rampup_ratio = 0.05       # ... the half-life capped at this fraction of the images seen (0 or None: no cap)
  model.nf = 16
  model.ch_mult = (1, 2)
  model.num_res_blocks = 1
  model.num_layers = 3                # MLP depth
  model.scale_by_sigma = True
  model.prediction = "score"          # or "noise": s = -eps_hat / sigma (scale_by_sigma is then moot), or "edm":
                                      # EDM's preconditioned denoiser D, s = (D - x) / sigma^2 (Karras et al. 2022);
                                      # edm_vp, edm_ve: EDM's VPPrecond, VEPrecond (its Table 1)
  model.sigma_data = 0.5              # prediction="edm": the data's standard deviation in EDM's preconditioning
  model.conditioning = "log_sigma"    # network input: log sigma(t), or score_sde's label (imported checkpoints)
  model.input_transform = "none"      # or "2x-1": what score_sde's networks do to uncentred data
  model.schedule = "fixed"            # the noise schedule: fixed (training.sde's) | learned: VDM's learned log-SNR
                                      # gamma(t) (Kingma et al. 2021, models/vdm.py), in the parameters, trained by
                                      # training.loss='vdm' | learned_linear: linear with learned endpoints (VDM's
                                      # learnable_scalar); learned ones need model.prediction='noise'
  model.gamma_min = -13.3             # learned schedules: gamma(0), gamma(1) at initialisation (log sigma^2 of the
  model.gamma_max = 5.0               # VE noise level; VDM's -13.3 and 5)
  model.input_fourier = ()            # ddpm, ncsn_small: exponents n of VDM's Fourier features sin(2^n 2 pi x),
                                      # cos(2^n 2 pi x) of the input (VDM: (6, 7) for 8-bit data in [-1, 1])
  model.num_classes = 0               # > 0: class-conditional network (mlp, ncsn_small, ncsnpp) for guidance
  model.augment_dim = 0               # > 0: the network (ncsn_small, ncsnpp) takes augmentation labels

  config.optim = optim = ml_collections.ConfigDict()
  optim.optimizer = "Adam"             # Adam | AdamW (decoupled weight decay of every parameter but the biases)
  optim.lr = 2e-3
  optim.beta1 = 0.9
  optim.beta2 = 0.999
  optim.eps = 1e-8
  optim.weight_decay = 0.0            # AdamW's decay rate (VDM: 0.01)
  optim.warmup = 200                  # linear warm-up of the lr over this many steps (0: none)
  optim.lr_rampup_kimg = 0.0          # EDM's linear lr ramp-up over this many thousand images (0: none; EDM: 10000)
  optim.grad_clip = 1.0
  # fmt: on
  return config
