"""The FID Inception in Flax computes what pytorch-fid computes, from weight files read without PyTorch.

Ground truth comes from real PyTorch, recorded by tests/data/make_inception_reference.py (run by hand; CI has no
torch): files written by `torch.save` in both layouts, and pytorch-fid's features and logits for `random_state_dict(0)`
on three images (enlarged, grey, shrunk). The weight files (`weight_files`) are tests/conftest.py's."""

import hashlib
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.evaluation import inception, torch_file

DATA = os.path.join(os.path.dirname(__file__), "data")


def _load_script():
  spec = importlib.util.spec_from_file_location(
    "make_inception_reference", os.path.join(DATA, "make_inception_reference.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)  # torch is imported only inside its main()
  return module


@pytest.fixture(scope="module")
def reference():
  with np.load(os.path.join(DATA, "inception_reference.npz")) as f:
    return dict(f)


@pytest.fixture(scope="module")
def images(reference):
  images = _load_script().reference_images()
  for name, image in images.items():  # the same pixels that pytorch-fid saw
    assert image.astype(np.float64).sum() == reference[f"{name}_pixel_sum"]
  return images


@pytest.fixture(scope="module")
def network(weight_files):
  return inception.load_inception(weight_files["legacy"])


def _assert_matches(ours, theirs):
  """Float32 through ~50 layers, in another summation order than PyTorch's, leaves ~1e-6 of the largest entry (seen:
  at most 3e-7 on pool3, 1.2e-6 on logits); 1e-5 leaves room for other CPUs' vectorization. The mistakes this
  guards against are ~1e4 times larger: counting padding in the average pools, or antialiasing when shrinking (as
  `jax.image.resize` does by default), each moves pool3 and the logits by 4% to 8% of their largest entry."""
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())


# --- Features and logits against pytorch-fid. ---


@pytest.mark.slow
def test_features_and_logits_equal_pytorch_fids(weight_files, images, reference):
  """All three images (enlarged from 32x32, grey 8x8, shrunk from 320x320) in one batch of the network."""
  variables = inception.variables_from_state_dict(torch_file.load_state_dict(weight_files["legacy"]))
  batch = jnp.concatenate([inception.preprocess(image[None]) for image in images.values()])
  forward = jax.jit(lambda v, x: inception.FIDInceptionV3().apply(v, x))  # weights as arguments: compiled once
  features, logits = forward(variables, batch)
  assert features.shape == (3, 2048) and logits.shape == (3, 1008)
  for i, name in enumerate(images):
    _assert_matches(np.asarray(features[i]), reference[f"{name}_pool3"])
    _assert_matches(np.asarray(logits[i]), reference[f"{name}_logits"])


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_load_inception_reads_either_layout_into_pytorch_fids_network(weight_files, images, reference, layout):
  """The whole path: file -> FeatureNetwork -> `extract` on an image larger than 299 (both layouts compile the same
  program, so the second comes from the compilation cache)."""
  net = inception.load_inception(weight_files[layout])
  features, logits = net.extract(images["rgb_320"][None], devices=jax.devices()[:1])
  assert features.shape == (1, 2048) and logits.shape == (1, 1008)
  _assert_matches(features[0], reference["rgb_320_pool3"])
  _assert_matches(logits[0], reference["rgb_320_logits"])


def test_the_network_names_itself_by_its_weights(network, weight_files):
  with open(weight_files["legacy"], "rb") as f:
    assert network.weights_hash == hashlib.sha256(f.read()).hexdigest()
  assert (network.name, network.num_features, network.num_classes) == ("inception_v3_fid", 2048, 1008)


def test_a_missing_weight_file_says_where_to_get_it(tmp_path):
  with pytest.raises(ValueError) as error:
    inception.load_inception(tmp_path / inception.WEIGHTS_FILE)
  message = str(error.value)
  assert "\n" not in message and inception.WEIGHTS_URL in message and "--config.eval.inception_weights=" in message


# --- The state dict onto the Flax tree. ---


def test_every_tensor_of_pytorch_fid_lands_in_the_flax_tree(reference):
  shapes = inception.reference_state_dict_shapes()
  assert [k for k, _ in shapes] == list(reference["torch_state_dict_keys"])
  assert [str(s) for _, s in shapes] == list(reference["torch_state_dict_shapes"])
  # parameters (conv, BN scale and shift, fc) and BN running statistics: everything but num_batches_tracked
  total = int(reference["torch_num_parameters"] + reference["torch_num_buffers"])
  assert sum(int(np.prod(s)) for _, s in shapes) == total == 23_885_392

  variables = inception.variables_from_state_dict(inception.random_state_dict(0))
  init = jax.eval_shape(inception.FIDInceptionV3().init, jax.random.key(0), jnp.zeros((1, 299, 299, 3)))
  leaves = lambda tree: {jax.tree_util.keystr(p): tuple(v.shape) for p, v in jax.tree_util.tree_leaves_with_path(tree)}
  assert leaves(variables) == leaves(init)  # nothing missing or left over on either side
  assert sum(int(np.prod(s)) for s in leaves(variables).values()) == total


def test_layouts_become_flax_layouts():
  state_dict = inception.random_state_dict(0)
  variables = inception.variables_from_state_dict(state_dict)
  conv = state_dict["Mixed_6b.branch7x7_2.conv.weight"]  # OIHW, a 1x7 kernel
  kernel = variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"]  # HWIO
  assert kernel.shape == (1, 7, 128, 128) and kernel[0, 5, 3, 2] == conv[2, 3, 0, 5]
  assert np.array_equal(variables["params"]["fc"]["kernel"], state_dict["fc.weight"].T)
  bn = variables["batch_stats"]["Conv2d_1a_3x3"]["bn"]
  assert np.array_equal(bn["var"], state_dict["Conv2d_1a_3x3.bn.running_var"])


def _one_line_error(state_dict):
  with pytest.raises(ValueError) as error:
    inception.variables_from_state_dict(state_dict)
  assert "\n" not in str(error.value)
  return str(error.value)


def test_unknown_missing_and_misshaped_tensors_are_refused_by_name():
  state_dict = inception.random_state_dict(0)
  assert "unknown AuxLogits.fc.weight" in _one_line_error({**state_dict, "AuxLogits.fc.weight": np.zeros(1)})
  missing = dict(state_dict)
  del missing["Mixed_7c.branch_pool.bn.running_var"]
  assert "missing Mixed_7c.branch_pool.bn.running_var" in _one_line_error(missing)
  assert "mis-shaped fc.bias (1000,) != (1008,)" in _one_line_error({**state_dict, "fc.bias": np.zeros(1000)})
  many = {k: v for k, v in state_dict.items() if not k.startswith("Mixed_6")}
  assert "(+" in _one_line_error(many)  # the first few named, the rest counted


def test_num_batches_tracked_is_ignored_present_or_not():
  state_dict = inception.random_state_dict(0)
  with_counters = {**state_dict, "Conv2d_1a_3x3.bn.num_batches_tracked": np.array(0, np.int64)}
  a, b = inception.variables_from_state_dict(state_dict), inception.variables_from_state_dict(with_counters)
  assert jax.tree.all(jax.tree.map(np.array_equal, a, b))


def test_random_state_dict_is_a_function_of_its_seed():
  a, b, c = inception.random_state_dict(0), inception.random_state_dict(0), inception.random_state_dict(1)
  assert all(np.array_equal(a[k], b[k]) for k in a) and not np.array_equal(a["fc.weight"], c["fc.weight"])


# --- The input: torch's bilinear resize, grey to RGB, [0, 1] -> [-1, 1]. ---


def test_preprocessing_maps_corners_centre_and_range_as_pytorch_fid():
  """2x2 -> 299x299: the first output pixel samples src = 0 (x[0, 0]), the last src = 298.5 * 2/299 - 1/2 > 1, clamped
  to x[1, 1]; the middle one, src = 149.5 * 2/299 - 1/2 = 1/2, averages all four. Then 2x - 1."""
  x = np.array([[0.1, 0.4], [0.7, 1.0]], np.float32)[None, :, :, None]
  out = np.asarray(inception.preprocess(np.repeat(x, 3, axis=-1)))
  assert out.shape == (1, 299, 299, 3)
  np.testing.assert_allclose(out[0, [0, -1, 149], [0, -1, 149], 0], 2 * np.array([0.1, 1.0, 0.55]) - 1, atol=1e-6)
  assert np.array_equal(np.asarray(inception.preprocess(np.zeros((1, 5, 7, 3)))), -np.ones((1, 299, 299, 3)))
  assert np.array_equal(np.asarray(inception.preprocess(np.ones((1, 300, 301, 3)))), np.ones((1, 299, 299, 3)))


def test_grey_images_are_repeated_to_rgb(images):
  grey = images["grey_8"][None]
  assert np.array_equal(inception.preprocess(grey), inception.preprocess(np.repeat(grey, 3, axis=-1)))
  with pytest.raises(ValueError, match="C in"):
    inception.preprocess(np.zeros((1, 8, 8, 2)))


# --- The weights converted to NumPy (torch files themselves: test_evaluation_torch_file.py). ---


def test_npz_files_read_as_state_dicts_and_convert_from_pth(tmp_path, weight_files):
  npz = tmp_path / "w.npz"
  assert inception.main(["inception", weight_files["legacy"], str(npz)]) == 0
  original, converted = torch_file.load_state_dict(weight_files["legacy"]), torch_file.load_state_dict(npz)
  assert list(original) == list(converted) and all(np.array_equal(original[k], converted[k]) for k in original)
  assert inception.main(["inception", str(npz), str(tmp_path / "again.npz")]) == 0  # .npz in, .npz out
  foreign = tmp_path / "foreign.pth"
  torch_file.save_state_dict(foreign, {"fc.weight": np.zeros((2, 2), np.float32)})
  assert inception.main(["inception", str(foreign), str(tmp_path / "never.npz")]) == 1
  assert not os.path.exists(tmp_path / "never.npz")
