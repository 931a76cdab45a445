"""Fields shared by every experiment, named as in score_sde where a counterpart exists."""
import ml_collections


def get_default_config():
  config = ml_collections.ConfigDict()
  config.seed = 42

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
  training.dtype = "float32"          # compute dtype of the network (bfloat16 on GPU/TPU); parameters stay float32

  config.sampling = sampling = ml_collections.ConfigDict()
  sampling.method = "ald"             # annealed Langevin dynamics
  sampling.n_steps_each = 5
  sampling.step_lr = 1e-5
  sampling.noise_removal = True       # final Tweedie denoising step
  sampling.num_samples = 64
  sampling.batch_size = 64
  sampling.eps = 1e-3                 # final time of the SDE/ODE samplers

  config.eval = evaluate = ml_collections.ConfigDict()
  evaluate.batch_size = 1_000         # test examples for the per-noise-level losses
  evaluate.num_levels = 10            # noise levels (times) at which they are reported

  config.data = data = ml_collections.ConfigDict()
  data.dataset = "digits"
  data.shape = (8, 8, 1)
  data.centered = False               # images in [-1, 1] instead of [0, 1]
  data.random_flip = False            # left-right flips of training images
  data.uniform_dequantization = False # (k + u) / 256 instead of k / 255 for training images
  data.root = "data"                  # where file-backed datasets (cifar10) live
  data.verify_checksum = True

  config.model = model = ml_collections.ConfigDict()
  model.name = "ncsn_small"
  model.sigma_min = 0.01
  model.sigma_max = 5.0
  model.num_scales = 50               # N: levels of the discrete losses and samplers
  model.beta_min = 0.1                # VP and sub-VP SDEs
  model.beta_max = 20.0
  model.dropout = 0.0
  model.ema_rate = 0.999
  model.nf = 16
  model.ch_mult = (1, 2)
  model.num_res_blocks = 1
  model.num_layers = 3                # MLP depth
  model.scale_by_sigma = True
  model.prediction = "score"          # or "noise": s = -eps_hat / sigma (scale_by_sigma is then moot)

  config.optim = optim = ml_collections.ConfigDict()
  optim.optimizer = "Adam"
  optim.lr = 2e-3
  optim.beta1 = 0.9
  optim.eps = 1e-8
  optim.warmup = 200
  optim.grad_clip = 1.0
  return config
