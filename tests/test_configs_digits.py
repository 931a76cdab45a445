"""configs/digits.py's `edm` variant is the recipe that bench/digits_recipe.py measured (issue 19): its fields, and
EDM's sigma_data as the training digits' standard deviation."""

import numpy as np

from scorejax.configs import digits
from scorejax.run.experiment import Experiment
from scorejax.run.validate import validate_config


def test_the_edm_variant_is_the_measured_recipe():
  config = digits.get_config("edm")
  validate_config(config, 1)
  t, m, s = config.training, config.model, config.sampling
  assert (t.loss, t.sde, t.continuous, t.n_iters, t.batch_size) == ("edm", "vesde", True, 2_000, 64)
  assert (m.name, m.nf, m.prediction, m.ema_rate) == ("ncsn_small", 16, "edm", 0.99)
  assert (m.sigma_min, m.sigma_max) == (0.002, 80.0)
  assert (s.method, s.num_steps, s.rho, s.s_churn) == ("edm", 18, 7.0, 0.0)  # 2 * 18 - 1 = 35 score evaluations
  ds = Experiment(config).dataset
  assert abs(m.sigma_data - np.std(ds.model_space(ds.train, config.data.centered))) < 1e-3
  # The default itself is unchanged.
  assert digits.get_config().training.loss == "sde" and digits.get_config().sampling.method == "ald"
