"""`--mode=eval`'s sample quality: samples drawn in resumable batches, their features in a fixed network,
and FID/IS/KID/precision-recall against the training split, next to the same for held-out real data."""

import json
import os
import shutil
import time
import zipfile

import jax
import numpy as np
from jax.experimental import multihost_utils

from scorejax.evaluation import digits_classifier, inception, quality, statistics
from scorejax.logging_utils import atomic_output
from scorejax.run.errors import UserError

MISSING_WEIGHTS = (
  "FID/IS/KID/precision-recall skipped: they need the FID Inception weights; download "
  "pt_inception-2015-12-05-6726825d.pth from "
  "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth "
  "and pass --config.eval.inception_weights=PATH"
)


def feature_network(exp, workdir, print_fn=print):
  """The network whose features measure the samples, and what to report about it; `(None, {})` when
  there is none: vector data, or RGB images without `eval.inception_weights` (one line says which file
  to get). The embedded digits use a classifier trained here (cached in `workdir/eval/`)."""
  ds = exp.dataset
  if not ds.is_image or ds.max_value is None:
    return None, {}
  if ds.name == "digits":
    network, accuracy = digits_classifier.load_or_train(
      os.path.join(workdir, "eval", "digits_classifier"),
      ds.train / ds.max_value,
      ds.train_labels,
      ds.test / ds.max_value,
      ds.test_labels,
      print_fn=print_fn,
    )
    return network, {"classifier_held_out_accuracy": float(accuracy)}
  path = exp.config.eval.inception_weights
  if not path:
    print_fn(MISSING_WEIGHTS)
    return None, {}
  try:
    return inception.load_inception(path), {}
  except ValueError as e:
    raise UserError(str(e)) from None


def to_pixels(x, max_value, centered):
  """Model-space samples as the integer pixel counts they would be saved as (0..max_value), the form
  in which real data reaches the feature network: papers measure quantized images."""
  lo = -1.0 if centered else 0.0
  unit = (np.asarray(x, np.float64) - lo) / (1.0 - lo)
  return np.clip(np.round(unit * max_value), 0, max_value).astype(np.uint8)


def _duration(seconds):
  seconds = int(round(seconds))
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _read_batch(path, n):
  try:
    with np.load(path) as f:
      batch = {k: f[k] for k in ("images", "features", "logits", "nfe")}
  except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
    return None
  return batch if len(batch["images"]) == n == len(batch["features"]) else None


def draw_and_extract(exp, params, step, rng, network, directory, print_fn=print):
  """`eval.num_samples` samples as pixel counts, with their features and logits, drawn
  `sampling.batch_size` at a time with key `fold_in(rng, i)` for batch `i`. Each finished batch is saved
  in `directory`, so that an interrupted evaluation redoes only the unfinished ones; batches saved with
  other sampler settings, seed or network are discarded. With several processes, a batch is reused only
  if every process can read it (they draw together). One progress line per batch, with an ETA."""
  e, s = exp.config.eval, exp.config.sampling
  num, size = e.num_samples, s.batch_size
  meta = {
    "sampling": json.loads(s.to_json_best_effort()),
    "seed": exp.config.seed,
    "network": network.name,
    "weights_sha256": network.weights_hash,
  }
  meta_path = os.path.join(directory, "meta.json")
  main = jax.process_index() == 0
  num_batches = -(-num // size)
  paths = [os.path.join(directory, f"batch_{i:05d}.npz") for i in range(num_batches)]
  sizes = [min(size, num - i * size) for i in range(num_batches)]
  same = False
  if os.path.exists(meta_path):
    try:
      with open(meta_path) as f:
        same = json.load(f) == meta
    except (OSError, ValueError):
      pass
    if not same and main:
      print_fn(f"discarding the saved samples in {directory}: they were drawn with other settings")
  saved = [_read_batch(path, n) if same else None for path, n in zip(paths, sizes)]
  if jax.process_count() > 1:  # sampling is collective: every process must redraw the same batches
    readable = multihost_utils.process_allgather(np.asarray([b is not None for b in saved]))
    saved = [b if ok else None for b, ok in zip(saved, np.all(readable, axis=0))]
  if main:
    if not same and os.path.isdir(directory):
      shutil.rmtree(directory)
    os.makedirs(directory, exist_ok=True)
    with atomic_output(meta_path) as tmp, open(tmp, "w") as f:
      json.dump(meta, f, indent=2)
  batches, fresh, reused, t0 = [], 0, 0, time.perf_counter()
  for i, (path, n, batch) in enumerate(zip(paths, sizes, saved)):
    if batch is None:
      # A class-conditional network samples `sampling.class_label` (-2: every class in turn, as EDM's
      # conditional FIDs are measured); else the unconditional score.
      labels = exp.sample_labels(n) if exp.num_classes else None
      x, nfe = exp.sample(params, jax.random.fold_in(rng, i), n, labels)
      images = to_pixels(x, exp.dataset.max_value, exp.config.data.centered)
      features, logits = network.extract(images / exp.dataset.max_value, batch_size=e.feature_batch_size)
      batch = {
        "images": images,
        "features": features.astype(np.float32),
        "logits": logits.astype(np.float32),
        "nfe": np.float64(np.mean(nfe)),
      }
      if main:
        with atomic_output(path) as tmp:
          np.savez(tmp, **batch)
      fresh += 1
      elapsed = time.perf_counter() - t0
      print_fn(
        f"eval step {step}: {i * size + n}/{num} samples ({float(batch['nfe']):g} score evaluations each), "
        f"{_duration(elapsed)} elapsed, ETA {_duration(elapsed / fresh * (num_batches - i - 1))}"
      )
    else:
      reused += 1
    batches.append(batch)
  if reused:
    print_fn(f"eval step {step}: reused {reused} of {num_batches} sample batches saved in {directory}")
  return {k: np.concatenate([np.atleast_1d(b[k]) for b in batches]) for k in ("images", "features", "logits", "nfe")}


def sample_quality(exp, params, step, rng, network, workdir, print_fn=print):
  """The sample-quality section of `eval_<step>.json`, and the samples as pixel counts."""
  e, ds = exp.config.eval, exp.dataset
  stats_dir = e.stats_dir or os.path.join(workdir, "eval", "stats")
  reference = {
    split: statistics.reference_statistics(
      network, images, ds.max_value, stats_dir, ds.name, split, e.feature_batch_size, print_fn
    )
    for split, images in (("train", ds.train), ("test", ds.test))
  }
  drawn = draw_and_extract(
    exp, params, step, rng, network, os.path.join(workdir, "eval", f"samples_{step}"), print_fn=print_fn
  )

  def measure(features, logits):
    return quality.sample_quality(features, logits, reference["train"], pr_max=e.pr_max, seed=exp.config.seed)

  n_real = min(e.num_samples, len(ds.test))
  train_draw = np.random.default_rng([exp.config.seed, step]).permutation(len(ds.train))[: e.num_samples]
  result = {
    "feature_network": network.name,
    "weights_sha256": network.weights_hash,
    "reference": f"{ds.name} training split ({len(ds.train)} images)",
    "sampler": exp.config.sampling.method,
    "nfe": float(np.mean(drawn["nfe"])),
    "samples": measure(drawn["features"], drawn["logits"]),
    "held_out_data": measure(reference["test"]["features"][:n_real], reference["test"]["logits"][:n_real]),
  }
  if len(train_draw) < len(ds.train):
    # Training images themselves: what a model that reproduces its training set scores, below the held-out
    # floor where the feature space was fitted to that set (the digits classifier). The whole split would
    # be the reference itself (FID 0): no information.
    train = reference["train"]
    result["training_data"] = measure(train["features"][train_draw], train["logits"][train_draw])
  if n_real < e.num_samples:  # the metrics are biased by the sample count: compare like with like too
    result["samples_at_held_out_count"] = measure(drawn["features"][:n_real], drawn["logits"][:n_real])
  return result, drawn["images"]


def summary(result):
  """One line of the headline numbers."""
  s, r = result["samples"], result["held_out_data"]
  t = result.get("training_data")
  floors = "held-out data | training data" if t else "held-out data"

  def also(key, fmt):
    return f"{r[key]:{fmt}}" + (f" | {t[key]:{fmt}}" if t else "")

  pr = "" if s["precision"] is None else f", precision {s['precision']:.3f}, recall {s['recall']:.3f}"
  return (
    f"{result['feature_network']} over {s['num_samples']} samples ({floors}): "
    f"FID {s['fid']:.3f} ({also('fid', '.3f')}), IS {s['inception_score']:.2f} ({also('inception_score', '.2f')}), "
    f"KID {s['kid']:.4f} ({also('kid', '.4f')})" + pr
  )
