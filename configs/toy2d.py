"""2D toy data: `--config=configs/toy2d.py` (Gaussian mixture, known score) or
`configs/toy2d.py:swiss_roll`, `:checkerboard`, `:moons`."""

from scorejax.configs.default import get_default_config

DATASETS = ("gmm", "swiss_roll", "checkerboard", "moons")


def get_config(dataset="gmm"):
  if dataset not in DATASETS:
    raise ValueError(f"unknown toy2d variant {dataset!r}; valid choices: {', '.join(DATASETS)}")
  config = get_default_config()
  config.data.dataset = dataset
  config.data.shape = (2,)
  config.data.num_train = 50_000
  config.data.num_test = 5_000
  config.training.batch_size = 512
  config.training.n_iters = 2_000
  config.training.log_freq = 200
  config.training.snapshot_freq = 1_000
  config.model.name = "mlp"
  config.model.nf = 128
  config.model.num_layers = 3
  config.model.sigma_min = 0.01
  config.model.sigma_max = 6.0
  config.model.num_scales = 30
  config.model.ema_rate = 0.99
  config.optim.lr = 2e-3
  config.sampling.n_steps_each = 20
  config.sampling.step_lr = 5e-5
  config.sampling.num_samples = 2_000
  config.sampling.batch_size = 2_000
  config.eval.batch_size = 5_000
  return config
