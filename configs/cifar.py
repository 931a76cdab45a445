"""CIFAR-10 with the published score-based models: `--config=configs/cifar.py:<variant>`.

Variants and their sources (Song et al. 2021, "Score-Based Generative Modeling through SDEs", and
the configs of yang-song/score_sde; NCSN: Song & Ermon 2019; NCSNv2: Song & Ermon 2020):

  ve_ncsnpp          NCSN++ cont., VE SDE          (score_sde configs/ve/cifar10_ncsnpp_continuous.py)
  ve_ncsnpp_deep     NCSN++ cont. deep, VE SDE     (configs/ve/cifar10_ncsnpp_deep_continuous.py)
  vp_ddpmpp          DDPM++ cont., VP SDE          (configs/vp/cifar10_ddpmpp_continuous.py), the default
  vp_ddpmpp_deep     DDPM++ cont. deep, VP SDE     (configs/vp/cifar10_ddpmpp_deep_continuous.py)
  subvp_ddpmpp       DDPM++ cont., sub-VP SDE      (configs/subvp/cifar10_ddpmpp_continuous.py)
  subvp_ddpmpp_deep  DDPM++ cont. deep, sub-VP SDE (configs/subvp/cifar10_ddpmpp_deep_continuous.py)
  vp_ddpm            DDPM (Ho et al. 2020), discrete (configs/vp/ddpm/cifar10.py)
  ncsnv2             NCSNv2, 232 noise levels      (configs/ve/ncsnv2/cifar10.py)
  ncsn               NCSN, 10 noise levels         (configs/ve/ncsn/cifar10.py)
  edm_ddpmpp         EDM, DDPM++ ("VP" column)     (Karras et al. 2022, Table 2 config F and Table 7;
  edm_ncsnpp         EDM, NCSN++ ("VE" column)      NVlabs/edm train.py --precond=edm --arch=ddpmpp|ncsnpp)
  edm_ddpmpp_cond    EDM, DDPM++, class-conditional (train.py --cond=1 --arch=ddpmpp)
  edm_ncsnpp_cond    EDM, NCSN++, class-conditional (train.py --cond=1 --arch=ncsnpp)
  vdm                VDM (Kingma et al. 2021, App. B; google-research/vdm configs/cifar10.py): the bound, a learned
                     linear schedule, a U-Net of 32 blocks at 32x32 with Fourier features

The data is the standard `cifar-10-python.tar.gz` in `data.root` (default `data/`).

score_sde's released checkpoints import into these variants (`--mode=import`, run/importer.py), with the
overrides of `SCORE_SDE_CHECKPOINTS` where score_sde's config differs (discrete training, the embedding, the
sampler). Imported, a network is told what score_sde told it (`model.conditioning='score_sde'`: `sigma(t)`
for VE, `999 t` for VP and sub-VP, the level index for discrete training) and sees `2x - 1` where the data
is not centred (`model.input_transform='2x-1'`: the VE NCSN++ ones); training from scratch keeps
`log sigma(t)` and the data as it is.
"""

from scorejax.configs.default import get_default_config

VARIANTS = (
  "ve_ncsnpp",
  "ve_ncsnpp_deep",
  "vp_ddpmpp",
  "vp_ddpmpp_deep",
  "subvp_ddpmpp",
  "subvp_ddpmpp_deep",
  "vp_ddpm",
  "ncsnv2",
  "ncsn",
  "edm_ddpmpp",
  "edm_ncsnpp",
  "edm_ddpmpp_cond",
  "edm_ncsnpp_cond",
  "vdm",
)

# score_sde's checkpoint folder (its README) -> (variant, overrides) that reproduce its config.
SCORE_SDE_CHECKPOINTS = {
  "ve/cifar10_ncsnpp": ("ve_ncsnpp", {"training.continuous": False, "model.embedding_type": "positional"}),
  "ve/cifar10_ncsnpp_continuous": ("ve_ncsnpp", {}),
  "ve/cifar10_ncsnpp_deep_continuous": ("ve_ncsnpp_deep", {}),
  "vp/cifar10_ddpm": ("vp_ddpm", {}),
  "vp/cifar10_ddpm_continuous": ("vp_ddpm", {"training.continuous": True, "sampling.predictor": "euler_maruyama"}),
  "vp/cifar10_ddpmpp": ("vp_ddpmpp", {"training.continuous": False, "sampling.predictor": "ancestral_sampling"}),
  "vp/cifar10_ddpmpp_continuous": ("vp_ddpmpp", {}),
  "vp/cifar10_ddpmpp_deep_continuous": ("vp_ddpmpp_deep", {}),
  "subvp/cifar10_ddpm_continuous": (
    "vp_ddpm",
    {"training.sde": "subvpsde", "training.continuous": True, "sampling.predictor": "euler_maruyama"},
  ),
  "subvp/cifar10_ddpmpp_continuous": ("subvp_ddpmpp", {}),
  "subvp/cifar10_ddpmpp_deep_continuous": ("subvp_ddpmpp_deep", {}),
}


def cifar10_defaults():
  """score_sde's default_cifar10_configs: shared by every variant."""
  config = get_default_config()
  training = config.training
  training.batch_size = 128
  training.n_iters = 1_300_000
  training.snapshot_freq = 50_000
  training.log_freq = 50
  training.continuous = True
  training.reduce_mean = False
  training.max_to_keep = 5

  sampling = config.sampling
  sampling.method = "pc"
  sampling.n_steps_each = 1
  sampling.noise_removal = True
  sampling.probability_flow = False
  sampling.snr = 0.16
  sampling.num_samples = 64
  sampling.batch_size = 64

  evaluate = config.eval
  evaluate.batch_size = 1024
  evaluate.enable_bpd = False
  evaluate.num_samples = 50_000  # FID/IS as published (needs eval.inception_weights)
  evaluate.reference = "train"  # FID/KID against the training split's statistics, as published

  data = config.data
  del data["shape"]  # images: (image_size, image_size, num_channels), score_sde's fields
  data.dataset = "cifar10"
  data.image_size = 32
  data.num_channels = 3
  data.random_flip = True
  data.centered = False
  data.uniform_dequantization = False

  model = config.model
  model.sigma_min = 0.01
  model.sigma_max = 50.0
  model.num_scales = 1000
  model.beta_min = 0.1
  model.beta_max = 20.0
  model.dropout = 0.1
  model.embedding_type = "fourier"

  optim = config.optim
  optim.lr = 2e-4
  optim.warmup = 5000
  optim.grad_clip = 1.0
  return config


def _ncsnpp(model, deep=False):
  """NCSN++ (FIR resampling, residual input pyramid, Fourier features) as in score_sde."""
  model.name = "ncsnpp"
  model.normalization = "GroupNorm"
  model.nonlinearity = "swish"
  model.nf = 128
  model.ch_mult = (1, 2, 2, 2)
  model.num_res_blocks = 8 if deep else 4
  model.attn_resolutions = (16,)
  model.resamp_with_conv = True
  model.conditional = True
  model.fir = True
  model.fir_kernel = (1, 3, 3, 1)
  model.skip_rescale = True
  model.resblock_type = "biggan"
  model.progressive = "none"
  model.progressive_input = "residual"
  model.progressive_combine = "sum"
  model.attention_type = "ddpm"
  model.init_scale = 0.0
  model.embedding_type = "fourier"
  model.fourier_scale = 16
  model.conv_size = 3


def _ddpmpp(model, deep=False):
  """DDPM++: the NCSN++ code path with plain resampling, no input pyramid, positional embedding."""
  _ncsnpp(model, deep)
  model.fir = False
  model.progressive_input = "none"
  model.embedding_type = "positional"


def _edm(config, arch, cond):
  """EDM's CIFAR-10 recipe (Karras et al. 2022, Table 2 config F and Table 7; NVlabs/edm `train.py` with
  `--precond=edm --arch=<arch> --cond=<cond>` and its defaults): the EDM loss and preconditioning, 200 Mimg
  at batch 512, Adam at lr 1e-3 ramped up over 10 Mimg, EMA half-life 500 kimg ramped up at 0.05, dropout
  0.13, no gradient clipping; sampled with EDM's Heun sampler in 18 steps (35 evaluations)."""
  training, sampling, model, optim, data = config.training, config.sampling, config.model, config.optim, config.data
  # The network is conditioned on the noise level itself (c_noise = ln(sigma) / 4), so the SDE only maps
  # times to levels: the VE SDE over EDM's range [0.002, 80] has EDM's prior N(0, 80^2 I) and sigma = t's
  # log-linear map; the loss's log-normal levels outside the range are reached by the same formula.
  training.sde = "vesde"
  model.sigma_min, model.sigma_max = 0.002, 80.0
  training.loss, training.continuous = "edm", True
  training.p_mean, training.p_std = -1.2, 1.2
  training.reduce_mean = False  # EDM sums the squared error over the pixels (loss.sum() / batch)
  training.batch_size = 512
  training.n_iters = 390_625  # 200 Mimg / 512
  model.prediction, model.sigma_data, model.scale_by_sigma = "edm", 0.5, False
  model.ema_halflife_kimg, model.ema_rampup_ratio = 500.0, 0.05
  model.dropout = 0.13
  optim.lr, optim.beta1, optim.eps = 1e-3, 0.9, 1e-8  # Adam's beta2 is optax's 0.999, as EDM's
  optim.warmup, optim.lr_rampup_kimg = 0, 10_000.0
  optim.grad_clip = -1.0
  # Images in [-1, 1] (sigma_data = 0.5), without unlabelled flips: EDM's non-leaking augmentation takes their
  # place (train.py --augment=0.12; datasets/augment.py: x/y flips, isotropic and anisotropic scaling, rotation,
  # fractional translation, their 9 labels fed to the network, and zero labels when sampling).
  data.centered, data.random_flip, data.uniform_dequantization = True, False, False
  data.augment_p, model.augment_dim = 0.12, 9
  sampling.method, sampling.num_steps, sampling.rho = "edm", 18, 7.0
  sampling.s_churn, sampling.s_min, sampling.s_max, sampling.s_noise = 0.0, 0.0, float("inf"), 1.0
  # The sampler runs from sigma(T) = 80 to sigma(eps) = 0.002 * 40000^eps: 1e-6 is EDM's 0.002 within 1.1e-5.
  sampling.eps = 1e-6
  # EDM's SongUNet with train.py's presets: model_channels 128, channel_mult [2, 2, 2] (Table 2's config C:
  # no 4x4 level, the 32x32 level doubled), 4 blocks per level, attention at 16x16, BigGAN-style resampling
  # blocks with skip rescaling; DDPM++: positional embedding, standard encoder, box filter [1, 1]; NCSN++:
  # Fourier features (scale 16, 2 x 128 channels), residual input pyramid, FIR filter [1, 3, 3, 1]; both with
  # the standard decoder (progressive='none'). Unconditional, the parameter tree has EDM's shapes (55,732,739
  # DDPM++; NCSN++ 56,395,523 and the 128 fixed Fourier frequencies, a buffer in EDM). Where this network differs:
  # - the positional embedding is of 250 c_noise (models/layerspp.py), EDM's of c_noise itself;
  # - a class joins as a learned vector per class (and a null row) added after the embedding MLP, 11 x 512
  #   parameters; EDM adds a linear map of the one-hot label (10 x 128 and a bias) before it;
  # - the zero-initialised output layers start at score_sde's scale (init_scale 0), EDM's at 1e-5.
  (_ddpmpp if arch == "ddpmpp" else _ncsnpp)(model)
  model.ch_mult = (2, 2, 2)
  if cond:
    model.num_classes = 10
    training.label_dropout = 0.0  # EDM's conditional models are trained on every label (SongUNet label_dropout=0)
    # Every class in turn (5000 each of 50k samples, as CIFAR-10's training set); without label dropout the
    # null label is untrained, so no classifier-free guidance.
    sampling.class_label, sampling.guidance_scale = -2, 0.0


# google-research/vdm's network for CIFAR-10 (model_vdm.py ScoreUNet, configs/cifar10.py), its parameters counted by
# jax.eval_shape of its own code: 30,578,179 and the 2 of its learnable_scalar schedule.
VDM_PARAMS = 30_578_181


def _vdm(config):
  """VDM's CIFAR-10 settings (Kingma et al. 2021, App. B; google-research/vdm configs/cifar10.py): the bound in
  bits/dim with the discrete decoder over 256 levels, low-discrepancy times, the learned schedule linear in `t`
  with learned endpoints from -13.3 to 5 (`learnable_scalar`), images in [-1, 1] without flips, Fourier features
  `(6, 7)`; the score network a U-Net of 32 residual blocks of 128 channels at 32x32 (no downsampling), 33 up with
  the skips, attention only in the middle, dropout 0.1, as DDPM (models/ddpm.py) with `ch_mult=(1,)`; batch 128,
  AdamW (beta2 0.99, weight decay 0.01 on every parameter but the biases, no clipping) at lr 2e-4 after 100
  warm-up steps, EMA 0.9999, 10M steps. Where it differs: the levels at `2k/255 - 1` (VDM: `2(k + 1/2)/256 - 1`);
  the noise embedding of `log sigma` and a bias in each block's projection of it (8,064 parameters more than
  VDM's); the warm-up from `lr / 100` at the first step (VDM: from 0)."""
  training, sampling, model, optim, data = config.training, config.sampling, config.model, config.optim, config.data
  training.loss, training.low_discrepancy, training.schedule_gradient = "vdm", True, "vlb"
  training.batch_size, training.n_iters = 128, 10_000_000
  model.schedule, model.gamma_min, model.gamma_max = "learned_linear", -13.3, 5.0
  model.prediction, model.conditioning, model.scale_by_sigma = "noise", "log_sigma", False
  model.name, model.nf, model.ch_mult, model.num_res_blocks = "ddpm", 128, (1,), 32
  model.attn_resolutions, model.dropout, model.input_fourier = (), 0.1, (6, 7)
  model.ema_rate, model.num_scales = 0.9999, 1000
  data.centered, data.random_flip, data.uniform_dequantization = True, False, False
  optim.optimizer, optim.lr, optim.warmup, optim.grad_clip = "AdamW", 2e-4, 100, -1.0
  optim.beta1, optim.beta2, optim.eps, optim.weight_decay = 0.9, 0.99, 1e-8, 0.01
  # VDM samples ancestrally in 1000 steps; here Euler-Maruyama over the learned schedule's SDE, as many steps.
  sampling.method, sampling.predictor, sampling.corrector = "pc", "euler_maruyama", "none"
  sampling.time_grid = "uniform"
  config.published_params = VDM_PARAMS
  config.published_source = "google-research/vdm's ScoreUNet and learnable_scalar schedule (configs/cifar10.py)"


def get_config(variant="vp_ddpmpp"):
  if variant not in VARIANTS:
    raise ValueError(f"unknown cifar variant {variant!r}; valid choices: {', '.join(VARIANTS)}")
  config = cifar10_defaults()
  training, sampling, model, optim = config.training, config.sampling, config.model, config.optim
  sde = variant.partition("_")[0]
  deep = variant.endswith("_deep")

  if variant.startswith("edm_"):
    _edm(config, variant.split("_")[1], variant.endswith("_cond"))
  elif variant == "vdm":
    _vdm(config)
  elif variant.startswith("ve_ncsnpp"):
    training.sde = "vesde"
    sampling.predictor, sampling.corrector = "reverse_diffusion", "langevin"
    sampling.eps = 1e-5  # score_sde samples VE down to t = 1e-5 (run_lib: sampling_eps)
    _ncsnpp(model, deep)
    model.scale_by_sigma, model.prediction, model.ema_rate = True, "score", 0.999
  elif "ddpmpp" in variant:
    training.sde = {"vp": "vpsde", "subvp": "subvpsde"}[sde]
    training.reduce_mean = True
    sampling.predictor, sampling.corrector = "euler_maruyama", "none"
    config.data.centered = True
    _ddpmpp(model, deep)
    model.scale_by_sigma, model.prediction, model.ema_rate = False, "noise", 0.9999
  elif variant == "vp_ddpm":
    training.sde, training.continuous, training.reduce_mean = "vpsde", False, True
    sampling.predictor, sampling.corrector = "ancestral_sampling", "none"
    config.data.centered = True
    model.name = "ddpm"
    model.normalization, model.nonlinearity = "GroupNorm", "swish"
    model.nf, model.ch_mult, model.num_res_blocks = 128, (1, 2, 2, 2), 2
    model.attn_resolutions, model.resamp_with_conv, model.conditional = (16,), True, True
    model.scale_by_sigma, model.prediction, model.ema_rate = False, "noise", 0.9999
  else:  # ncsnv2, ncsn: discrete VE levels, annealed Langevin as the sampler
    training.sde, training.continuous = "vesde", False
    sampling.predictor, sampling.corrector = "none", "ald"
    model.normalization, model.nonlinearity, model.nf = "InstanceNorm++", "elu", 128
    model.interpolation = "bilinear"
    optim.warmup, optim.grad_clip = 0, -1.0
    if variant == "ncsnv2":
      model.name, model.num_scales, model.ema_rate = "ncsnv2", 232, 0.999
      model.scale_by_sigma, model.prediction = True, "score"
      sampling.n_steps_each, sampling.snr = 5, 0.176
      optim.lr = 1e-4
    else:
      model.name, model.sigma_max, model.num_scales, model.ema_rate = "ncsn", 1.0, 10, 0.0
      model.scale_by_sigma, model.prediction = False, "score"
      sampling.n_steps_each, sampling.snr = 100, 0.316
      optim.lr = 1e-3
  if deep:
    training.n_iters = 950_000
  return config
