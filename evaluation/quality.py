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
