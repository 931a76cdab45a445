"""EDM's non-leaking augmentation (Karras et al. 2022, App. F.2): each transform does what its labels say,
each hits its share of the examples, the labels reach the networks that take them, and a train step with
`data.augment_p > 0` runs.

Most checks run on coordinate images: channel 0 holds a pixel's column `j`, channel 1 its row `i`. Bilinear
sampling of an image that is linear in the coordinates (and of its mirror images, kinked only at pixel
centres) is exact, so the augmented image holds, at each output pixel, the input coordinate it sampled:
the transform itself, read off the output."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from scorejax import models, sde_lib
from scorejax.datasets import augment as aug
from scorejax.run.errors import UserError
from scorejax.run.experiment import Experiment
from scorejax.run.train import make_train_step
from scorejax.run.validate import validate_config

from helpers import FAST_COMPILE, tiny_digits, tiny_toy

OFF = {name: 0.0 for name in aug.LABEL_SIZES}  # every transform off; a test turns on the one it checks
ALWAYS = 1e8  # a multiplier that makes `multiplier * p >= 1`: the transform hits every example
H, W = 9, 11  # not square, so that a swapped height and width shows; odd, so that the centre is a pixel
TOL = 1e-3  # float32 coordinates below 32


def coordinate_images(n, h=H, w=W):
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  return jnp.asarray(np.broadcast_to(np.stack([cols, rows], -1), (n, h, w, 2)), jnp.float32)


def centred_grid(h=H, w=W):
  """Output pixel coordinates `q = (x, y)` about the image centre, each `(h, w)`."""
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  return cols - (w - 1) / 2, rows - (h - 1) / 2


def sampled_at(g_inv, h=H, w=W):
  """What a coordinate image becomes when output pixel `q` samples the input at `g_inv q` (3x3, per example
  `(N, 3, 3)`) mirrored into the image: `(N, h, w, 2)`."""
  qx, qy = centred_grid(h, w)
  src = np.einsum("nij,jhw->nihw", g_inv, np.stack([qx, qy, np.ones_like(qx)]))
  return np.stack([aug.reflect(src[:, 0] + (w - 1) / 2, w), aug.reflect(src[:, 1] + (h - 1) / 2, h)], -1)


def rotation(theta):
  c, s = np.cos(theta), np.sin(theta)
  return np.stack(
    [np.stack([c, -s, 0 * c], -1), np.stack([s, c, 0 * c], -1), np.stack([0 * c, 0 * c, 1 + 0 * c], -1)], -2
  )


def diagonal(sx, sy):
  zero, one = 0 * sx, 1 + 0 * sx
  return np.stack([np.stack([sx, zero, zero], -1), np.stack([zero, sy, zero], -1), np.stack([zero, zero, one], -1)], -2)


def translation(tx, ty):
  zero, one = 0 * tx, 1 + 0 * tx
  return np.stack([np.stack([one, zero, tx], -1), np.stack([zero, one, ty], -1), np.stack([zero, zero, one], -1)], -2)


def stretch_candidates(labels, std=0.2):
  """The anisotropic stretches `R(-r) diag(1/s, s) R(r)`, `s = 2^(w std)`, that EDM's labels
  `(w cos r, w sin r)` can stand for: `(w, r) = (|l|, angle(l))` or `(-|l|, angle(l) + pi)` (their labels
  coincide)."""
  norm, angle = np.hypot(labels[:, 0], labels[:, 1]), np.arctan2(labels[:, 1], labels[:, 0])
  return [
    rotation(-r) @ diagonal(2 ** (-v * std), 2 ** (v * std)) @ rotation(r)
    for v, r in ((norm, angle), (-norm, angle + np.pi))
  ]


def run(n, p=1.0, seed=0, x=None, **multipliers):
  x = coordinate_images(n) if x is None else x
  out, labels = aug.augment(jax.random.key(seed), x, p, **{**OFF, **multipliers})
  return np.asarray(out), np.asarray(labels)


def test_reflect_mirrors_without_repeating_the_edge():
  assert aug.reflect(np.arange(-3, 11), 4).tolist() == [3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]


# EDM's CIFAR-10 multipliers (xflip's 1e8 included), compiled once with `p` traced: one program for every p.
cifar_augment = jax.jit(aug.augment)
MANY = (4000, 5, 6, 1)  # enough examples to measure shares, on small images


def test_p_zero_is_the_identity_with_all_zero_labels():
  x = jax.random.normal(jax.random.key(1), MANY)
  out, labels = cifar_augment(jax.random.key(0), x, jnp.float32(0.0))
  assert labels.shape == (MANY[0], aug.LABEL_DIM) == (MANY[0], 9)
  assert np.array_equal(np.asarray(out), np.asarray(x)) and not np.asarray(labels).any()


def test_a_batch_sharded_over_devices_is_augmented_without_communication():
  """Every draw and every gather is per example: XLA keeps each device's examples on it (an indexed gather
  over the batch would all-gather the images)."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  x = jax.device_put(jnp.zeros((8 * len(jax.devices()), H, W, 3)), jax.sharding.NamedSharding(mesh, P("data")))
  program = jax.jit(lambda k, x: aug.augment(k, x, 0.12, translate_int=1.0)).lower(jax.random.key(0), x).compile()
  assert len(jax.devices()) > 1 and not any(op in program.as_text() for op in ("all-gather", "all-to-all"))


@pytest.mark.parametrize("name, axis", [("xflip", 2), ("yflip", 1)])
def test_a_flip_mirrors_the_examples_its_label_marks(name, axis):
  x = coordinate_images(32)
  out, labels = run(32, x=x, **{name: ALWAYS})
  flipped = labels[:, 0] == 1
  assert labels.shape == (32, 1) and set(labels[:, 0]) == {0.0, 1.0}  # a fair coin per example: both occur
  assert np.array_equal(out[flipped], np.flip(x, axis)[flipped]) and np.array_equal(out[~flipped], x[~flipped])


def bright_pixel(n, h, w, row, col):
  x = np.zeros((n, h, w, 1), np.float32)
  x[:, row, col] = 1.0
  return jnp.asarray(x)


def test_an_integer_translation_moves_a_bright_pixel_by_the_labelled_pixels():
  """EDM's convention: label `t / (W m, H m)`; the content moves `tx` right and `ty` up."""
  h, w, m, row, col = 16, 20, 0.2, 8, 10  # shifts of at most (4, 3) pixels keep the pixel inside
  out, labels = run(64, x=bright_pixel(64, h, w, row, col), translate_int=ALWAYS, translate_int_max=m)
  tx, ty = labels[:, 0] * w * m, labels[:, 1] * h * m
  np.testing.assert_allclose(tx, np.round(tx), atol=1e-5)
  np.testing.assert_allclose(ty, np.round(ty), atol=1e-5)
  assert np.abs(tx).max() == 4 and np.abs(ty).max() == 3 and len(set(zip(tx, ty))) > 20
  for image, dx, dy in zip(out[..., 0], np.round(tx).astype(int), np.round(ty).astype(int)):
    expected = np.zeros((h, w), np.float32)
    expected[row - dy, col + dx] = 1.0
    assert np.array_equal(image, expected)


def test_an_integer_rotation_turns_a_bright_pixel_by_the_labelled_quarter_turns():
  """Label `(w in {1, 2}, w in {2, 3})` for `w` quarter turns `(x, y) -> (y, -x)` about the centre."""
  size, row, col = 9, 1, 6  # (x, y) = (2, -3) about the centre (4, 4)
  out, labels = run(32, x=bright_pixel(32, size, size, row, col), rotate_int=ALWAYS)
  turns = {(0, 0): 0, (1, 0): 1, (1, 1): 2, (0, 1): 3}
  assert set(map(tuple, labels.astype(int))) == set(turns)
  for image, label in zip(out[..., 0], labels.astype(int)):
    x, y = col - 4, row - 4
    for _ in range(turns[tuple(label)]):
      x, y = y, -x
    expected = np.zeros((size, size), np.float32)
    expected[y + 4, x + 4] = 1.0
    assert np.array_equal(image, expected)


def test_isotropic_scaling_samples_at_q_over_s():
  """Label `w`, `s = 2^(0.2 w)`: the content grows by `s`, output pixel `q` shows input point `q / s`."""
  out, labels = run(32, scale=ALWAYS)
  s = 2.0 ** (0.2 * labels[:, 0])
  assert s.min() < 0.9 and s.max() > 1.1
  np.testing.assert_allclose(out, sampled_at(diagonal(1 / s, 1 / s)), atol=TOL)


def test_scaling_by_two_maps_a_point_to_twice_its_offset_from_the_centre():
  """The draws do not depend on the strengths: with `scale_std = 1 / w` for the first example's draw `w`, its
  label is `w` and `s = 2`. The input point (2, -1) about the centre (5, 4), pixel (column 7, row 3), lands at
  (4, -2), pixel (column 9, row 2)."""
  _, labels = run(32, scale=ALWAYS)
  out, same = run(32, scale=ALWAYS, scale_std=1.0 / labels[0, 0])
  np.testing.assert_array_equal(same, labels)
  np.testing.assert_allclose(out[0, 2, 9], [7, 3], atol=TOL)  # (column, row) of the input point it shows


def test_a_fractional_rotation_samples_at_r_theta_q():
  """Labels `(cos theta - 1, sin theta)`, theta uniform in (-pi, pi): output pixel `q` shows input point
  `R(theta) q`."""
  out, labels = run(32, rotate_frac=ALWAYS)
  theta = np.arctan2(labels[:, 1], labels[:, 0] + 1)
  assert theta.min() < -1 and theta.max() > 1
  np.testing.assert_allclose(out, sampled_at(rotation(theta)), atol=TOL)


def test_a_fractional_translation_moves_the_content_by_the_labels_times_an_eighth_of_the_image():
  out, labels = run(32, translate_frac=ALWAYS)
  t = labels * [W * 0.125, H * 0.125]
  assert np.abs(t).max() > 1 and not np.allclose(t, np.round(t))
  np.testing.assert_allclose(out, sampled_at(translation(-t[:, 0], -t[:, 1])), atol=TOL)


def matches_one_of(out, candidates):
  """Per example: does `out` equal one of the candidate images?"""
  return np.any([np.abs(out - c).max(axis=(1, 2, 3)) < TOL for c in candidates], axis=0)


def test_an_anisotropic_stretch_is_one_of_the_two_its_labels_stand_for():
  out, labels = run(32, aniso=ALWAYS)
  assert np.abs(labels[:, 1]).max() > 0.1 and (labels[:, 1] == 0).any()  # rotated frames half of the time
  assert matches_one_of(out, [sampled_at(g) for g in stretch_candidates(labels)]).all()


def test_an_anisotropic_stretch_in_the_image_frame_widens_by_s_and_flattens_by_1_over_s():
  """Without the rotated frame (`r = 0`) the labels `(w, 0)` say which: `s = 2^(0.2 w)`, and output pixel
  `q = (x, y)` shows the input point `(x / s, s y)`."""
  out, labels = run(32, aniso=ALWAYS, aniso_rotate_prob=0.0)
  s = 2.0 ** (0.2 * labels[:, 0])
  assert not labels[:, 1].any() and s.min() < 0.9 and s.max() > 1.1
  np.testing.assert_allclose(out, sampled_at(diagonal(1 / s, s)), atol=TOL)


def test_the_labels_match_the_transforms_composed_for_random_draws():
  """EDM's CIFAR-10 pipeline with every transform on: the flips, then `G_inv = S^-1 R(theta) A^-1 T^-1`,
  all read back from the nine labels."""
  n = 32
  out, labels = run(n, **aug.CIFAR_MULTIPLIERS)
  xflip, yflip, scale, cos, sin, aniso, translate = np.split(labels, [1, 2, 3, 4, 5, 7], axis=1)
  s = 2.0 ** (0.2 * scale[:, 0])
  g_scale_rotate = diagonal(1 / s, 1 / s) @ rotation(np.arctan2(sin[:, 0], cos[:, 0] + 1))
  g_translate = translation(-translate[:, 0] * W * 0.125, -translate[:, 1] * H * 0.125)
  candidates = []
  for stretch in stretch_candidates(aniso):
    sampled = sampled_at(g_scale_rotate @ stretch @ g_translate)
    # The flips came first: the geometric transform samples the flipped coordinates, an affine map of them.
    sampled[..., 0] = np.where(xflip[:, :, None] == 1, W - 1 - sampled[..., 0], sampled[..., 0])
    sampled[..., 1] = np.where(yflip[:, :, None] == 1, H - 1 - sampled[..., 1], sampled[..., 1])
    candidates.append(sampled)
  assert (xflip == 1).any() and (yflip == 1).any() and (scale != 0).all() and (translate != 0).all()
  assert matches_one_of(out, candidates).all()


def test_each_transform_hits_its_share_of_the_examples():
  """EDM's CIFAR-10 setting, p = 0.12: a transform hits an example with probability min(1, multiplier p)
  (a nonzero label: a continuous draw is 0 with probability 0), a flip then mirrors half of those. The shares
  lie within 5 binomial standard deviations (a false alarm has probability below 1e-5 per share)."""
  n, p = MANY[0], 0.12
  labels = np.asarray(cifar_augment(jax.random.key(7), jnp.zeros(MANY), jnp.float32(p))[1])
  expected = {"xflip": (0, 0.5), "yflip": (1, p / 2), "scale": (2, p), "rotate_frac": (4, p), "aniso": (5, p)}
  expected["translate_frac"] = (7, p)
  for name, (column, share) in expected.items():
    measured = np.mean(labels[:, column] != 0)
    assert abs(measured - share) < 5 * np.sqrt(share * (1 - share) / n), (name, measured, share)
  # A transform's label slots are zero together (translate_frac), or the second only if the first (aniso's, zero
  # in the unrotated frame).
  assert np.array_equal(labels[:, 7] != 0, labels[:, 8] != 0)
  assert np.all((labels[:, 6] != 0) <= (labels[:, 5] != 0))


NETWORKS = {  # name: options of a tiny network for (8, 8, 1) images
  "ncsn_small": dict(nf=8, ch_mult=(1, 2), num_res_blocks=1),
  "ncsnpp": dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=()),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_a_network_with_augment_dim_is_the_old_one_plus_a_bias_free_map_of_the_labels(name):
  flat = lambda **o: flax.traverse_util.flatten_dict(
    models.utils.param_shapes(models.get_model(name, **NETWORKS[name], **o), (8, 8, 1))
  )
  old, augmented = flat(), flat(augment_dim=aug.LABEL_DIM)
  assert flat(augment_dim=0) == old  # augment_dim=0: the tree of checkpoints written before it existed
  added = {k: v for k, v in augmented.items() if k not in old}
  assert [k[-2:] for k in added] == [("augment_embedding", "kernel")] and next(iter(added.values())).shape[0] == 9
  assert {k: augmented[k] for k in old} == old


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.slow
def test_the_score_of_an_augmented_network_runs_with_and_without_labels(name):
  """Without labels it is the score of the unaugmented data (labels 0); other labels change it."""
  model = models.get_model(name, **NETWORKS[name], augment_dim=aug.LABEL_DIM)
  # Random weights everywhere: at initialisation the output layer is zero, and every input with it.
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map(
    lambda v: jnp.asarray(0.3 * rng.standard_normal(v.shape), jnp.float32), models.utils.param_shapes(model, (8, 8, 1))
  )
  score_fn = models.get_score_fn(model, params, sde_lib.VESDE(0.01, 5.0, 10))
  x, t = jnp.asarray(rng.standard_normal((4, 8, 8, 1)), jnp.float32), jnp.full((8,), 0.5)
  labels = jnp.asarray(rng.standard_normal((4, aug.LABEL_DIM)), jnp.float32)

  def scores(x, labels):  # without labels; with zero labels and with the drawn ones, as one batch
    return score_fn(x, t[:4]), score_fn(
      jnp.concatenate([x, x]), t, augment_labels=jnp.concatenate([0 * labels, labels])
    )

  plain, both = jax.jit(scores).lower(x, labels).compile(FAST_COMPILE)(x, labels)
  plain, (zero, labelled) = np.asarray(plain), np.split(np.asarray(both), 2)
  assert np.isfinite(labelled).all()
  np.testing.assert_allclose(plain, zero, rtol=1e-5, atol=1e-5)
  assert np.abs(labelled - plain).max() > 1e-3 * np.abs(plain).max()


def test_augmentation_labels_for_a_network_without_that_input_are_refused():
  model = models.get_model("ncsn_small", **NETWORKS["ncsn_small"])
  score_fn = models.get_score_fn(model, None, sde_lib.VESDE(0.01, 5.0, 10))
  with pytest.raises(ValueError, match="model.augment_dim=0"):
    score_fn(jnp.zeros((2, 8, 8, 1)), 0.5, augment_labels=jnp.zeros((2, 9)))


@pytest.mark.slow
def test_the_train_step_with_augmentation_trains_the_map_of_the_labels():
  """Three steps through `Experiment.batch_loss`: finite, and the labels' map moved. Its gradient passes two
  zero-initialised layers (a residual block's last convolution, then the output's), so it is nonzero from the
  third step on, and only if labels reach the network."""
  fields = {"data.augment_p": 0.5, "model.augment_dim": aug.LABEL_DIM, "optim.warmup": 0, "model.ch_mult": (1,)}
  config = tiny_digits(**fields)  # one resolution: less to compile
  exp = Experiment(config, devices=jax.devices()[:1])
  state = exp.init_state()
  before = np.asarray(state.params["NoiseEmbedding_0"]["augment_embedding"]["kernel"])
  batch = exp.dataset.train[:16]
  step = make_train_step(exp)
  compiled = step.lower(state, batch[None]).compile(FAST_COMPILE)
  for _ in range(3):
    state, loss = compiled(state, batch[None])
  assert int(state.step) == 3 and np.isfinite(np.asarray(loss)).all()
  assert not np.allclose(np.asarray(state.params["NoiseEmbedding_0"]["augment_embedding"]["kernel"]), before)


@pytest.mark.parametrize(
  "config, message",
  [
    (tiny_digits(**{"data.augment_p": 1.5}), "data.augment_p must be a finite number in [0, 1], got 1.5"),
    (
      tiny_digits(**{"data.augment_p": 0.12}),
      "data.augment_p=0.12 feeds the network 9 augmentation labels: set model.augment_dim=9 (got 0)",
    ),
    (tiny_digits(**{"model.augment_dim": -1}), "model.augment_dim must be a non-negative integer, got -1"),
    (
      tiny_toy(**{"data.augment_p": 0.12}),
      "data.augment_p=0.12 augments images, but the examples are vectors of shape (2,); set it to 0",
    ),
    (
      tiny_digits(**{"data.augment_p": 0.12, "model.augment_dim": 9, "data.random_flip": True}),
      "data.random_flip=True flips them unlabelled, which makes that label meaningless: set data.random_flip=False",
    ),
    (
      tiny_toy(**{"model.augment_dim": 9}),
      "model.name='mlp' takes no augmentation labels (model.augment_dim=9); networks that do: ",
    ),
  ],
)
def test_bad_augmentation_fields_are_one_line_errors(config, message):
  with pytest.raises(UserError) as error:
    validate_config(config, 1)
  assert message in str(error.value) and "\n" not in str(error.value)
