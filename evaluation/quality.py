"""Every sample-quality metric of a set of features against a reference set, in one dictionary."""

import numpy as np

from scorejax.evaluation import metrics


def sample_quality(features, logits, reference, kid_subset_size=1000, kid_subsets=100, pr_max=10_000, seed=0):
  """FID, Inception Score, KID and precision/recall of `features`/`logits` (one row per sample)
  against `reference` (`{features, mu, sigma}` of real data, evaluation/statistics.py), and the
  fraction of samples the network assigns to each class.

  Precision/recall compare at most `pr_max` rows of each side (a fixed random subset): their k-NN
  balls cost O(n^2) distances. The IS uses 10 splits (fewer when there are fewer than 10 samples
  per split would leave), as Salimans et al. 2016. With k = 3 or fewer samples on a side, precision and
  recall are None."""
  features = np.asarray(features, np.float64)
  mu, sigma = metrics.gaussian_statistics(features)
  rng = np.random.default_rng(seed)
  real = np.asarray(reference["features"], np.float64)
  fake_pr = features[rng.permutation(len(features))[:pr_max]]
  real_pr = real[rng.permutation(len(real))[:pr_max]]
  k = 3  # Kynkaanniemi et al.'s neighbourhood size; the balls need more than k points on each side
  precision, recall = (
    metrics.precision_recall(real_pr, fake_pr, k=k) if min(len(real_pr), len(fake_pr)) > k else (None,) * 2
  )
  kid, kid_std = metrics.kernel_inception_distance(
    features, real, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed
  )
  splits = max(1, min(10, len(features) // 10))
  inception_score, inception_score_std = metrics.inception_score(logits, splits=splits)
  return {
    "num_samples": len(features),
    "fid": float(metrics.frechet_distance(mu, sigma, reference["mu"], reference["sigma"])),
    "inception_score": float(inception_score),
    "inception_score_std": float(inception_score_std),
    "inception_score_splits": splits,
    "kid": float(kid),
    "kid_std": float(kid_std),
    "precision": None if precision is None else float(precision),
    "recall": None if recall is None else float(recall),
    "class_histogram": [float(v) for v in metrics.class_histogram(logits, np.shape(logits)[1])],
  }


_DRAWN = (
  "fid",
  "kid",
  "precision",
  "recall",
  "inception_score",
  "copy_share",
  "copy_excess",
  "copy_share_z",
  "copying_z",
)


def held_out_protocol(sets, held_out, train_features, count=None, num_draws=10, seed=0):
  """Sample quality against real data the generator never trained on, at equal sample counts, with the spread over
  draws (the protocol of issue 19; cross-fitting over random halves of the held-out data).

  `sets`: name -> `{features, logits}` of sets of images (a model's samples, training images, ...).
  `held_out`: `{features, logits}` of the held-out split; `train_features`: the features of the training split.
  For each of `num_draws` draws the held-out data is split at random into two halves: the reference R and the floor
  F. Every set, and F itself (the held-out floor: real unseen images, not 0 by construction), is measured by n of
  its images drawn at random, n = min(count, |F|, the smallest set), against R. The halves are not stratified by
  class: a model's samples are not either, and a stratified floor would sit below what a perfect model can reach
  (with halves of exactly 20 images per class, KID's unbiased MMD^2 of the floor measured about -330 +- 90, not 0).

  Each set against R:

  - FID (Heusel et al. 2017) between the Gaussians of the n features and of R's; KID, the unbiased MMD^2 of the
    cubic kernel (Binkowski et al. 2018) over all pairs; precision/recall (Kynkaanniemi et al. 2019, k = 3);
    the Inception Score of the n logits in one split (Salimans et al. 2016);
  - data copying (metrics.data_copying): distances to the nearest training feature against R's.

  Returns `{"count": n, "num_draws", "held_out_floor": {...}, name: {...}}`; each entry holds the mean of every
  metric over the draws, its standard deviation over draws (`<metric>_std`), `copying_flagged`
  (metrics.copying_flagged of the means) and the class histogram of the whole set."""
  held_features = np.asarray(held_out["features"], np.float64)
  held_logits = np.asarray(held_out["logits"], np.float64)
  held_distances = metrics.nearest_distances(held_features, train_features)
  floor_size = len(held_features) // 2
  n = min([count or floor_size, floor_size] + [len(s["features"]) for s in sets.values()])
  if n < 4:
    raise ValueError(f"the held-out protocol needs at least 4 images per set and per half, got {n}")
  arrays = {
    name: (
      np.asarray(s["features"], np.float64),
      np.asarray(s["logits"], np.float64),
      metrics.nearest_distances(s["features"], train_features),
    )
    for name, s in sets.items()
  }
  rng = np.random.default_rng(seed)
  values = {name: {k: [] for k in _DRAWN} for name in ["held_out_floor", *sets]}
  for _ in range(num_draws):
    order = rng.permutation(len(held_features))
    ref, floor = order[:floor_size], order[floor_size : 2 * floor_size]
    ref_features = held_features[ref]
    mu, sigma = metrics.gaussian_statistics(ref_features)
    drawn = {"held_out_floor": (held_features[floor[:n]], held_logits[floor[:n]], held_distances[floor[:n]])}
    for name, (features, logits, distances) in arrays.items():
      pick = rng.choice(len(features), n, replace=False)
      drawn[name] = (features[pick], logits[pick], distances[pick])
    for name, (features, logits, distances) in drawn.items():
      v = values[name]
      v["fid"].append(metrics.frechet_distance(*metrics.gaussian_statistics(features), mu, sigma))
      v["kid"].append(metrics.polynomial_mmd2(features, ref_features))
      precision, recall = metrics.precision_recall(ref_features, features, k=3)
      v["precision"].append(precision)
      v["recall"].append(recall)
      v["inception_score"].append(metrics.inception_score(logits, splits=1)[0])
      for k, value in metrics.data_copying(distances, held_distances[ref]).items():
        v[k].append(value)
  histograms = {"held_out_floor": held_logits, **{name: a[1] for name, a in arrays.items()}}
  result = {"count": n, "num_draws": num_draws}
  for name, v in values.items():
    entry = {"num_samples": n}
    for k, draws in v.items():
      entry[k], entry[f"{k}_std"] = float(np.mean(draws)), float(np.std(draws))
    entry["copying_flagged"] = metrics.copying_flagged(entry)
    entry["class_histogram"] = [float(h) for h in metrics.class_histogram(histograms[name], held_logits.shape[1])]
    result[name] = entry
  return result
