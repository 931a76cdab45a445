"""configs/digits.py: the default is EDM's recipe that bench/digits_recipe.py measured (issue 19), with EDM's
sigma_data the training digits' standard deviation; `edm` is its old name; `ncsn` the default until issue 19."""

import numpy as np

from scorejax.configs import digits
from scorejax.configs.default import get_default_config
from scorejax.run.experiment import Experiment
from scorejax.run.validate import validate_config


def test_the_default_is_the_measured_edm_recipe():
  config = digits.get_config()
  validate_config(config, 1)
  t, m, s = config.training, config.model, config.sampling
  assert (t.loss, t.sde, t.continuous, t.n_iters, t.batch_size) == ("edm", "vesde", True, 2_000, 64)
  assert (m.name, m.nf, m.prediction, m.ema_rate) == ("ncsn_small", 16, "edm", 0.99)
  assert (m.sigma_min, m.sigma_max) == (0.002, 80.0)
  assert (s.method, s.num_steps, s.rho, s.s_churn) == ("edm", 18, 7.0, 0.0)  # 2 * 18 - 1 = 35 score evaluations
  ds = Experiment(config).dataset
  assert abs(m.sigma_data - np.std(ds.model_space(ds.train, config.data.centered))) < 1e-3
  # `edm`, the name users were given before it became the default, is the same config.
  assert digits.get_config("edm").to_dict() == config.to_dict()


def test_ncsn_is_the_old_default_and_vdm_builds_on_it():
  ncsn = digits.get_config("ncsn")
  validate_config(ncsn, 1)
  assert ncsn.to_dict() == get_default_config().to_dict()
  t, m, s = ncsn.training, ncsn.model, ncsn.sampling
  assert (t.loss, t.sde, t.continuous, t.n_iters, m.sigma_min, m.sigma_max, m.ema_rate, s.method) == (
    "sde",
    "vesde",
    False,
    8_000,
    0.01,
    5.0,
    0.999,
    "ald",
  )
  vdm = digits.get_config("vdm")
  assert (vdm.training.loss, vdm.model.schedule, vdm.training.n_iters) == ("vdm", "learned", 8_000)
