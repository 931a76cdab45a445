"""A classifier of noisy 8x8 digits, `p_phi(y | x_t, t)`, for classifier guidance of the default digits model
(configs/digits.py): the same data and SDE (VE, sigma from 0.01 to 5), cross-entropy over inputs noised by that
SDE's kernel at uniform times (losses/classifier.py).

  python main.py --config=configs/digits_classifier.py --workdir=runs/digits_classifier
  python main.py --mode=sample --workdir=runs/digits --config.sampling.classifier_workdir=runs/digits_classifier \\
    --config.sampling.class_label=3 --config.sampling.guidance_scale=2
"""

from scorejax.configs import digits


def get_config():
  config = digits.get_config()
  config.model.name = "classifier_conv"
  config.model.num_classes = 10
  config.model.nf = 32
  config.model.ch_mult = (1, 2)
  config.model.num_res_blocks = 1
  config.training.n_iters = 4_000
  config.training.snapshot_freq = 1_000
  config.training.snapshot_sampling = False  # a classifier reports its held-out accuracy instead
  return config
