"""Checkpoints of score_sde import: its DDPM++, NCSN++ and DDPM, written in its format at a reduced width
(tests/score_sde_format.py), give the score that score_sde's own conditioning and input transform give on
the original tree; the parameters, their EMA, Adam's moments and the step land where they belong; a file
that is not one, or not of this network, is refused with one line and nothing written.

The reference score is score_sde's `models/utils.get_score_fn` re-implemented from its formulas: the label
(VP cont. `999 t`; VE cont. `sigma(t) = sigma_min (sigma_max / sigma_min)^t`; DDPM's level index `i`), `2x - 1`
inside the network for uncentred data (NCSN++ on VE), and the output as the score (`h / sigma` for NCSN++,
`-eps / std` for the VP networks). For NCSN++ and DDPM++ it applies our network module (with
`conditioning='score_sde'`: it embeds the label as score_sde's networks do) to score_sde's tree renamed by this
file's own table. For DDPM it applies score_sde's own DDPM module, its code copied verbatim
(tests/score_sde_ddpm.py), to score_sde's tree as it is: at 32 channels, where its GroupNorm (32 groups) and
NCSN++'s rule (8 groups) differ.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import score_sde_ddpm
import score_sde_format as fmt

from scorejax import models, sde_lib
from scorejax.configs import cifar
from scorejax.models import score_sde_params
from scorejax.run import importer
from scorejax.run.builders import build_model, build_sde, data_shape
from scorejax.run.errors import UserError
from scorejax.run.optim import build_optimizer
from scorejax.run.saved_config import check_config_matches, config_dict

from helpers import override

STEP = 123_456  # beyond the warm-up: Adam's learning rate is `optim.lr`
TINY = {"model.nf": 8, "model.ch_mult": (1, 2), "model.attn_resolutions": (4,), "data.image_size": 8}

# score_sde's module names -> ours (our own reading of the two codes, independent of the importer's table).
OUR_CLASS = {
  "ResnetBlockBigGANpp": "ResnetBlockBigGAN",
  "ResnetBlockDDPMpp": "ResnetBlockDDPM",
  "AttnBlockpp": "AttnBlock",
}
# score_sde's DDPM at 8x8, ch_mult (1, 2), 2 blocks, attention at 4x4: AttnBlock_0, _1 on the way down, _2 in the
# middle, _3 once on the way up. Ours attends after each of the 3 blocks up there: _3, _4, _5. Theirs _3 is our _5.
DDPM_ATTENTION = {
  "AttnBlock_0": "AttnBlock_0",
  "AttnBlock_1": "AttnBlock_1",
  "AttnBlock_2": "AttnBlock_2",
  "AttnBlock_3": "AttnBlock_5",
}
DDPM_IDENTITY = ("AttnBlock_3", "AttnBlock_4")  # ours without a counterpart: x + 0


def ours(tree):
  """score_sde's tree with our names (top-level modules only: submodule names are the same)."""
  out = {}
  for name, sub in tree.items():
    cls, _, index = name.rpartition("_")
    name = DDPM_ATTENTION.get(name, f"{OUR_CLASS[cls]}_{index}" if cls in OUR_CLASS else name)
    out[name] = sub
  return out


def vp_std(t, beta_min, beta_max):
  """score_sde's VPSDE std `sqrt(1 - exp(2 log m(t)))`, written with expm1 (the same number, without float32's
  cancellation at small t)."""
  log_mean = -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min
  return jnp.sqrt(-jnp.expm1(2.0 * log_mean))


def ddpmpp_reference(net, theirs, config, x, t):
  label = 999.0 * t  # continuous VP
  eps = net.apply({"params": ours(theirs)}, x, label)  # data centred: no transform
  return -eps / vp_std(t, config.model.beta_min, config.model.beta_max)[:, None, None, None]


def ncsnpp_reference(net, theirs, config, x, t):
  m = config.model
  sigma = m.sigma_min * (m.sigma_max / m.sigma_min) ** t  # continuous VE: the label is sigma(t)
  h = net.apply({"params": ours(theirs)}, 2 * x - 1.0, sigma)  # uncentred data: score_sde's NCSN++ sees 2x - 1
  return h / sigma[:, None, None, None]  # scale_by_sigma


def ddpm_reference(net, theirs, config, x, level):
  """score_sde's DDPM module (its code, tests/score_sde_ddpm.py) on its own tree; `net` (ours) is not used."""
  del net
  m = config.model
  theirs_net = score_sde_ddpm.DDPM(
    score_sde_ddpm.ddpm_config(m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions, config.data.centered)
  )
  n = m.num_scales
  betas = np.linspace(m.beta_min / n, m.beta_max / n, n)
  std = np.sqrt(1.0 - np.cumprod(1.0 - betas))[level]  # sqrt_1m_alphas_cumprod of the level (here in float64)
  labels = jnp.asarray(level, jnp.float32)  # discrete VP: the level's index, `t (N - 1)` at score_sde's t
  eps = theirs_net.apply({"params": theirs}, x, labels, train=False)
  return -eps / jnp.asarray(std, jnp.float32)[:, None, None, None]


# variant, extra fields, score_sde's tree, reference, times (DDPM: levels of its chain)
CASES = {
  "ddpmpp": (
    "vp_ddpmpp",
    {"model.num_res_blocks": 1},
    lambda: fmt.ncsnpp_shapes(8, (1, 2), 1, (4,), 8, 3, fir_pyramid=False, fourier=False),
    ddpmpp_reference,
    np.array([1e-3, 0.1, 0.37, 0.7, 1.0]),
  ),
  "ncsnpp": (
    "ve_ncsnpp",
    {"model.num_res_blocks": 1},
    lambda: fmt.ncsnpp_shapes(8, (1, 2), 1, (4,), 8, 3, fir_pyramid=True, fourier=True),
    ncsnpp_reference,
    np.array([1e-5, 0.1, 0.37, 0.7, 1.0]),
  ),
  "ddpm": (  # 32 channels: score_sde's DDPM normalises with 32 groups and cannot be narrower
    "vp_ddpm",
    {"model.num_res_blocks": 2, "model.nf": 32},
    lambda: fmt.ddpm_shapes(32, (1, 2), 2, (4,), 8, 3),
    ddpm_reference,
    np.array([0, 1, 250, 998, 999]),
  ),
}


def case_config(name):
  variant, fields, *_ = CASES[name]
  return override(cifar.get_config(variant), **{**TINY, **fields})


@pytest.fixture(scope="module", params=sorted(CASES))
def imported(request, tmp_path_factory):
  """A score_sde checkpoint of the case's network, written, read back and converted."""
  name = request.param
  config = importer.score_sde_conventions(case_config(name))
  theirs = fmt.training_state(CASES[name][2](), np.random.default_rng(0), STEP)
  path = fmt.write_checkpoint(tmp_path_factory.mktemp(name) / "checkpoint_7", theirs)
  shape = data_shape(config)
  model = build_model(config, shape)
  state, moments = importer.convert(
    importer.read_checkpoint(str(path)), model, shape, build_optimizer(config), jax.random.key(0)
  )
  return name, config, model, theirs, state, moments


def relative_error(a, b):
  return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.slow
def test_the_imported_score_is_score_sde_s(imported):
  name, config, model, theirs, state, _ = imported
  _, _, _, reference, times = CASES[name]
  m, sde = config.model, build_sde(config)
  x = jax.random.normal(jax.random.key(1), (len(times),) + data_shape(config))
  if name == "ddpm":  # a discrete network at its levels: our time of level i against score_sde's label i
    levels, t = jnp.asarray(times), sde.discrete_times[times]
  else:
    levels, t = None, jnp.asarray(times, jnp.float32)
  score_fn = models.get_score_fn(
    model,
    state.ema_params,
    sde,
    m.prediction,
    m.scale_by_sigma,
    conditioning=m.conditioning,
    input_transform=m.input_transform,
    continuous=config.training.continuous,
  )
  got = jax.jit(score_fn)(x, t)
  label = np.asarray(t) if levels is None else np.asarray(levels)
  want = jax.jit(lambda p, x: reference(model, p, config, x, label))(theirs["params_ema"], x)
  error = relative_error(got, want)
  print(f"{name}: max |imported - score_sde| / max |score_sde| = {error:.2e}")
  assert error < 1e-5
  # The conventions matter: today's (log sigma, the data as it is) give another score.
  plain = models.get_score_fn(
    model.clone(conditioning="log_sigma"), state.ema_params, sde, m.prediction, m.scale_by_sigma
  )
  assert relative_error(jax.jit(plain)(x, t), want) > 1e-3


def leaves(tree):
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def assert_same_leaves(ours_tree, expected, skip=()):
  got, want = leaves({k: v for k, v in ours_tree.items() if k not in skip}), leaves(expected)
  assert got.keys() == want.keys()
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.slow
def test_parameters_ema_moments_and_step_land_in_their_places(imported):
  name, config, _, theirs, state, moments = imported
  skip = DDPM_IDENTITY if name == "ddpm" else ()
  assert_same_leaves(state.params, ours(theirs["optimizer"]["target"]), skip)
  assert_same_leaves(state.ema_params, ours(theirs["params_ema"]), skip)
  assert not np.array_equal(*(leaves(t)["['Conv_0']['kernel']"] for t in (state.params, state.ema_params)))
  adam, schedule = state.opt_state[1]
  adam_states = theirs["optimizer"]["state"]["param_states"]
  for ours_moment, theirs_moment in ((adam.mu, "grad_ema"), (adam.nu, "grad_sq_ema")):
    expected = fmt.zip_trees(theirs["optimizer"]["target"], adam_states, lambda _, s, k=theirs_moment: s[k])
    assert_same_leaves(ours_moment, ours(expected), skip)
  assert moments and int(state.step) == int(adam.count) == int(schedule.count) == STEP
  for block in skip:  # the identity: output projection zero, no moments yet
    assert not np.any(state.params[block]["NIN_3"]["W"]) and not np.any(state.ema_params[block]["NIN_3"]["W"])
    assert not any(np.any(leaf) for leaf in jax.tree_util.tree_leaves(adam.mu[block]))


@pytest.mark.slow
@pytest.mark.parametrize("imported", ["ddpmpp"], indirect=True)  # the optimizer is the same for every network
def test_fine_tuning_takes_the_adam_step_that_score_sde_would_take(imported):
  """flax.optim.Adam (score_sde's optimizer): m' = b1 m + (1 - b1) g, v' = b2 v + (1 - b2) g^2, and
  p' = p - lr m'/(1 - b1^(k+1)) / (sqrt(v'/(1 - b2^(k+1))) + eps) at its step count k; clipping is idle here."""
  _, config, _, _, state, _ = imported
  o = config.optim
  grads = jax.tree_util.tree_map(lambda p: 1e-4 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), state.params)
  assert optax_norm(grads) < o.grad_clip
  updates, _ = jax.jit(build_optimizer(config).update)(grads, state.opt_state, state.params)
  k, b2 = STEP, 0.999
  g, update, mu, nu = (leaves(t) for t in (grads, updates, state.opt_state[1][0].mu, state.opt_state[1][0].nu))
  for key in g:
    m = o.beta1 * mu[key] + (1 - o.beta1) * g[key]
    v = b2 * nu[key] + (1 - b2) * g[key] ** 2
    expected = -o.lr * (m / (1 - o.beta1 ** (k + 1))) / (np.sqrt(v / (1 - b2 ** (k + 1))) + o.eps)
    np.testing.assert_allclose(update[key], expected, rtol=1e-5, atol=1e-12, err_msg=key)


def optax_norm(tree):
  return float(jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(tree))))


@pytest.mark.slow
def test_a_checkpoint_without_adam_moments_imports_for_inference():
  """Without `optimizer.state` the parameters come from `optimizer.target`, without `optimizer` from the EMA;
  Adam starts afresh (zero moments, count 0: bias correction and warm-up from the start); the step carries."""
  config = importer.score_sde_conventions(case_config("ddpmpp"))
  shape = data_shape(config)
  model = build_model(config, shape)
  theirs = fmt.training_state(CASES["ddpmpp"][2](), np.random.default_rng(2), STEP, moments=False)
  inference_only = {**theirs, "optimizer": None}
  for state_dict, params in ((theirs, theirs["optimizer"]["target"]), (inference_only, theirs["params_ema"])):
    state, moments = importer.convert(state_dict, model, shape, build_optimizer(config), jax.random.key(0))
    adam, schedule = state.opt_state[1]
    assert not moments and int(state.step) == STEP and int(adam.count) == int(schedule.count) == 0
    assert not any(np.any(leaf) for leaf in jax.tree_util.tree_leaves((adam.mu, adam.nu)))
    assert_same_leaves(state.params, ours(params))
    assert_same_leaves(state.ema_params, ours(theirs["params_ema"]))


# ----------------------------------------------------------------------------- the released checkpoints


def _ncsnpp(blocks, fourier):
  return lambda: fmt.ncsnpp_shapes(128, (1, 2, 2, 2), blocks, (16,), 32, 3, fir_pyramid=True, fourier=fourier)


def _ddpmpp(blocks):
  return lambda: fmt.ncsnpp_shapes(128, (1, 2, 2, 2), blocks, (16,), 32, 3, fir_pyramid=False, fourier=False)


def _ddpm():
  return fmt.ddpm_shapes(128, (1, 2, 2, 2), 2, (16,), 32, 3)


# From score_sde's configs/{ve,vp,subvp}/cifar10_*.py: SDE, continuous training, centred data, predictor,
# corrector, and its network's tree at the published width.
RD, EM, ANC = "reverse_diffusion", "euler_maruyama", "ancestral_sampling"
RELEASED = {
  "ve/cifar10_ncsnpp": ("vesde", False, False, RD, "langevin", _ncsnpp(4, fourier=False)),
  "ve/cifar10_ncsnpp_continuous": ("vesde", True, False, RD, "langevin", _ncsnpp(4, fourier=True)),
  "ve/cifar10_ncsnpp_deep_continuous": ("vesde", True, False, RD, "langevin", _ncsnpp(8, fourier=True)),
  "vp/cifar10_ddpm": ("vpsde", False, True, ANC, "none", _ddpm),
  "vp/cifar10_ddpm_continuous": ("vpsde", True, True, EM, "none", _ddpm),
  "vp/cifar10_ddpmpp": ("vpsde", False, True, ANC, "none", _ddpmpp(4)),
  "vp/cifar10_ddpmpp_continuous": ("vpsde", True, True, EM, "none", _ddpmpp(4)),
  "vp/cifar10_ddpmpp_deep_continuous": ("vpsde", True, True, EM, "none", _ddpmpp(8)),
  "subvp/cifar10_ddpm_continuous": ("subvpsde", True, True, EM, "none", _ddpm),
  "subvp/cifar10_ddpmpp_continuous": ("subvpsde", True, True, EM, "none", _ddpmpp(4)),
  "subvp/cifar10_ddpmpp_deep_continuous": ("subvpsde", True, True, EM, "none", _ddpmpp(8)),
}


def _zeros(shapes):
  """Leaves of the shapes that take no memory (a broadcast zero): the map looks at names and shapes only."""
  return {k: _zeros(v) if isinstance(v, dict) else np.broadcast_to(np.float32(0), v) for k, v in shapes.items()}


@pytest.mark.slow
def test_every_released_cifar10_checkpoint_maps_onto_its_variant_at_the_published_width():
  """configs/cifar.py's SCORE_SDE_CHECKPOINTS: each variant with its overrides has score_sde's SDE, training,
  data centring and sampler, and score_sde's parameter tree lands on its network leaf for leaf."""
  assert set(cifar.SCORE_SDE_CHECKPOINTS) == set(RELEASED)
  for checkpoint, (variant, fields) in cifar.SCORE_SDE_CHECKPOINTS.items():
    sde, continuous, centered, predictor, corrector, shapes = RELEASED[checkpoint]
    config = importer.score_sde_conventions(override(cifar.get_config(variant), **fields))
    t, s = config.training, config.sampling
    settings = (t.sde, t.continuous, config.data.centered, s.predictor, s.corrector)
    assert settings == (sde, continuous, centered, predictor, corrector), checkpoint
    assert config.model.input_transform == ("none" if centered else "2x-1")
    shape = data_shape(config)
    model = build_model(config, shape)
    like = models.utils.param_shapes(model, shape)
    rename, extra = score_sde_params.leaf_map(model, shape)
    mapped = score_sde_params.map_tree(_zeros(shapes()), like, rename, extra, lambda name, like_module: like_module)
    assert jax.tree_util.tree_structure(mapped) == jax.tree_util.tree_structure(like), checkpoint
    assert len(extra) == (2 if config.model.name == "ddpm" else 0)


# ----------------------------------------------------------------------------- what is refused


@pytest.fixture(scope="module")
def ddpmpp_file(tmp_path_factory):
  theirs = fmt.training_state(CASES["ddpmpp"][2](), np.random.default_rng(1), STEP)
  return fmt.write_checkpoint(tmp_path_factory.mktemp("ddpmpp_file") / "checkpoint_3", theirs)


def refusal(config, tmp_path):
  """The one-line UserError of an import into `tmp_path/run`, which must not have been created."""
  workdir = tmp_path / "run"
  with pytest.raises(UserError) as error:
    importer.import_checkpoint(config, str(workdir), devices=jax.devices()[:1], print_fn=lambda *a: None)
  assert not workdir.exists()
  message = str(error.value)
  assert "\n" not in message
  return message


def test_a_truncated_file_is_refused(ddpmpp_file, tmp_path):
  data = ddpmpp_file.read_bytes()
  (tmp_path / "half").write_bytes(data[: len(data) // 2])
  config = override(case_config("ddpmpp"), import_from=str(tmp_path / "half"))
  assert "is not a score_sde checkpoint" in refusal(config, tmp_path)


def test_a_corrupt_file_is_refused(tmp_path):
  (tmp_path / "noise").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
  config = override(case_config("ddpmpp"), import_from=str(tmp_path / "noise"))
  assert "is not a score_sde checkpoint" in refusal(config, tmp_path)


def test_a_missing_file_and_a_directory_are_refused(ddpmpp_file, tmp_path):
  config = override(case_config("ddpmpp"), import_from=str(tmp_path / "nowhere"))
  assert "cannot read" in refusal(config, tmp_path) and "No such file" in refusal(config, tmp_path)
  config = override(case_config("ddpmpp"), import_from=str(ddpmpp_file.parent))
  assert "is a directory (it holds checkpoint_3)" in refusal(config, tmp_path)


def test_a_checkpoint_of_another_architecture_is_refused_naming_its_leaves(ddpmpp_file, tmp_path):
  config = override(case_config("ncsnpp"), import_from=str(ddpmpp_file))  # DDPM++ into NCSN++
  message = refusal(config, tmp_path)
  assert "does not fit model.name='ncsnpp'" in message
  assert "missing from the file Downsample_0/Conv2d_0/bias" in message and "GaussianFourierProjection_0/W" in message


def test_a_checkpoint_of_another_width_is_refused_naming_the_shapes(ddpmpp_file, tmp_path):
  config = override(case_config("ddpmpp"), **{"model.nf": 16, "import_from": str(ddpmpp_file)})
  message = refusal(config, tmp_path)
  assert "mis-shaped AttnBlockpp_0/GroupNorm_0/bias (16,) float32 (expected (32,) float)" in message


def test_an_import_without_a_file_or_into_another_network_says_what_to_do(ddpmpp_file, tmp_path):
  assert "needs --config.import_from=PATH" in refusal(case_config("ddpmpp"), tmp_path)
  config = override(cifar.get_config("ncsnv2"), import_from=str(ddpmpp_file))
  assert "import into model.name ncsnpp or ddpm, not 'ncsnv2'" in refusal(config, tmp_path)


# ----------------------------------------------------------------------------- conventions


def test_score_sde_labels_of_each_sde():
  """VE cont. sigma(t); VE discrete SMLD's decreasing index; VP cont. 999 t; VP discrete DDPM's level index at
  each level's time; sub-VP 999 t whatever the training."""
  t = jnp.asarray([1e-5, 0.3, 1.0])
  ve = sde_lib.VESDE(0.01, 50.0, 1000)
  np.testing.assert_allclose(ve.score_sde_label(t, True), 0.01 * 5000.0**t, rtol=1e-6)
  np.testing.assert_array_equal(ve.score_sde_label(ve.discrete_times, False), np.arange(999, -1, -1))
  vp = sde_lib.VPSDE(0.1, 20.0, 1000)
  np.testing.assert_allclose(vp.score_sde_label(t, True), 999 * t, rtol=1e-6)
  np.testing.assert_array_equal(vp.score_sde_label(vp.discrete_times, False), np.arange(1000))
  np.testing.assert_allclose(sde_lib.SubVPSDE(0.1, 20.0, 1000).score_sde_label(t, False), 999 * t, rtol=1e-6)


def test_old_checkpoints_count_as_conditioned_on_log_sigma(tmp_path):
  """A config saved before the fields existed lacks them: it matches today's default and conflicts with the rest."""
  config = cifar.get_config("vp_ddpmpp")
  saved = config_dict(config)
  del saved["model"]["conditioning"], saved["model"]["input_transform"]
  check_config_matches(saved, config, str(tmp_path), 1)
  with pytest.raises(UserError, match=r"model.conditioning='score_sde' \(checkpoint: 'log_sigma'\)"):
    check_config_matches(saved, importer.score_sde_conventions(config), str(tmp_path), 1)


def test_the_conventions_need_a_network_that_takes_them():
  with pytest.raises(ValueError, match="needs a network that embeds that input"):
    models.get_score_fn(models.get_model("ncsn"), None, None, conditioning="score_sde")
  with pytest.raises(ValueError, match="unknown model.input_transform"):
    models.get_score_fn(None, None, None, input_transform="x/2")
