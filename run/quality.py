"""`--mode=eval`'s sample quality: samples drawn in resumable batches (or read from a file), their features in a
fixed network, and FID/IS/KID/precision-recall and data copying, next to the same for real data: against held-out
real data at equal sample counts with the spread over draws (`eval.reference='held_out'`, the digits default), or
against the training split as the FID literature reports it (`'train'`, CIFAR-10 and image folders)."""

import json
import os
import shutil
import time
import zipfile

import jax
import numpy as np
from jax.experimental import multihost_utils

from scorejax.datasets import folder
from scorejax.evaluation import digits_classifier, inception, metrics, quality, statistics
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
  to get). The embedded digits use a classifier trained here, cached beside the real data's statistics
  (`classifier_dir`)."""
  ds = exp.dataset
  if not ds.is_image or ds.max_value is None:
    return None, {}
  if ds.name == "digits":
    network, accuracy = digits_classifier.load_or_train(
      classifier_dir(exp.config.eval, workdir),
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


def classifier_dir(e, workdir):
  """Where the digits classifier is cached: `<eval.stats_dir>/digits_classifier`, so that runs which share their
  statistics of real data (`eval.stats_dir`) share the classifier too and train it once; by default
  `<workdir>/eval/digits_classifier`. The cache is keyed by the data, hyperparameters and seed
  (evaluation/digits_classifier.py: load_or_train), so one folder serves any number of runs."""
  return (
    os.path.join(e.stats_dir, "digits_classifier")
    if e.stats_dir
    else os.path.join(workdir, "eval", "digits_classifier")
  )


def reference_features(ds, network, e, workdir, print_fn=print):
  """The cached `{features, logits, mu, sigma}` of the training and held-out splits (evaluation/statistics.py)."""
  stats_dir = e.stats_dir or os.path.join(workdir, "eval", "stats")
  return {
    split: statistics.reference_statistics(
      network, images, ds.max_value, stats_dir, ds.name, split, e.feature_batch_size, print_fn
    )
    for split, images in (("train", ds.train), ("test", ds.test))
  }


def check_reference(e, ds):
  """The held-out protocol has enough held-out images (run/validate.py checks `eval.reference` itself)."""
  if e.reference == "held_out" and len(ds.test) < 8:
    raise UserError(
      f"eval.reference='held_out' splits the held-out data into a reference and a floor of at least 4 images each, "
      f"but data.dataset={ds.name!r} holds out {len(ds.test)}; raise data.num_test or set eval.reference='train'"
    )


def score(exp, network, drawn, seed, workdir, print_fn=print):
  """The sample-quality section of an evaluation of the samples `drawn` (`{features, logits}`)."""
  e, ds = exp.config.eval, exp.dataset
  check_reference(e, ds)
  reference = reference_features(ds, network, e, workdir, print_fn)
  train, held_out = reference["train"], reference["test"]
  head = {"feature_network": network.name, "weights_sha256": network.weights_hash, "protocol": e.reference}
  if e.reference == "held_out":
    result = quality.held_out_protocol(
      {"samples": drawn, "training_copies": train}, held_out, train["features"], num_draws=e.num_draws, seed=seed
    )
    head["reference"] = (
      f"{ds.name}: a random half ({len(ds.test) // 2} images) of the {len(ds.test)} held-out images in each of "
      f"{e.num_draws} draws; the other half is the floor; every set measured by {result['count']} images per draw"
    )
    return {**head, "num_samples": len(drawn["features"]), **result}

  def measure(features, logits, distances, calibration):
    out = quality.sample_quality(features, logits, train, pr_max=e.pr_max, seed=seed)
    copying = metrics.data_copying(distances, calibration)
    return {**out, **copying, "copying_flagged": metrics.copying_flagged(copying)}

  # Data copying: distances to the nearest training feature, calibrated by half of the held-out images (at most
  # as many as samples); the other half is the held-out floor.
  n_real = min(e.num_samples, len(ds.test))
  held_distances = metrics.nearest_distances(held_out["features"][:n_real], train["features"])
  if n_real < 4:
    raise UserError(f"data copying needs at least 4 held-out images and samples, got {n_real}")
  calibration, floor = held_distances[: n_real // 2], held_distances[n_real // 2 :]
  sample_distances = metrics.nearest_distances(drawn["features"], train["features"])
  num_samples = len(drawn["features"])
  result = {
    **head,
    "reference": f"{ds.name} training split ({len(ds.train)} images)",
    "samples": measure(drawn["features"], drawn["logits"], sample_distances, calibration),
    "held_out_data": measure(held_out["features"][:n_real], held_out["logits"][:n_real], floor, calibration),
  }
  train_draw = np.random.default_rng(seed).permutation(len(ds.train))[:num_samples]
  if len(train_draw) < len(ds.train):
    # Training images themselves: what a model that reproduces its training set scores, below the held-out
    # floor where the feature space was fitted to that set (the digits classifier). The whole split would
    # be the reference itself (FID 0): no information.
    f = train["features"][train_draw]
    result["training_data"] = measure(f, train["logits"][train_draw], np.zeros(len(f)), calibration)
  if n_real < num_samples:  # the metrics are biased by the sample count: compare like with like too
    result["samples_at_held_out_count"] = measure(
      drawn["features"][:n_real], drawn["logits"][:n_real], sample_distances[:n_real], calibration
    )
  return result


def sample_quality(exp, params, step, rng, network, workdir, print_fn=print):
  """The sample-quality section of `eval_<step>.json`, and the samples as pixel counts."""
  check_reference(exp.config.eval, exp.dataset)
  drawn = draw_and_extract(
    exp, params, step, rng, network, os.path.join(workdir, "eval", f"samples_{step}"), print_fn=print_fn
  )
  seed = int(np.random.default_rng([exp.config.seed, step]).integers(2**31))
  result = score(exp, network, drawn, seed, workdir, print_fn)
  result["sampler"] = exp.config.sampling.method
  result["nfe"] = float(np.mean(drawn["nfe"]))
  return result, drawn["images"]


def _line(entry, spread):
  def show(key, fmt):
    value = f"{entry[key]:{fmt}}"
    return value + (f" +- {entry[key + '_std']:{fmt}}" if spread else "")

  flag = ", FLAGGED as copies" if entry["copying_flagged"] else ""
  return (
    f"FID {show('fid', '.2f')}, KID {show('kid', '.4g')}, copy share {entry['copy_share']:.3f} "
    f"(Z {entry['copy_share_z']:.1f}; copying Z {entry['copying_z']:.1f}{flag})"
  )


def summary(result):
  """The headline numbers, one line per set."""
  if result["protocol"] == "held_out":
    lines = [
      f"{result['feature_network']} against held-out real data, {result['count']} images per set, mean +- sd over "
      f"{result['num_draws']} draws:"
    ]
    names = [("samples", "samples"), ("held_out_floor", "held-out floor"), ("training_copies", "training copies")]
    lines += [f"  {label:16s} {_line(result[key], True)}" for key, label in names if key in result]
    return "\n".join(lines)
  names = [("samples", "samples"), ("held_out_data", "held-out data"), ("training_data", "training data")]
  lines = [f"{result['feature_network']} against the training split:"]
  lines += [
    f"  {label:16s} {_line(result[key], False)} over {result[key]['num_samples']} images"
    for key, label in names
    if key in result
  ]
  return "\n".join(lines)


def read_images(path, ds, centered):
  """The images of `eval.samples_file` as pixel counts `(n, *ds.shape)` in 0..max_value: an .npz whose key
  `images` or `samples` holds integer pixel counts or floats in model space (as --mode=sample writes them; [-1, 1]
  when `centered`), or a folder of PNGs (0..255, rescaled to 0..max_value; center-cropped and resized to the data's
  shape). Anything else is a UserError in one line."""
  shape = tuple(ds.shape)
  if os.path.isdir(path):
    paths = [p for p in folder.list_images(path) if p.lower().endswith(".png")]
    if not paths:
      raise UserError(f"eval.samples_file={path!r} is a folder without .png images")
    try:
      images = np.stack([folder.load_image(p, shape) for p in paths])
    except (OSError, ValueError) as e:
      raise UserError(f"eval.samples_file={path!r}: an image cannot be read ({type(e).__name__}: {e})") from None
    return np.round(images.astype(np.float64) / 255 * ds.max_value).astype(np.uint8)
  try:
    with np.load(path) as f:
      key = next((k for k in ("images", "samples") if k in f.files), None)
      if key is None:
        raise UserError(f"eval.samples_file={path!r} holds {', '.join(f.files) or 'nothing'}, not images or samples")
      x = f[key]
  except UserError:
    raise
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise UserError(f"eval.samples_file={path!r} is not a readable .npz file or folder ({type(e).__name__})") from None
  if x.ndim == len(shape) and shape[-1] == 1:
    x = x[..., None]
  if x.shape[1:] != shape or len(x) < 4:
    raise UserError(f"eval.samples_file={path!r} holds {key} of shape {x.shape}; expected at least 4 of {shape}")
  if np.issubdtype(x.dtype, np.integer):
    if x.min() < 0 or x.max() > ds.max_value:
      raise UserError(
        f"eval.samples_file={path!r}: integer pixels must lie in 0..{ds.max_value}, got {x.min()}..{x.max()}"
      )
    return x.astype(np.uint8)
  if not np.all(np.isfinite(x)):
    raise UserError(f"eval.samples_file={path!r} holds NaN or infinite values")
  return to_pixels(x, ds.max_value, centered)


def score_file(exp, workdir, print_fn=print):
  """`--mode=eval` with `eval.samples_file`: the sample quality of the images in that file against the dataset's
  cached statistics, as of a checkpoint's samples; written to `workdir/eval/file_<file name>.json` (not
  `eval_<name>.json`, which a checkpoint sweep would take for the evaluation of a step)."""
  e, ds = exp.config.eval, exp.dataset
  path = e.samples_file
  if not os.path.exists(path):
    raise UserError(f"eval.samples_file={path!r} does not exist")
  network, info = feature_network(exp, workdir, print_fn)
  if network is None:
    raise UserError(f"eval.samples_file needs a feature network: data.dataset={ds.name!r} has none here")
  check_reference(e, ds)
  pixels = read_images(path, ds, exp.config.data.centered)
  features, logits = network.extract(pixels / ds.max_value, batch_size=e.feature_batch_size)
  result = score(exp, network, {"features": features, "logits": logits}, exp.config.seed, workdir, print_fn)
  result.update(info)
  out = {"samples_file": os.path.abspath(path), "dataset": exp.config.data.dataset, "sample_quality": result}
  name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
  target = os.path.join(workdir, "eval", f"file_{name}.json")
  os.makedirs(os.path.dirname(target), exist_ok=True)
  with atomic_output(target) as tmp, open(tmp, "w") as f:
    json.dump(out, f, indent=2)
  print_fn(f"{path}: {len(pixels)} images\n" + summary(result) + f"\nwrote {target}")
  return out
