"""The sample-quality metrics against closed forms: Frechet distance between Gaussians, the population MMD^2 of the
cubic kernel, Inception Scores of known predictions, precision and recall of a mixture that drops a mode."""

import numpy as np
import pytest

from scorejax.evaluation import metrics


def random_rotation(rng, d):
  q, r = np.linalg.qr(rng.standard_normal((d, d)))
  return q * np.sign(np.diag(r))


def random_covariance(rng, d):
  m = rng.standard_normal((d, d))
  return m @ m.T / d + 0.1 * np.eye(d)


# Frechet distance. For commuting covariances (same eigenvectors, eigenvalues a_i and b_i),
# (Sigma1 Sigma2)^(1/2) has eigenvalues sqrt(a_i b_i), so d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.


def test_frechet_distance_of_diagonal_gaussians_is_the_elementwise_closed_form():
  rng = np.random.default_rng(0)
  mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
  a, b = rng.uniform(0.1, 4, 5), rng.uniform(0.1, 4, 5)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_in_one_dimension_is_the_squared_difference_of_means_and_standard_deviations():
  # N(1, 2^2) vs N(-2, 5^2): (1 - (-2))^2 + (2 - 5)^2 = 18.
  assert metrics.frechet_distance([1.0], [[4.0]], [-2.0], [[25.0]]) == pytest.approx(18.0, rel=1e-14)


def test_frechet_distance_of_commuting_covariances_is_the_closed_form():
  rng = np.random.default_rng(1)
  d = 6
  q = random_rotation(rng, d)
  a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
  mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = metrics.frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
  assert got == pytest.approx(expected, rel=1e-10)


def two_by_two_trace_sqrt(s1, s2):
  """tr((S1 S2)^(1/2)) of 2x2 matrices: eigenvalues l1, l2 >= 0 of S1 S2 give
  (sqrt(l1) + sqrt(l2))^2 = tr(S1 S2) + 2 sqrt(det(S1 S2))."""
  return np.sqrt(np.trace(s1 @ s2) + 2 * np.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))


def test_frechet_distance_of_non_commuting_2x2_covariances_is_the_closed_form():
  s1 = np.array([[2.0, 0.7], [0.7, 1.0]])
  s2 = np.array([[0.5, -0.3], [-0.3, 3.0]])
  assert not np.allclose(s1 @ s2, s2 @ s1)
  mu1, mu2 = np.array([0.3, -1.0]), np.array([1.0, 0.5])
  expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * two_by_two_trace_sqrt(s1, s2)
  assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_of_rank_deficient_commuting_covariances_is_the_closed_form():
  # Half the eigenvalues of each covariance are 0, at different places: S1 S2 is mostly zero.
  rng = np.random.default_rng(2)
  d = 40
  q = random_rotation(rng, d)
  a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
  a[::2], b[: d // 2] = 0.0, 0.0
  mu = rng.standard_normal(d)
  expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  assert metrics.frechet_distance(mu, q @ np.diag(a) @ q.T, mu, q @ np.diag(b) @ q.T) == pytest.approx(expected, 1e-9)


def test_frechet_distance_of_rank_one_covariances_is_the_closed_form():
  # Sigma1 = u u^T, Sigma2 = v v^T: Sigma1 Sigma2 = (u.v) u v^T has the single eigenvalue (u.v)^2, so
  # tr((Sigma1 Sigma2)^(1/2)) = |u.v| and d^2 = |u|^2 + |v|^2 - 2 |u.v|, in a 100-dimensional space.
  rng = np.random.default_rng(3)
  u, v = rng.standard_normal(100), rng.standard_normal(100)
  zero = np.zeros(100)
  expected = u @ u + v @ v - 2 * abs(u @ v)
  assert metrics.frechet_distance(zero, np.outer(u, u), zero, np.outer(v, v)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_a_rotated_2x2_block_in_a_singular_64_dimensional_covariance_is_the_closed_form():
  rng = np.random.default_rng(4)
  d = 64
  s1, s2 = np.zeros((d, d)), np.zeros((d, d))
  s1[:2, :2] = [[2.0, 0.7], [0.7, 1.0]]
  s2[:2, :2] = [[0.5, -0.3], [-0.3, 3.0]]
  q = random_rotation(rng, d)
  expected = np.trace(s1) + np.trace(s2) - 2 * two_by_two_trace_sqrt(s1[:2, :2], s2[:2, :2])
  got = metrics.frechet_distance(np.zeros(d), q @ s1 @ q.T, np.zeros(d), q @ s2 @ q.T)
  assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_a_feature_set_against_itself_is_zero_even_with_fewer_samples_than_features():
  # 60 samples in 256 dimensions: the covariance has rank 59, where sqrtm(Sigma Sigma) turns complex.
  rng = np.random.default_rng(5)
  features = np.abs(rng.standard_normal((60, 256))) * rng.uniform(0, 3, 256)
  mu, sigma = metrics.gaussian_statistics(features)
  assert np.linalg.matrix_rank(sigma) == 59
  assert abs(metrics.frechet_distance(mu, sigma, mu, sigma)) < 1e-6
  other_mu, other_sigma = metrics.gaussian_statistics(np.abs(rng.standard_normal((60, 256))))
  forward = metrics.frechet_distance(mu, sigma, other_mu, other_sigma)
  assert np.isfinite(forward) and forward > 0
  assert metrics.frechet_distance(other_mu, other_sigma, mu, sigma) == pytest.approx(forward, rel=1e-10)


def test_frechet_distance_of_samples_approaches_the_population_value():
  # 20000 samples of N(mu_i, Sigma_i) in 2-D: the sample statistics are within a few percent of the truth.
  rng = np.random.default_rng(6)
  s1 = np.array([[2.0, 0.7], [0.7, 1.0]])
  s2 = np.array([[0.5, -0.3], [-0.3, 3.0]])
  mu1, mu2 = np.array([0.3, -1.0]), np.array([1.0, 0.5])
  x = rng.multivariate_normal(mu1, s1, 20000)
  y = rng.multivariate_normal(mu2, s2, 20000)
  expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * two_by_two_trace_sqrt(s1, s2)
  got = metrics.frechet_distance(*metrics.gaussian_statistics(x), *metrics.gaussian_statistics(y))
  assert got == pytest.approx(expected, rel=0.05)


def test_gaussian_statistics_use_the_unbiased_covariance():
  features = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
  mu, sigma = metrics.gaussian_statistics(features)
  np.testing.assert_allclose(mu, [2.0, 2.0])
  # Deviations (-2, -1), (0, -1), (2, 2): sums of products 8, 6, 6, divided by n - 1 = 2.
  np.testing.assert_allclose(sigma, [[4.0, 3.0], [3.0, 3.0]])


@pytest.mark.parametrize(
  "shapes",
  [((3,), (3, 3), (4,), (4, 4)), ((3,), (3, 3), (3,), (3, 4)), ((3, 1), (3, 3), (3, 1), (3, 3))],
)
def test_frechet_distance_names_a_shape_mismatch_in_one_line(shapes):
  with pytest.raises(ValueError) as error:
    metrics.frechet_distance(*(np.zeros(s) for s in shapes))
  message = str(error.value)
  assert "\n" not in message and "shape" in message


def test_frechet_distance_refuses_nan_statistics():
  with pytest.raises(ValueError, match="NaN"):
    metrics.frechet_distance(np.zeros(2), np.eye(2), np.array([0.0, np.nan]), np.eye(2))


# Kernel inception distance. For independent x ~ N(a, A), y ~ N(b, B) with s = x.y:
#   E s = a.b,   E s^2 = tr((A + a a^T)(B + b b^T)),
#   E s^3 = (a.b)^3 + 3 (a.b)(a^T B a + b^T A b + tr(A B)) + 6 a^T B A b
# (condition on y: s ~ N(a.y, y^T A y), whose third moment is m^3 + 3 m v; then average over y = b + w).
# The kernel (s/d + 1)^3 = 1 + 3 s/d + 3 s^2/d^2 + s^3/d^3 has mean E k(x, y) from these moments.


def mean_cubic_kernel(a, cov_a, b, cov_b):
  d = len(a)
  ab = a @ b
  s2 = np.trace((cov_a + np.outer(a, a)) @ (cov_b + np.outer(b, b)))
  s3 = ab**3 + 3 * ab * (a @ cov_b @ a + b @ cov_a @ b + np.trace(cov_a @ cov_b)) + 6 * a @ cov_b @ cov_a @ b
  return 1 + 3 * ab / d + 3 * s2 / d**2 + s3 / d**3


def population_mmd2(a, cov_a, b, cov_b):
  return (
    mean_cubic_kernel(a, cov_a, a, cov_a)
    + mean_cubic_kernel(b, cov_b, b, cov_b)
    - 2 * mean_cubic_kernel(a, cov_a, b, cov_b)
  )


def test_mean_cubic_kernel_closed_form_matches_monte_carlo():
  # The closed form the KID tests rely on, against 400k kernel evaluations (tolerance: 5 standard errors).
  rng = np.random.default_rng(7)
  a, b = rng.standard_normal(3), rng.standard_normal(3)
  cov_a, cov_b = random_covariance(rng, 3), random_covariance(rng, 3)
  x = rng.multivariate_normal(a, cov_a, 400_000)
  y = rng.multivariate_normal(b, cov_b, 400_000)
  k = (np.sum(x * y, axis=1) / 3 + 1) ** 3
  assert abs(k.mean() - mean_cubic_kernel(a, cov_a, b, cov_b)) < 5 * k.std() / np.sqrt(len(k))


def biased_mmd2(x, y):
  """The V-statistic, which keeps k(x_i, x_i): biased upward by about (E k(x, x) - E k(x, x')) / m per set."""
  d = x.shape[1]
  kernel = lambda u, v: (u @ v.T / d + 1) ** 3
  return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_kid_is_an_unbiased_estimate_of_the_population_mmd2(shift):
  # 400 independent draws of two sets of 30 samples; one subset of all 30 is the full-set estimate. Its mean over
  # draws must be within 4 standard errors of the closed form, where the biased V-statistic is not.
  rng = np.random.default_rng(8)
  d, m, draws = 4, 30, 400
  a = rng.standard_normal(d)
  b = a + shift * rng.standard_normal(d)
  cov_a, cov_b = random_covariance(rng, d), random_covariance(rng, d) if shift else None
  cov_b = cov_a if cov_b is None else cov_b
  truth = population_mmd2(a, cov_a, b, cov_b)
  if shift == 0.0:
    assert truth == pytest.approx(0.0, abs=1e-12)
  unbiased, biased = [], []
  for _ in range(draws):
    x, y = rng.multivariate_normal(a, cov_a, m), rng.multivariate_normal(b, cov_b, m)
    mean, std = metrics.kernel_inception_distance(x, y, num_subsets=1, subset_size=m, seed=0)
    assert std == 0.0
    unbiased.append(mean)
    biased.append(biased_mmd2(x, y))
  standard_error = np.std(unbiased) / np.sqrt(draws)
  assert abs(np.mean(unbiased) - truth) < 4 * standard_error
  assert abs(np.mean(biased) - truth) > 4 * standard_error


def unbiased_mmd2_by_pairs(x, y):
  """MMD^2 averaged over the pairs i != j within each set and all pairs across (cubic kernel)."""
  m, d = x.shape
  off_diagonal = ~np.eye(m, dtype=bool)
  kernel = lambda u, v: (u @ v.T / d + 1) ** 3
  return kernel(x, x)[off_diagonal].mean() + kernel(y, y)[off_diagonal].mean() - 2 * kernel(x, y).mean()


def test_kid_averages_subsets_of_the_smaller_set_size_drawn_from_the_seed():
  rng = np.random.default_rng(9)
  x, y = rng.standard_normal((50, 8)), rng.standard_normal((40, 8)) + 0.3
  # subset_size 1000 is clipped to 40: each subset is 40 of x's 50 and a permutation of y, drawn in that order
  # without replacement from the seed's generator (the reference code's convention).
  mean, std = metrics.kernel_inception_distance(x, y, num_subsets=20, subset_size=1000, seed=0)
  draw = np.random.default_rng(0)
  estimates = []
  for _ in range(20):
    ix, iy = draw.choice(50, 40, replace=False), draw.choice(40, 40, replace=False)
    estimates.append(unbiased_mmd2_by_pairs(x[ix], y[iy]))
  assert (mean, std) == pytest.approx((np.mean(estimates), np.std(estimates)), rel=1e-10)
  assert std > 0
  assert metrics.kernel_inception_distance(x, y, num_subsets=20, subset_size=1000, seed=1) != (mean, std)
  # Two sets of equal size: every subset is a permutation of both, so all subsets agree.
  mean, std = metrics.kernel_inception_distance(x[:40], y, num_subsets=5, subset_size=1000)
  assert std < 1e-12 * abs(mean) and mean == pytest.approx(unbiased_mmd2_by_pairs(x[:40], y), rel=1e-12)


# Inception Score.


def test_inception_score_of_constant_predictions_is_one():
  logits = np.tile(np.random.default_rng(10).standard_normal(7), (100, 1))
  mean, std = metrics.inception_score(logits, splits=10)
  assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_balanced_predictions_is_the_number_of_classes():
  # Logit 60 on the true class: the other probabilities are e^-60, and p(y) is uniform over the 10 classes.
  labels = np.tile(np.arange(10), 20)
  logits = 60.0 * np.eye(10)[labels]
  mean, std = metrics.inception_score(logits, splits=10)
  assert mean == pytest.approx(10.0, abs=1e-6) and std == pytest.approx(0.0, abs=1e-6)


def test_inception_score_std_is_over_consecutive_splits():
  # Four splits of 12 confident predictions balanced over 1, 2, 3 and 4 classes score 1, 2, 3 and 4:
  # mean 2.5 and (population) standard deviation sqrt(1.25).
  labels = np.concatenate([np.arange(12) % c for c in (1, 2, 3, 4)])
  mean, std = metrics.inception_score(60.0 * np.eye(4)[labels], splits=4)
  assert mean == pytest.approx(2.5, abs=1e-9) and std == pytest.approx(np.sqrt(1.25), abs=1e-9)


def test_inception_score_is_the_exponential_of_marginal_minus_conditional_entropy():
  # E_x KL(p(y|x) || p(y)) = H(p(y)) - E_x H(p(y|x)): an independent route to the same number.
  logits = 3 * np.random.default_rng(11).standard_normal((300, 5))
  p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  entropy = lambda q: -np.sum(q * np.log(q), axis=-1)
  expected = np.exp(entropy(p.mean(axis=0)) - entropy(p).mean())
  mean, _ = metrics.inception_score(logits, splits=1)
  assert mean == pytest.approx(expected, rel=1e-12)
  assert 1 < mean < 5


def test_inception_score_survives_logits_whose_softmax_underflows():
  # Three splits of 12, each balanced over 3 classes; every other logit is 1e5 below, so exp underflows to 0.
  logits = np.where(np.eye(3, dtype=bool)[np.arange(36) % 3], 0.0, -1e5)
  assert metrics.inception_score(logits, splits=3) == pytest.approx((3.0, 0.0), abs=1e-9)


# Precision and recall.


def test_precision_recall_of_a_set_against_itself_is_one_and_one():
  features = np.random.default_rng(12).standard_normal((300, 16))
  assert metrics.precision_recall(features, features, k=3) == (1.0, 1.0)


def test_precision_recall_by_hand_on_a_line_excludes_each_point_from_its_own_neighbours():
  # k = 1. Real {0, 1, 3}: radii 1, 1, 2. Fake {-0.5, -1.2, 4.4, 6}: radii 0.7, 0.7, 1.6, 1.6.
  # Inside a real ball: -0.5 (0.5 <= 1 from 0) and 4.4 (1.4 <= 2 from 3), not -1.2 or 6: precision 1/2.
  # Inside a fake ball: 0 (0.5 <= 0.7 from -0.5) and 3 (1.4 <= 1.6 from 4.4), not 1: recall 2/3.
  # Counting a point as its own neighbour would give every ball radius 0, and precision 0.
  real = np.array([[0.0], [1.0], [3.0]])
  fake = np.array([[-0.5], [-1.2], [4.4], [6.0]])
  precision, recall = metrics.precision_recall(real, fake, k=1)
  assert precision == 0.5 and recall == pytest.approx(2 / 3)
  assert metrics.precision_recall(fake, real, k=1) == (recall, precision)


def test_precision_recall_does_not_depend_on_the_batch_size():
  rng = np.random.default_rng(13)
  real, fake = rng.standard_normal((200, 5)), 1.2 * rng.standard_normal((150, 5)) + 0.3
  expected = metrics.precision_recall(real, fake, k=3, batch=1000)
  assert 0 < expected[0] < 1 and 0 < expected[1] < 1
  assert metrics.precision_recall(real, fake, k=3, batch=7) == expected


def mixture(rng, n, centers):
  return centers[rng.integers(len(centers), size=n)] + rng.standard_normal((n, centers.shape[1]))


def test_dropping_a_mode_lowers_recall_by_its_mass_and_keeps_precision():
  # Four unit Gaussians 30 apart, weight 1/4 each. The k-NN balls of a sample cover a fraction c of its own
  # distribution (c < 1 at fixed k: near each sample the points form a locally uniform process, whose k-NN balls
  # leave gaps of a fixed proportion, and the tails are missed), and never reach a mode 30 standard deviations away.
  # A fake set without mode 0 therefore has
  #   precision = c, exactly in expectation: its samples lie in modes 1-3, which the same real balls cover,
  #   recall = c (1 - w0), w0 = the fraction of real samples in mode 0, which no fake ball reaches,
  # with c measured on an independent fake sample of the full mixture (about 0.975 here). Each difference is between
  # two fractions of n samples, standard error about sqrt(2 c (1 - c) / n) = 0.005: the bound is 4 of them.
  rng = np.random.default_rng(14)
  centers = 30.0 * np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  n = 2000
  real = mixture(rng, n, centers)
  c_precision, c_recall = metrics.precision_recall(real, mixture(rng, n, centers), k=3)
  assert c_precision > 0.9 and c_recall > 0.9
  fake = mixture(rng, n, centers[1:])
  precision, recall = metrics.precision_recall(real, fake, k=3)
  w0 = np.mean(np.linalg.norm(real - centers[0], axis=1) < 15)
  c = min(c_precision, c_recall)
  tolerance = 4 * np.sqrt(2 * c * (1 - c) / n)
  assert abs(precision - c_precision) < tolerance
  assert abs(recall - c_recall * (1 - w0)) < tolerance
  assert recall < 1 - w0 + 1e-12


# Class histogram.


def test_class_histogram_is_the_fraction_of_argmax_classes():
  logits = np.eye(4)[[0, 0, 1, 3, 3, 3]] + 0.1
  np.testing.assert_allclose(metrics.class_histogram(logits, 4), [2 / 6, 1 / 6, 0, 3 / 6])
  with pytest.raises(ValueError, match="classes"):
    metrics.class_histogram(logits, 5)


# Data copying: distances to the nearest training feature against those of held-out data (Meehan et al. 2020).


def test_unbiased_mmd2_of_sets_of_different_sizes_is_the_pairwise_formula():
  rng = np.random.default_rng(7)
  x, y = rng.standard_normal((9, 3)), rng.standard_normal((5, 3)) + 0.5

  def k(a, b):
    return (a @ b / 3 + 1) ** 3

  within_x = sum(k(x[i], x[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
  within_y = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
  between = sum(k(a, b) for a in x for b in y) / (9 * 5)
  assert metrics.polynomial_mmd2(x, y) == pytest.approx(within_x + within_y - 2 * between, rel=1e-12)


def test_mann_whitney_z_is_scipys_normal_approximation():
  scipy_stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(8)
  a, b = rng.standard_normal(30), rng.standard_normal(50) + 0.3
  a[:5] = b[:5]  # ties
  u = scipy_stats.mannwhitneyu(a, b, method="asymptotic", use_continuity=False).statistic
  assert metrics.mann_whitney_z(a, b) == pytest.approx((u - 750) / np.sqrt(30 * 50 * 81 / 12), rel=1e-12)


def test_nearest_distances_are_the_brute_force_minimum():
  rng = np.random.default_rng(9)
  x, t = rng.standard_normal((7, 4)), rng.standard_normal((11, 4))
  expected = np.sqrt(((x[:, None] - t[None]) ** 2).sum(-1)).min(1)
  np.testing.assert_allclose(metrics.nearest_distances(x, t, batch=3), expected, rtol=1e-10)


@pytest.mark.parametrize("k", [0, 100, 250, 500])
def test_copy_share_of_k_training_copies_among_n_held_out_draws_is_k_over_n(k):
  """Features of a 16-dimensional mixture: a training set, held-out draws to calibrate, and a sample set made of k
  training points and n - k fresh draws. The estimated fraction of copies is k/n within three standard errors
  (binomial: which fresh draws fall below the threshold, and where the 5% quantile of 1000 calibration draws puts
  it), and only sets with copies are flagged."""
  rng = np.random.default_rng(k)

  def draw(m):
    return rng.standard_normal((m, 16)) + 3 * rng.integers(0, 2, (m, 1))

  train, calibration, n = draw(2000), draw(1000), 500
  samples = np.concatenate([train[rng.choice(2000, k, replace=False)], draw(n - k)])
  stats = metrics.data_copying(metrics.nearest_distances(samples, train), metrics.nearest_distances(calibration, train))
  q = metrics.COPY_QUANTILE
  standard_error = np.sqrt(q * (1 - q) * ((n - k) / n**2 + ((n - k) / n) ** 2 / 1000)) / (1 - q)
  assert abs(stats["copy_excess"] - k / n) <= 3 * standard_error, stats
  assert metrics.copying_flagged(stats) == (k > 0), stats
