"""Inpainting and colorization as a user runs them (`--mode=sample` with `sampling.inpaint_mask` or
`sampling.colorize`): the masks name the region to fill, held-out images are completed keeping what is known
exact, and the arrays and the picture are written; control fields out of their domain are one line."""

import os

import jax
import numpy as np
import pytest
from PIL import Image

from scorejax.run.errors import UserError
from scorejax.run.inpaint import inpainting_masks
from scorejax.run.sample import sample
from scorejax.run.train import train
from scorejax.run.validate import validate_config

from helpers import override, run_main, tiny_digits

# One device: no collectives, whose rendezvous XLA:CPU aborts after 40 s when the two cores are busy elsewhere.
QUIET = dict(print_fn=lambda *a: None, devices=jax.devices()[:1])


def test_masks_name_the_region_to_fill(tmp_path):
  known = lambda spec, shape=(8, 8, 3): inpainting_masks(spec, 2, shape, np.random.default_rng(0))
  center = known("center")
  assert center.shape == (2, 8, 8, 3) and center.sum() == 2 * 3 * (64 - 16)
  assert np.all(center[:, 2:6, 2:6] == 0) and center[:, :2].min() == 1 and center[:, 6:].min() == 1
  assert np.all(known("left")[:, :, :4] == 0) and np.all(known("left")[:, :, 4:] == 1)
  assert np.all(known("bottom")[:, 4:] == 0) and np.all(known("bottom")[:, :4] == 1)
  masks = inpainting_masks("random:0.25", 400, (8, 8, 3), np.random.default_rng(0))
  assert np.all(masks == masks[..., :1])  # a pixel is known or not in every channel
  np.testing.assert_allclose(1 - masks.mean(), 0.25, atol=0.01)  # 25600 pixels: standard error 0.003
  assert known("random:0.5", (6,)).shape == (2, 6)
  region = np.zeros((32, 32), np.uint8)
  region[:, 16:] = 255  # white: fill; resized from 32x32 to 8x8
  Image.fromarray(region).save(tmp_path / "right.png")
  np.testing.assert_array_equal(known(str(tmp_path / "right.png")), known("right"))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("digits"))
  # No corrector: the Langevin step of a network trained for 4 steps (a score near 0) is huge.
  config = tiny_digits(**{"sampling.method": "pc", "sampling.corrector": "none"})
  config = override(config, **{"sampling.num_samples": 8, "sampling.batch_size": 8})
  train(config, workdir, **QUIET)
  return config, workdir


@pytest.mark.slow
def test_inpainting_from_the_command_line_keeps_the_known_pixels_and_draws_the_rest(digits_run):
  _, workdir = digits_run
  result = run_main("--mode=sample", f"--workdir={workdir}", "--config.sampling.inpaint_mask=center")
  assert result.returncode == 0, result.stderr
  written = np.load(os.path.join(workdir, "samples", "inpaint_4.npz"))
  images, masks, samples = written["images"], written["masks"], written["samples"]
  assert images.shape == masks.shape == samples.shape == (8, 8, 8, 1)
  np.testing.assert_array_equal(samples[masks > 0], images[masks > 0])
  assert np.abs(samples[masks == 0] - images[masks == 0]).max() > 0.1  # the centre is drawn, not copied
  with Image.open(os.path.join(workdir, "samples", "inpaint_4.png")) as picture:
    assert picture.size[0] > picture.size[1] / 2  # original, input, mask and result side by side


@pytest.mark.slow
def test_colorization_keeps_the_grayscale_of_colour_images(tmp_path):
  folder = tmp_path / "images"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(24):
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).save(folder / f"{i}.png")
  fields = {"data.dataset": "folder", "data.root": str(folder), "data.shape": (8, 8, 3), "data.centered": True}
  config = tiny_digits(**fields, **{"sampling.method": "pc", "sampling.corrector": "none"})
  config = override(config, **{"sampling.num_samples": 4, "sampling.batch_size": 4})
  config.data.num_test = 4
  train(config, str(tmp_path / "run"), **QUIET)
  samples = sample(override(config, **{"sampling.colorize": True}), str(tmp_path / "run"), **QUIET)
  written = np.load(tmp_path / "run" / "samples" / "colorize_4.npz")
  assert np.abs(samples).max() < 100  # an untrained score: float32 keeps the gray to ~1e-7 of the colours
  np.testing.assert_allclose(samples.mean(-1), written["images"].mean(-1), atol=1e-5)
  np.testing.assert_allclose(written["gray"], np.broadcast_to(written["images"].mean(-1, keepdims=True), (4, 8, 8, 3)))
  assert os.path.isfile(tmp_path / "run" / "samples" / "colorize_4.png")


@pytest.mark.parametrize(
  "fields, expected",
  [
    (
      {"sampling.inpaint_mask": "center", "sampling.colorize": True},
      "sampling.inpaint_mask and sampling.colorize are two tasks: set one of them",
    ),
    ({"sampling.colorize": True}, "sampling.colorize needs colour images (H, W, 3), got examples of shape (8, 8, 1)"),
    ({"sampling.inpaint_mask": "middle"}, "sampling.inpaint_mask='middle' is none of center, left, right, top,"),
    ({"sampling.inpaint_mask": "random:1.5"}, "sampling.inpaint_mask='random:1.5': random:<fraction> needs a fraction"),
    (
      {"sampling.inpaint_mask": "center", "sampling.method": "ald"},
      "sampling.inpaint_mask needs a sampler that takes a constraint after each step: sampling.method='pc'",
    ),
    ({"sampling.class_label": 3}, "sampling.class_label=3 needs a class-conditional model"),
    ({"model.name": "classifier_conv"}, "model.name='classifier_conv' is a classifier: set model.num_classes"),
  ],
)
def test_control_fields_out_of_their_domain_are_one_line(fields, expected):
  with pytest.raises(UserError) as error:
    validate_config(tiny_digits(**{"sampling.method": "pc", **fields}), 1)
  assert str(error.value).startswith(expected), str(error.value)
