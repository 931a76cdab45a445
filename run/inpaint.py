"""`--mode=sample` with `sampling.inpaint_mask` or `sampling.colorize`: held-out images completed under a
constraint after every sampler step (control/constraints.py), written as arrays and as a picture of input,
mask and result side by side."""

import functools
import os

import jax
import numpy as np
from PIL import Image

from scorejax import control, plotting
from scorejax.logging_utils import atomic_output
from scorejax.run.experiment import SAMPLE, seed_key

GRAY = 0.5  # how the region to fill shows in the input picture (in [0, 1])


def inpainting_masks(spec, num, shape, rng):
  """Masks `(num, *shape)` float32, 1 where an entry is known and 0 where it is to be filled, from
  `sampling.inpaint_mask`: a named region of each image (`center`: the middle square of half the side;
  `left`, `right`, `top`, `bottom`: that half), `random:<fraction>` (each pixel, or each entry of a vector,
  filled with that probability, drawn from the NumPy generator `rng`), or a PNG file whose white
  (>= 128 after conversion to gray) marks the region to fill, resized to the images (nearest)."""
  fill = np.zeros((num,) + tuple(shape[:2]) + (1,) if len(shape) == 3 else (num,) + tuple(shape), bool)
  if spec.startswith("random:"):
    fill = rng.random(fill.shape) < float(spec[len("random:") :])
  elif spec.lower().endswith(".png"):
    with Image.open(spec) as image:
      region = np.asarray(image.convert("L").resize((shape[1], shape[0]), Image.NEAREST)) >= 128
    fill[:] = region[None, :, :, None]
  else:
    h, w = shape[0], shape[1]
    rows, cols = {
      "center": (slice(h // 4, h // 4 + h // 2), slice(w // 4, w // 4 + w // 2)),
      "left": (slice(None), slice(0, w // 2)),
      "right": (slice(None), slice(w // 2, None)),
      "top": (slice(0, h // 2), slice(None)),
      "bottom": (slice(h // 2, None), slice(None)),
    }[spec]
    fill[:, rows, cols] = True
  return np.broadcast_to(~fill, (num,) + tuple(shape)).astype(np.float32)


def _constrained_sample(exp, params, rng, known, mask, labels, classifier_params):
  """Samples whose known part is that of `known` (model space), under `mask` (inpainting) or, with
  `mask=None`, the grayscale of `known` (colorization)."""
  sde = exp.sde_of(params)  # a learned schedule's is the parameters' own
  if mask is None:
    constraint = control.colorization_constraint(sde, known)
  else:
    constraint = control.inpainting_constraint(sde, mask, known)
  x_init = sde.prior_sample(jax.random.fold_in(rng, 0), known.shape)
  score_fn = exp.sampling_score_fn(params, labels, classifier_params)
  return exp.sampling_fn_of(params)(score_fn, x_init, jax.random.fold_in(rng, 1), constraint=constraint)


def complete_held_out(exp, params, step, out_dir, print_fn=print):
  """Inpaint or colorize the first `sampling.num_samples` test images (in chunks of `sampling.batch_size`):
  `out_dir/{inpaint,colorize}_<step>.npz` with the `images` (model space), their `masks` (1: known) or
  `gray` images, and the `samples`; and a `.png` of original, input, mask (white: filled) and result
  side by side (original, grayscale and result for colorization). Returns the samples."""
  config, s = exp.config, exp.config.sampling
  colorize = bool(s.colorize)
  test = exp.dataset.test[: s.num_samples]
  if len(test) < s.num_samples:
    print_fn(f"the test split holds {len(test)} images: completing those (sampling.num_samples={s.num_samples})")
  images = exp.model_space(test)
  num = len(images)
  masks = None if colorize else inpainting_masks(s.inpaint_mask, num, images.shape[1:], np.random.default_rng(step))
  labels = exp.sample_labels(num)
  program = jax.jit(functools.partial(_constrained_sample, exp))
  rng = jax.random.fold_in(seed_key(config, SAMPLE), step)
  chunks = []
  for i, lo in enumerate(range(0, num, s.batch_size)):
    part = slice(lo, lo + s.batch_size)
    x, _ = program(
      params,
      jax.random.fold_in(rng, i),
      images[part],
      None if masks is None else masks[part],
      None if labels is None else labels[part],
      exp.classifier_params,
    )
    chunks.append(np.asarray(x))
    print_fn(f"{'colorizing' if colorize else 'inpainting'}: {lo + len(x)}/{num} held-out images")
  samples = np.concatenate(chunks)
  if jax.process_index() != 0:
    return samples
  os.makedirs(out_dir, exist_ok=True)
  task = "colorize" if colorize else "inpaint"
  lo = -1.0 if config.data.centered else 0.0
  show = lambda x: (x - lo) / (1.0 - lo)
  if colorize:
    gray = np.broadcast_to(images.mean(-1, keepdims=True), images.shape)
    arrays, columns = {"gray": gray}, [show(images), show(gray), show(samples)]
  else:
    arrays = {"masks": masks}
    columns = [show(images), np.where(masks > 0, show(images), GRAY), 1.0 - masks, show(samples)]
  with atomic_output(os.path.join(out_dir, f"{task}_{step}.npz")) as tmp:
    np.savez(tmp, images=images, samples=samples, **arrays, **({} if labels is None else {"labels": labels}))
  with atomic_output(os.path.join(out_dir, f"{task}_{step}.png")) as tmp:
    Image.fromarray(plotting.comparison_grid(columns)).save(tmp, format="PNG")
  return samples
