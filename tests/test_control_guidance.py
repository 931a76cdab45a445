"""Guidance and constraints, proven on laws whose conditionals are known in closed form.

A Gaussian mixture whose components are the classes has an exact noisy classifier at every noise level,
the responsibilities; its conditional scores are the components' own. Gaussian data have Gaussian
conditionals given a linear function of their coordinates (colorization here; inpainting, and the
replacement step itself, in test_control_constraints.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax import control, samplers, sde_lib
from scorejax.configs.default import get_default_config
from scorejax.datasets.toy2d import (
  GMM_MEANS,
  GMM_STDS,
  GMM_WEIGHTS,
  gaussian_sde_score,
  gmm_class_log_probs,
  gmm_sde_score,
)

NUM_SAMPLES = 4_000
LABEL = 0  # the rarest component (weight 0.1): the hardest to sample alone
MEAN_ATOL = 0.05  # 8 standard errors of a mean of 4000 samples of std 0.4 (the sampler's own bias is below 0.02)
VAR_RTOL = 0.1  # 4.5 standard errors of the variance of 4000 samples (std 0.4: SE 2.2%)


def vp(n):
  return sde_lib.VPSDE(0.1, 20.0, N=n)


def build(method, sde, **fields):
  """The sampler with the config's defaults (configs/default.py) but for `fields`, on a uniform grid."""
  return samplers.get_sampling_fn(sde, method, **{**get_default_config().sampling, "time_grid": "uniform", **fields})


def draw(method, sde, score_fn, num=NUM_SAMPLES, seed=0, constraint=None, shape=(2,), **fields):
  sample_fn = build(method, sde, **fields)
  kwargs = {} if constraint is None else {"constraint": constraint}
  x_init = sde.prior_sample(jax.random.key(seed), (num,) + shape)
  x, _ = jax.jit(lambda x, rng: sample_fn(score_fn, x, rng, **kwargs))(x_init, jax.random.key(seed + 1))
  return np.asarray(x, np.float64)


# ----------------------------------------------------------------------------- the mixture and its classes


def exact_classifier(sde):
  """`log p_t(y | x)`: the responsibilities of the mixture carried to time `t`."""

  def log_prob_fn(x, t, y):
    scale, std = sde.marginal_coefficients(t)
    log_probs = gmm_class_log_probs(x, std, GMM_MEANS, GMM_STDS, GMM_WEIGHTS, scale)
    return jnp.take_along_axis(log_probs, y[:, None], axis=-1)[:, 0]

  return log_prob_fn


def component_score(sde, k):
  """The score of component `k` alone carried to time `t`: the exact class-conditional score."""
  return gmm_sde_score(sde, GMM_MEANS[k : k + 1], GMM_STDS[k : k + 1], np.ones(1, np.float32))


def mixture_conditional_score(sde):
  """`s(x, t, y)`: component `y`'s score, or the mixture's for the null label `y = K`."""
  num_classes = len(GMM_WEIGHTS)
  per_class = [component_score(sde, k) for k in range(num_classes)] + [gmm_sde_score(sde)]

  def score_fn(x, t, y):
    scores = jnp.stack([s(x, t) for s in per_class])  # (K + 1, batch, d)
    return jnp.take_along_axis(scores, y[None, :, None], axis=0)[0]

  return score_fn


def assert_is_component(x, k):
  """Fewer than 1% of the samples nearer another component's mean; the rest of the requested component's
  mean and variance within MEAN_ATOL and VAR_RTOL."""
  nearest = np.argmin(((x[:, None, :] - GMM_MEANS[None]) ** 2).sum(-1), axis=1)
  assert np.mean(nearest != k) < 0.01, np.bincount(nearest, minlength=len(GMM_WEIGHTS)) / len(x)
  mode = x[nearest == k]
  np.testing.assert_allclose(mode.mean(0), GMM_MEANS[k], atol=MEAN_ATOL)
  np.testing.assert_allclose(mode.var(0), GMM_STDS[k] ** 2, rtol=VAR_RTOL)


def test_the_component_check_rejects_the_mixture_and_a_wider_component():
  rng = np.random.default_rng(0)
  x = GMM_MEANS[LABEL] + GMM_STDS[LABEL] * rng.standard_normal((NUM_SAMPLES, 2))
  assert_is_component(x, LABEL)
  with pytest.raises(AssertionError):  # 3% of the samples from another component
    assert_is_component(np.concatenate([x[:-120], GMM_MEANS[3] + 0.5 * rng.standard_normal((120, 2))]), LABEL)
  with pytest.raises(AssertionError):
    assert_is_component(GMM_MEANS[LABEL] + 1.2 * GMM_STDS[LABEL] * rng.standard_normal((NUM_SAMPLES, 2)), LABEL)


@pytest.mark.parametrize("t", [0.01, 0.3, 1.0])
@pytest.mark.slow
def test_score_plus_exact_classifier_gradient_is_the_class_conditional_score(t):
  # Bayes: grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x), at every t, for every class.
  sde = vp(100)
  x = jax.random.normal(jax.random.key(0), (256, 2)) * 3.0
  t = jnp.full((256,), t)
  for k in range(len(GMM_WEIGHTS)):
    guided = control.classifier_guidance(gmm_sde_score(sde), exact_classifier(sde), k, 1.0)
    np.testing.assert_allclose(guided(x, t), component_score(sde, k)(x, t), rtol=1e-4, atol=1e-4)


def test_classifier_free_guidance_with_exact_scores_is_classifier_guidance_of_the_same_scale():
  # (1 + w) s(x | y) - w s(x) = s(x | y) + w [s(x | y) - s(x)] = s(x | y) + w grad log p_t(y | x) (Bayes).
  sde = vp(100)
  x = jax.random.normal(jax.random.key(1), (256, 2)) * 3.0
  t = jax.random.uniform(jax.random.key(2), (256,), minval=0.01, maxval=1.0)
  null = len(GMM_WEIGHTS)
  for w in (0.0, 0.5, 3.0):
    free = control.classifier_free_guidance(mixture_conditional_score(sde), 2, w, null)
    classifier = control.classifier_guidance(component_score(sde, 2), exact_classifier(sde), 2, w)
    np.testing.assert_allclose(free(x, t), classifier(x, t), rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(
    control.classifier_free_guidance(mixture_conditional_score(sde), 2, 0.0, null)(x, t),
    component_score(sde, 2)(x, t),
  )


CLASSIFIER_GUIDANCE_CASES = [
  ("pc", dict(predictor="reverse_diffusion", corrector="langevin", snr=0.16, n_steps_each=1)),
  ("ode", dict(ode_solver="rk45")),
  ("dpm_solver", dict(num_steps=25, dpm_solver_order=2)),
]


@pytest.mark.parametrize("method, fields", CLASSIFIER_GUIDANCE_CASES, ids=[c[0] for c in CLASSIFIER_GUIDANCE_CASES])
def test_exact_score_and_exact_classifier_at_scale_one_sample_the_requested_component(method, fields):
  sde = vp(200)
  guided = control.classifier_guidance(gmm_sde_score(sde), exact_classifier(sde), LABEL, 1.0)
  assert_is_component(draw(method, sde, guided, **fields), LABEL)


def test_classifier_free_guidance_at_scale_zero_samples_the_requested_component():
  sde = vp(200)
  guided = control.classifier_free_guidance(mixture_conditional_score(sde), LABEL, 0.0, len(GMM_WEIGHTS))
  assert_is_component(draw("dpm_solver", sde, guided, num_steps=25, dpm_solver_order=2), LABEL)


# ----------------------------------------------------------------------------- guidance beyond scale one

# Classes c ~ N(0, tau^2 I) and x | c ~ N(c, s_c^2 I): a Gaussian mixture over a continuum of classes,
# with x ~ N(0, s_u^2 I), s_u^2 = s_c^2 + tau^2. In x_hat = x / m(t) at noise level sigma both scores are
# linear, and so is the guided probability flow dx_hat / d(sigma^2) = -(1/2) s_w (Karras et al. 2022, Eq. 4):
#   dx_hat / dv = a(v) x_hat - b(v) mu,  a = [(1 + w) / (s_c^2 + v) - w / (s_u^2 + v)] / 2,
#   b = (1 + w) / (2 (s_c^2 + v)),  v = sigma^2.
# With Phi(v) = (s_c^2 + v)^((1 + w) / 2) (s_u^2 + v)^(-w / 2) (Phi' = a Phi), from v = S down to v = e:
#   x_hat(e) = Phi(e) [x_hat(S) / Phi(S) + mu int_e^S b / Phi dv].
# As S -> inf with x_hat(S) ~ N(0, S I), the spread is s_c (s_c / s_u)^w: w > 0 narrows the class by
# (s_c / s_u)^w and moves its mean away from the unconditional mean 0, along mu.
CLASS_MEAN = np.array([1.0, -0.5])
CLASS_STD, TAU = 0.5, 1.0
UNCONDITIONAL_STD = float(np.hypot(CLASS_STD, TAU))


def gaussian_class_scores(sde):
  """`s(x, t, y)`: the class's score for label 0, the unconditional one for the null label 1."""

  def score_fn(x, t, y):
    scale, std = (sde_lib.per_example(c, x) for c in sde.marginal_coefficients(t))
    conditional = -(x - scale * CLASS_MEAN) / (scale**2 * CLASS_STD**2 + std**2)
    unconditional = -x / (scale**2 * UNCONDITIONAL_STD**2 + std**2)
    return jnp.where(y[:, None] == 0, conditional, unconditional)

  return score_fn


def guided_flow_map(w, v_start, v_end):
  """`(gain, shift)`: `x_hat(v_end) = gain x_hat(v_start) + shift mu` on the guided probability flow."""
  phi = lambda v: (CLASS_STD**2 + v) ** ((1 + w) / 2) * (UNCONDITIONAL_STD**2 + v) ** (-w / 2)
  u = np.linspace(np.log(v_end), np.log(v_start), 200_001)  # v = e^u: the integrand spans 10 decades
  v = np.exp(u)
  integrand = (1 + w) / (2 * (CLASS_STD**2 + v)) / phi(v) * v
  integral = np.sum((integrand[1:] + integrand[:-1]) / 2 * np.diff(u))
  return phi(v_end) / phi(v_start), phi(v_end) * integral


@pytest.mark.slow
@pytest.mark.parametrize(
  "method, fields", [("ode", dict(ode_solver="rk45")), ("dpm_solver", dict(num_steps=40, dpm_solver_order=3))]
)
def test_classifier_free_guidance_sharpens_the_class_as_the_guided_flow_predicts(method, fields):
  sde, eps = vp(100), 1e-3
  v_start, v_end = (float(sde.noise_level(jnp.asarray(t))) ** 2 for t in (sde.T, eps))
  x_init = np.asarray(sde.prior_sample(jax.random.key(3), (2_000, 2)), np.float64)
  scale_start, scale_end = (float(sde.marginal_coefficients(jnp.asarray(t))[0]) for t in (sde.T, eps))
  spreads, shifts = [], []
  for w in (0.0, 1.0, 3.0):
    guided = control.classifier_free_guidance(gaussian_class_scores(sde), 0, w, 1)
    x = draw(method, sde, guided, num=2_000, seed=3, eps=eps, noise_removal=False, **fields)
    gain, shift = guided_flow_map(w, v_start, v_end)
    predicted = scale_end * (gain * x_init / scale_start + shift * CLASS_MEAN)
    np.testing.assert_allclose(x, predicted, atol=2e-3)  # every sample where the closed form puts it
    spreads.append(x.std(0).mean())
    shifts.append(x.mean(0) @ CLASS_MEAN / (CLASS_MEAN @ CLASS_MEAN))
    np.testing.assert_allclose(spreads[-1], CLASS_STD * (CLASS_STD / UNCONDITIONAL_STD) ** w, rtol=0.05)
  assert spreads[0] > spreads[1] > spreads[2]  # sharper with w,
  assert 1.0 - 0.02 < shifts[0] < shifts[1] < shifts[2]  # and pushed away from the unconditional mean


# ----------------------------------------------------------------------------- inpainting and colorization


def conditional_gaussian(mean, cov, observe, observed):
  """Mean and covariance of x ~ N(mean, cov) given `observe @ x = observed` (a full-rank linear map)."""
  gain = cov @ observe.T @ np.linalg.inv(observe @ cov @ observe.T)
  return mean + gain @ (observed - observe @ mean), cov - gain @ observe @ cov


@pytest.mark.slow
def test_colorization_keeps_the_gray_image_and_samples_the_colors_given_it():
  # One 1x2 image of 3 channels, Gaussian with correlated channels and pixels: given each pixel's gray
  # value (the mean of its channels), the colours are Gaussian with a closed-form mean and covariance.
  rng = np.random.default_rng(4)
  factor = rng.standard_normal((6, 6))
  cov = factor @ factor.T / 6 + 0.05 * np.eye(6)
  mean = rng.standard_normal(6) * 0.3
  image = (mean + np.linalg.cholesky(cov) @ rng.standard_normal(6)).reshape(1, 2, 3)
  gray = image.mean(-1)
  sde = vp(100)
  constraint = control.colorization_constraint(sde, jnp.asarray(image, jnp.float32))
  fields = dict(predictor="ancestral_sampling", corrector="resample", n_steps_each=9)
  x = draw("pc", sde, gaussian_sde_score(sde, mean, cov), 10_000, 5, constraint, (1, 2, 3), **fields)
  np.testing.assert_allclose(x.mean(-1), np.broadcast_to(gray, (len(x), 1, 2)), atol=1e-6)
  observe = np.kron(np.eye(2), np.full((1, 3), 1 / 3))  # each pixel's channel mean
  exact_mean, exact_cov = conditional_gaussian(mean, cov, observe, gray.ravel())
  flat = x.reshape(len(x), 6)
  # Resampling's bias, as for inpainting, is a fraction of the conditional spread (std ~0.2-0.4 here).
  np.testing.assert_allclose(flat.mean(0), exact_mean, atol=0.1)
  np.testing.assert_allclose(np.cov(flat.T), exact_cov, atol=0.05)


@pytest.mark.slow
def test_a_constraint_on_nothing_leaves_the_sampler_as_it_was():
  # P = 0: x - P x + P(...) = x at every step, whatever the noise drawn for it.
  sde = vp(50)
  score_fn = gmm_sde_score(sde)
  nothing = control.inpainting_constraint(sde, np.zeros(2, np.float32), jnp.zeros(2))
  fields = dict(predictor="reverse_diffusion", corrector="langevin", n_steps_each=1)
  free = draw("pc", sde, score_fn, num=256, **fields)
  np.testing.assert_allclose(draw("pc", sde, score_fn, num=256, constraint=nothing, **fields), free, atol=1e-6)


@pytest.mark.slow
def test_resampling_alone_leaves_the_mixture_in_place():
  # Up with the exact forward kernel and down with the ancestral step keeps p_t: unconstrained, the
  # resampling corrector is one more MCMC step that leaves the mixture's weights and modes where they are.
  sde = vp(100)
  x = draw("pc", sde, gmm_sde_score(sde), num=6_000, predictor="ancestral_sampling", corrector="resample")
  nearest = np.argmin(((x[:, None, :] - GMM_MEANS[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_allclose(np.bincount(nearest, minlength=4) / len(x), GMM_WEIGHTS, atol=0.03)
  for k in range(4):
    np.testing.assert_allclose(x[nearest == k].var(0).mean(), GMM_STDS[k] ** 2, rtol=0.15)
