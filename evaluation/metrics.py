"""Sample-quality metrics over the features and logits of a feature network (float64 NumPy arrays).

Frechet distance (Heusel et al. 2017), Inception Score (Salimans et al. 2016), kernel inception distance
(Binkowski et al. 2018), improved precision and recall (Kynkaanniemi et al. 2019), the class histogram, and
data copying: distances to the nearest training feature against those of held-out data (Meehan et al. 2020).
Each takes arrays `(n, F)` of features or `(n, K)` of logits and returns Python floats.
"""

import numpy as np


def _as_matrix(x, what):
  x = np.asarray(x, np.float64)
  if x.ndim != 2:
    raise ValueError(f"{what} must be a 2-D array (samples, features), got shape {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{what} contains NaN or infinite values")
  return x


def gaussian_statistics(features):
  """Mean and unbiased covariance of `features` `(n, F)`, as pytorch-fid and TTUR compute them:

  mu = (1/n) sum_i f_i,    Sigma = 1/(n-1) sum_i (f_i - mu)(f_i - mu)^T.
  """
  features = _as_matrix(features, "features")
  if len(features) < 2:
    raise ValueError(f"a covariance needs at least 2 samples, got {len(features)}")
  mu = features.mean(axis=0)
  centered = features - mu
  return mu, centered.T @ centered / (len(features) - 1)


def _psd_sqrt(sigma):
  """Symmetric square root of a covariance through its eigendecomposition. Eigenvalues within rounding of 0
  (below d * eps * the largest, as `numpy.linalg.matrix_rank` decides rank) count as 0: their square roots,
  about sqrt(eps) * the largest, would otherwise enter the distance as spurious directions."""
  eigenvalues, eigenvectors = np.linalg.eigh(sigma)
  cutoff = len(sigma) * np.finfo(np.float64).eps * np.abs(eigenvalues).max(initial=0.0)
  eigenvalues = np.where(eigenvalues > cutoff, eigenvalues, 0.0)
  return (eigenvectors * np.sqrt(eigenvalues)) @ eigenvectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2):
  """Frechet (2-Wasserstein) distance between N(mu1, Sigma1) and N(mu2, Sigma2) (Dowson & Landau 1982), the FID
  of Heusel et al. 2017 when the statistics are Inception features:

      d^2 = |mu1 - mu2|^2 + tr(Sigma1) + tr(Sigma2) - 2 tr((Sigma1 Sigma2)^(1/2)).

  tr((Sigma1 Sigma2)^(1/2)) is the sum of the square roots of the eigenvalues of
  Sigma1^(1/2) Sigma2 Sigma1^(1/2) = A A^T with A = Sigma1^(1/2) Sigma2^(1/2), i.e. the sum of the singular values
  of A (its nuclear norm). Unlike `scipy.linalg.sqrtm(Sigma1 @ Sigma2)` this stays real and finite for singular
  covariances (fewer samples than features), and singular values keep full precision where the square roots of
  A A^T's near-zero eigenvalues would amplify rounding to sqrt(machine epsilon). Returns a float >= 0.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  if mu1.ndim != 1 or mu1.shape != mu2.shape:
    raise ValueError(f"means must be vectors of one length, got shapes {mu1.shape} and {mu2.shape}")
  d = mu1.shape[0]
  if sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(
      f"covariances must have shape {(d, d)} for means of length {d}, got {sigma1.shape}, {sigma2.shape}"
    )
  for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
    if not np.all(np.isfinite(value)):
      raise ValueError(f"{name} contains NaN or infinite values")
  # Symmetrize: statistics read back from disk or summed in another order may differ from symmetric by rounding.
  sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
  a = _psd_sqrt(sigma1) @ _psd_sqrt(sigma2)
  trace_sqrt_product = np.linalg.svd(a, compute_uv=False).sum()
  distance = np.sum(np.square(mu1 - mu2)) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product
  return float(max(distance, 0.0))


def _log_softmax(logits):
  shifted = logits - logits.max(axis=1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def inception_score(logits, splits=10):
  """Inception Score (Salimans et al. 2016) of class logits `(n, K)`, mean and standard deviation over `splits`
  consecutive equal parts of the samples, as the reference code computes it:

      IS = exp( E_x KL(p(y|x) || p(y)) ),   p(y) = E_x p(y|x)   (within each split).

  It lies in [1, K]: 1 when every prediction is the same, K when predictions are confident and classes balanced.
  Probabilities are handled as logs (log-softmax, log-mean-exp), so confident predictions cannot give 0 * log 0.
  """
  logits = _as_matrix(logits, "logits")
  n = len(logits)
  if not 1 <= splits <= n:
    raise ValueError(f"splits must be between 1 and the number of samples {n}, got {splits}")
  scores = []
  for i in range(splits):
    log_p = _log_softmax(logits[i * n // splits : (i + 1) * n // splits])
    top = log_p.max(axis=0)
    log_marginal = top + np.log(np.mean(np.exp(log_p - top), axis=0))
    kl = np.sum(np.exp(log_p) * (log_p - log_marginal), axis=1)
    scores.append(np.exp(np.mean(kl)))
  return float(np.mean(scores)), float(np.std(scores))


def _unbiased_polynomial_mmd2(x, y):
  """Unbiased MMD^2 between samples of sizes m and n under the cubic kernel k(a, b) = (a.b / d + 1)^3 (Gretton et
  al. 2012, Eq. 3):

  MMD^2 = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1))
          - 2 sum_{i, j} k(x_i, y_j) / (m n).
  """
  (m, d), n = x.shape, len(y)
  k_xx = (x @ x.T / d + 1) ** 3
  k_yy = (y @ y.T / d + 1) ** 3
  k_xy = (x @ y.T / d + 1) ** 3
  within = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
  return within - 2 * k_xy.sum() / (m * n)


def polynomial_mmd2(features1, features2):
  """The unbiased MMD^2 of KID's cubic kernel between two whole sets (of any sizes >= 2), without subsets: KID of
  Binkowski et al. 2018 computed on all pairs."""
  features1, features2 = _as_matrix(features1, "features1"), _as_matrix(features2, "features2")
  if features1.shape[1] != features2.shape[1]:
    raise ValueError(f"feature widths differ: {features1.shape[1]} and {features2.shape[1]}")
  if min(len(features1), len(features2)) < 2:
    raise ValueError(f"MMD^2 needs at least 2 samples on each side, got {len(features1)} and {len(features2)}")
  return float(_unbiased_polynomial_mmd2(features1, features2))


def kernel_inception_distance(features1, features2, num_subsets=100, subset_size=1000, seed=0):
  """Kernel inception distance (Binkowski et al. 2018): the unbiased estimate of the squared maximum mean
  discrepancy under the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3,

      MMD^2(P, Q) = E k(x, x') + E k(y, y') - 2 E k(x, y),   x, x' ~ P,  y, y' ~ Q,

  averaged over `num_subsets` random subsets (drawn without replacement, independently for each set) of
  `min(subset_size, n1, n2)` samples, as in the authors' code. Returns the mean and standard deviation over
  subsets. Being unbiased, the estimate can be negative when the distributions are close.
  """
  features1, features2 = _as_matrix(features1, "features1"), _as_matrix(features2, "features2")
  if features1.shape[1] != features2.shape[1]:
    raise ValueError(f"feature widths differ: {features1.shape[1]} and {features2.shape[1]}")
  m = min(subset_size, len(features1), len(features2))
  if m < 2:
    raise ValueError(f"KID needs subsets of at least 2 samples, got {m}")
  rng = np.random.default_rng(seed)
  mmds = []
  for _ in range(num_subsets):
    x = features1[rng.choice(len(features1), m, replace=False)]
    y = features2[rng.choice(len(features2), m, replace=False)]
    mmds.append(_unbiased_polynomial_mmd2(x, y))
  return float(np.mean(mmds)), float(np.std(mmds))


def _squared_distances(a, b):
  """Squared Euclidean distances `(len(a), len(b))` through |a|^2 + |b|^2 - 2 a.b, rounding clipped at 0."""
  d = np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :] - 2 * (a @ b.T)
  return np.maximum(d, 0.0)


def _knn_radii(features, k, batch):
  """Squared distance from each feature to its k-th nearest neighbour among the others (itself excluded)."""
  radii = np.empty(len(features))
  for start in range(0, len(features), batch):
    d = _squared_distances(features[start : start + batch], features)
    rows = np.arange(len(d))
    d[rows, start + rows] = np.inf
    radii[start : start + batch] = np.partition(d, k - 1, axis=1)[:, k - 1]
  return radii


def precision_recall(real, fake, k=3, batch=1000):
  """Improved precision and recall (Kynkaanniemi et al. 2019). Each sample spans a ball reaching its k-th nearest
  neighbour within its own set (itself excluded); the union of a set's balls estimates its manifold:

      precision = (1/|fake|) sum_{y in fake} 1[ exists x in real: |y - x| <= r_k(x) ],
      recall    = (1/|real|) sum_{x in real} 1[ exists y in fake: |x - y| <= r_k(y) ].

  Distances are computed `batch` rows at a time in float64 NumPy, so memory stays at `batch * max(n_real, n_fake)`
  floats (a jitted JAX version with `lax.top_k` in float32 measured slower: bench/README.md). The real-fake
  distances are computed once and serve both directions.
  """
  real, fake = _as_matrix(real, "real"), _as_matrix(fake, "fake")
  if real.shape[1] != fake.shape[1]:
    raise ValueError(f"feature widths differ: real {real.shape[1]}, fake {fake.shape[1]}")
  if not 1 <= k < min(len(real), len(fake)):
    raise ValueError(f"k must be between 1 and the smaller set size minus one, got k={k} for {len(real)}, {len(fake)}")
  real_radii, fake_radii = _knn_radii(real, k, batch), _knn_radii(fake, k, batch)
  fake_inside_real = np.empty(len(fake), bool)
  real_inside_fake = np.zeros(len(real), bool)
  for start in range(0, len(fake), batch):
    d = _squared_distances(fake[start : start + batch], real)
    fake_inside_real[start : start + batch] = np.any(d <= real_radii[None, :], axis=1)
    real_inside_fake |= np.any(d <= fake_radii[start : start + batch, None], axis=0)
  return float(fake_inside_real.mean()), float(real_inside_fake.mean())


def class_histogram(logits, num_classes):
  """Fraction of the samples whose most likely class (argmax of the logits) is each of `num_classes` classes."""
  logits = _as_matrix(logits, "logits")
  if logits.shape[1] != num_classes:
    raise ValueError(f"logits have {logits.shape[1]} classes, expected {num_classes}")
  if len(logits) == 0:
    raise ValueError("class_histogram needs at least one sample")
  return np.bincount(np.argmax(logits, axis=1), minlength=num_classes) / len(logits)


def nearest_distances(features, train, batch=1000):
  """Euclidean distance from each row of `features` to its nearest row of `train`: d(x) = min_j |x - t_j|."""
  features, train = _as_matrix(features, "features"), _as_matrix(train, "train")
  if features.shape[1] != train.shape[1]:
    raise ValueError(f"feature widths differ: {features.shape[1]} and {train.shape[1]}")
  if len(train) == 0:
    raise ValueError("nearest_distances needs at least one training feature")
  out = np.empty(len(features))
  for start in range(0, len(features), batch):
    out[start : start + batch] = np.sqrt(_squared_distances(features[start : start + batch], train).min(axis=1))
  return out


def mann_whitney_z(a, b):
  """The normal approximation of the Mann-Whitney U statistic of `a` against `b` (ties counted 1/2):

      U = sum_{i, j} (1[a_i > b_j] + 1/2 1[a_i = b_j]),   Z = (U - m n / 2) / sqrt(m n (m + n + 1) / 12).

  Z < 0 when values of `a` tend to be smaller than those of `b`; Z ~ N(0, 1) when both are draws of one law."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  m, n = len(a), len(b)
  if m == 0 or n == 0:
    raise ValueError(f"the Mann-Whitney statistic needs values on both sides, got {m} and {n}")
  ranks = np.empty(m + n)
  values = np.concatenate([a, b])
  order = np.argsort(values, kind="stable")
  ranks[order] = np.arange(1, m + n + 1)
  for value in np.unique(values):  # mid-ranks for ties (exact copies all have distance 0)
    tied = values == value
    if tied.sum() > 1:
      ranks[tied] = ranks[tied].mean()
  u = ranks[:m].sum() - m * (m + 1) / 2
  return float((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))


COPY_QUANTILE = 0.05


def copying_flagged(copying):
  """Whether `data_copying`'s statistics (or their means over draws) flag copying: copying_z < -3 (samples nearer
  to the training set than real unseen images are) or copy_share_z > 3 (more samples within the held-out images'
  5% quantile than chance gives); each has a one-sided false-alarm rate of 0.13% under the null."""
  return bool(copying["copying_z"] < -3 or copying["copy_share_z"] > 3)


def data_copying(sample_distances, held_out_distances, quantile=COPY_QUANTILE):
  """Data copying of a set of samples, from `sample_distances` d(x) of each sample to its nearest training feature
  and `held_out_distances` d(h) of real images the generator never saw (its calibration):

  - `copy_share`: the share of samples nearer to a training image than the `quantile`-quantile tau_q of d(h),
      share = (1/n) sum_x 1[d(x) < tau_q];
    real unseen images give `quantile` in expectation, a training image 1 (d = 0).
  - `copy_excess`: (share - q) / (1 - q), the estimated fraction of samples that are copies: a set of k copies and
    n - k images distributed as the held-out ones gives k/n in expectation.
  - `copy_share_z`: (share - q) / sqrt(q (1 - q) (1/n + 1/m)), with m held-out distances: about N(0, 1) for samples
    distributed as the held-out images (the binomial error of the share and that of the quantile), large when a
    part of the samples are copies. It detects a tenth of copies among 200 samples, which copying_z does not.
  - `copying_z`: Meehan et al. 2020's three-sample test over a single cell, the Mann-Whitney Z of d(x) against d(h);
    Z ~ N(0, 1) for samples as far from the training set as unseen real data, Z << 0 for samples nearer to it
    (copies), Z > 0 for samples farther from it (an underfit model).
  """
  sample_distances, held_out_distances = np.asarray(sample_distances), np.asarray(held_out_distances)
  if not 0 < quantile < 1:
    raise ValueError(f"quantile must be in (0, 1), got {quantile}")
  threshold = np.quantile(held_out_distances, quantile)
  share = float(np.mean(sample_distances < threshold))
  n, m = len(sample_distances), len(held_out_distances)
  return {
    "copy_share": share,
    "copy_excess": (share - quantile) / (1 - quantile),
    "copy_share_z": float((share - quantile) / np.sqrt(quantile * (1 - quantile) * (1 / n + 1 / m))),
    "copying_z": mann_whitney_z(sample_distances, held_out_distances),
  }
