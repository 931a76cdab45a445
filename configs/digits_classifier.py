"""A classifier of noisy 8x8 digits, `p_phi(y | x_t, t)`, for classifier guidance of the default digits model
(configs/digits.py): the same data and SDE (VE, sigma from 0.01 to 5), cross-entropy over inputs noised by that
SDE's kernel at uniform times (losses/classifier.py).

  python main.py --config=configs/digits_classifier.py --workdir=runs/digits_classifier
  python main.py --mode=sample --workdir=runs/digits --config.sampling.classifier_workdir=runs/digits_classifier \\
    --config.sampling.class_label=3

Its `sampling.guidance_scale`, saved with its run, is the scale it guides with unless the sampling command sets
one: 8. With the exact noisy classifier w = 1 samples the class-conditional law; with a learned one the class
is taken far less often at w = 1, and it takes larger scales, as Dhariwal & Nichol (2021, Sec. 4) found for
unconditional models. Measured by bench/guidance.py (bench/README.md): 42% of samples labelled as asked at
w = 1, 87% at 4, 95% at 8.
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
  config.sampling.guidance_scale = 8.0  # the default scale of the score models it guides (docstring)
  return config
