"""A classifier of noisy 8x8 digits, `p_phi(y | x_t, t)`, for classifier guidance of a digits model
(configs/digits.py): the same data and SDE, cross-entropy over inputs noised by that SDE's kernel at uniform times
(losses/classifier.py), so that it approximates `p_t(y | x_t)` of the model it guides.

  python main.py --config=configs/digits_classifier.py --workdir=runs/digits_classifier
  python main.py --mode=sample --workdir=runs/digits --config.sampling.classifier_workdir=runs/digits_classifier \\
    --config.sampling.class_label=3

Variants, one per digits model it can guide (run/classifier.py refuses a classifier of another SDE):

  (none)  the default digits model's VE SDE, sigma from 0.002 to 80 (EDM's range)
  ncsn    configs/digits.py:ncsn's VE SDE, sigma from 0.01 to 5

Its `sampling.guidance_scale`, saved with its run, is the scale it guides with unless the sampling command sets
one: 8. With the exact noisy classifier w = 1 samples the class-conditional law; a learned one steers far fewer
samples to their class at w = 1 and takes larger scales, as Dhariwal & Nichol (2021, Sec. 4) found for
unconditional models. Measured on the default (bench/README.md, "Guidance, inpainting and colorization"): held-out
accuracy 98.7%, 93.0%, 40.7% and 19.0% at noise levels 0.1, 0.3, 1 and 3 (the ncsn variant's range measured the
same), and 66% of guided samples labelled as asked at w = 1, 95% at 4, 99% at 8.
"""

from scorejax.configs import digits

VARIANTS = ("", "ncsn")


def get_config(variant=""):
  if variant not in VARIANTS:
    raise ValueError(
      f"unknown digits_classifier variant {variant!r}; valid choices: {', '.join(v for v in VARIANTS if v)}"
    )
  config = digits.get_config(variant)  # the SDE and data of the digits model it guides
  config.model.name = "classifier_conv"
  config.model.num_classes = 10
  config.model.nf = 32
  config.model.ch_mult = (1, 2)
  config.model.num_res_blocks = 1
  config.model.ema_rate = 0.999
  config.training.n_iters = 4_000
  config.training.snapshot_freq = 1_000
  config.training.snapshot_sampling = False  # a classifier reports its held-out accuracy instead
  config.sampling.guidance_scale = 8.0  # the default scale of the score models it guides (docstring)
  return config
