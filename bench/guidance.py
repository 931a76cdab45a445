"""Class guidance, inpainting and colorization of a trained digits model, measured by the evaluation classifier.

  python bench/guidance.py --workdir=runs/digits --classifier_workdir=runs/digits_classifier
  python bench/guidance.py --workdir=runs/digits_cfg              # a class-conditional model: classifier-free
      [--scales=default,0,1,2,4] [--per_class=100] [--grid=guidance.png] [--inpaint=center,left,random:0.5]
      [--inpaint_correctors=none,langevin,resample] [--inpaint_picture=DIR] [--cache=runs/digits/eval/digits_classifier]

1. Guidance. For each guidance scale `w` of `--scales` (`default`: the one `--mode=sample` takes) and each
   digit class, `--per_class` samples of that class with the run's own sampler (`sampling.*` of its saved
   config): classifier guidance by the noise-conditional classifier of `--classifier_workdir`
   (`s + w grad log p_phi(y | x_t)`), or classifier-free guidance where the run's model is class-conditional
   (`(1 + w) s(x, y) - w s(x)`). The table gives, per class, the fraction of samples that the project's
   evaluation classifier (evaluation/digits_classifier.py, trained on the training digits, ~97% on the held-out
   ones; a separate network from the guiding classifier) labels as the class asked for, the mean, and the
   seconds. `--grid` writes one row of 10 samples per class at the first scale >= 1.
2. Inpainting. The held-out digits (400 since issue 19; 197 in the figures of bench/README.md) under each mask
   of `--inpaint` (the region to fill), completed by the PC sampler (predictor reverse diffusion on the run's time
   grid, unguided) with each corrector of
   `--inpaint_correctors`: none (plain replacement), Langevin (`sampling.n_steps_each` steps at `sampling.snr`:
   score_sde's inpainter) or resample (RePaint's jumps, as many). Whether the known pixels came back exact, and
   the fraction of completions that the evaluation classifier labels as the original digit, against the masked
   inputs (the region to fill set to 0, the background). `--inpaint_picture=DIR` keeps the pictures, one folder
   per corrector.
"""

import argparse
import os
import time

import numpy as np

from scorejax import plotting
from scorejax.configs.default import get_default_config
from scorejax.evaluation import digits_classifier
from scorejax.run.builders import sampling_options
from scorejax.run.classifier import attach_classifier
from scorejax.run.experiment import Experiment
from scorejax.run.inpaint import complete_held_out, inpainting_masks
from scorejax.run.restore import restore_for_inference
from scorejax.run.saved_config import resolve_config
from scorejax.samplers.pc import pc_nfe, pc_times

NUM_CLASSES = 10


def saved_config(workdir, **fields):
  config = resolve_config(get_default_config(), workdir, False, "sample", argv=[], print_fn=lambda *a: None)
  config.update_from_flattened_dict(fields)
  return config


def evaluation_labels(network, x, centered):
  """The evaluation classifier's label of each sample (model space), clipped to the pixel range."""
  lo = -1.0 if centered else 0.0
  _, logits = network.extract(np.clip((np.asarray(x) - lo) / (1.0 - lo), 0.0, 1.0))
  return np.argmax(logits, axis=-1)


def guided(workdir, classifier_workdir, scale, per_class):
  """`(samples (classes, per_class, ...), seconds)` at guidance scale `scale`."""
  config = saved_config(workdir, **{"sampling.guidance_scale": scale, "sampling.class_label": 0})
  config.sampling.classifier_workdir = classifier_workdir or ""
  exp = Experiment(config)
  state = restore_for_inference(exp, workdir)
  if classifier_workdir:
    attach_classifier(exp, classifier_workdir)
  labels = np.repeat(np.arange(NUM_CLASSES), per_class)
  start = time.perf_counter()
  samples = exp.generate(state.ema_params, int(state.step), num=len(labels), labels=labels)
  samples = samples.reshape((NUM_CLASSES, per_class) + samples.shape[1:])
  return samples, time.perf_counter() - start, config, exp.guidance_scale


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--classifier_workdir", default="")
  parser.add_argument("--scales", default="default,0,1,2,4")
  parser.add_argument("--per_class", type=int, default=100)
  parser.add_argument("--grid", default="")
  parser.add_argument("--inpaint", default="center,left,random:0.5")
  parser.add_argument("--inpaint_correctors", default="none,langevin,resample")
  parser.add_argument("--inpaint_picture", default="")
  parser.add_argument("--cache", default="")
  args = parser.parse_args()
  base = saved_config(args.workdir)
  exp = Experiment(base)
  ds = exp.dataset
  cache = args.cache or os.path.join(args.workdir, "eval", "digits_classifier")
  network, accuracy = digits_classifier.load_or_train(
    cache, ds.train / ds.max_value, ds.train_labels, ds.test / ds.max_value, ds.test_labels
  )
  print(f"evaluation classifier: {100 * accuracy:.1f}% on the held-out digits")
  scales = [None if w == "default" else float(w) for w in args.scales.split(",") if w]
  kind = "classifier guidance" if args.classifier_workdir else "classifier-free guidance"
  if scales:
    print(f"\n{kind}, {args.per_class} samples per class, sampler {base.sampling.method}\n")
    print("| w | " + " | ".join(map(str, range(NUM_CLASSES))) + " | mean | seconds |")
    print("|---" * (NUM_CLASSES + 3) + "|")
  grid_written = False
  for scale in scales:
    samples, seconds, config, used = guided(args.workdir, args.classifier_workdir, scale, args.per_class)
    flat = samples.reshape((-1,) + samples.shape[2:])
    right = evaluation_labels(network, flat, config.data.centered).reshape(NUM_CLASSES, -1) == np.arange(10)[:, None]
    cells = " | ".join(f"{100 * r:.0f}" for r in right.mean(1))
    name = f"{used:g}" + (" (default)" if scale is None else "")
    print(f"| {name} | {cells} | {100 * right.mean():.1f} | {seconds:.0f} |", flush=True)
    if args.grid and not grid_written and used >= 1:
      lo = -1.0 if config.data.centered else 0.0
      plotting.save_image_grid((samples[:, :10].reshape((-1,) + samples.shape[2:]) - lo) / (1.0 - lo), args.grid)
      grid_written = True
  if not args.inpaint:
    return
  print(f"\ninpainting of the {len(ds.test)} held-out digits (PC, reverse diffusion), unguided\n")
  print("| region filled | corrector | nfe | known pixels exact | completions labelled as the original | seconds |")
  print("|---|---|---|---|---|---|")
  originals = ds.test / ds.max_value
  truth = ds.test_labels
  on_originals = np.mean(evaluation_labels(network, originals, False) == truth)
  for spec in args.inpaint.split(","):
    masks = inpainting_masks(spec, len(originals), originals.shape[1:], np.random.default_rng(0))
    masked = np.mean(evaluation_labels(network, masks * originals, False) == truth)  # the region to fill at 0
    print(f"| {spec} | (masked input, filled with 0) | | | {100 * masked:.1f}% | |")
    for corrector in args.inpaint_correctors.split(","):
      fields = {"sampling.method": "pc", "sampling.predictor": "reverse_diffusion", "sampling.corrector": corrector}
      config = saved_config(args.workdir, **fields, **{"sampling.inpaint_mask": spec})
      config.sampling.num_samples = config.sampling.batch_size = len(ds.test)
      exp = Experiment(config)
      state = restore_for_inference(exp, args.workdir)
      start = time.perf_counter()
      out = os.path.join(args.inpaint_picture or f"/tmp/bench_guidance_{os.getpid()}", corrector)
      samples = complete_held_out(exp, state.ema_params, int(state.step), out, print_fn=lambda *a: None)
      seconds = time.perf_counter() - start
      images = exp.model_space(ds.test)
      masks = inpainting_masks(spec, len(images), images.shape[1:], np.random.default_rng(int(state.step)))
      exact = bool(np.array_equal(samples[masks > 0], images[masks > 0]))
      completed = np.mean(evaluation_labels(network, samples, config.data.centered) == truth)
      s = sampling_options(config)
      steps = len(pc_times(exp.sde, s["time_grid"], s["eps"])) - 1
      nfe = pc_nfe("reverse_diffusion", corrector, steps, s["n_steps_each"], s["noise_removal"])
      print(f"| {spec} | {corrector} | {nfe} | {exact} | {100 * completed:.1f}% | {seconds:.0f} |", flush=True)
  print(f"\n(the evaluation classifier labels {100 * on_originals:.1f}% of the original held-out digits correctly)")


if __name__ == "__main__":
  main()
