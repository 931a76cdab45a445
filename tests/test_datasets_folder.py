"""A folder of images of mixed sizes and formats becomes a dataset of the configured shape."""

import os

import numpy as np
import pytest
from PIL import Image

from scorejax import datasets

COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (40, 80, 120)]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  folder = tmp_path_factory.mktemp("images")
  os.makedirs(folder / "sub")
  sizes = [(40, 30), (30, 50), (16, 16), (64, 20), (33, 33), (20, 64)]
  for i, (color, size) in enumerate(zip(COLORS, sizes)):
    image = Image.new("RGB", size, color)
    # A black border on the long side only: the center crop must remove it.
    w, h = size
    pixels = np.array(image)
    if w > h:
      pixels[:, : (w - h) // 2] = 0
    elif h > w:
      pixels[: (h - w) // 2] = 0
    path = folder / ("sub" if i % 2 else ".") / f"img{i}.{'png' if i % 3 else 'jpg'}"
    Image.fromarray(pixels).save(path, quality=100)
  (folder / "notes.txt").write_text("not an image")
  return str(folder)


def test_images_are_center_cropped_and_resized(root):
  ds = datasets.get_dataset("folder", root=root, shape=(8, 8, 3), num_test=1)
  assert ds.train.shape == (5, 8, 8, 3) and ds.test.shape == (1, 8, 8, 3)
  got = {tuple(np.round(img.mean(axis=(0, 1))).astype(int)) for img in np.concatenate([ds.train, ds.test])}
  for color in COLORS:  # uniform colours survive (JPEG within a few levels); no black border remains
    assert any(np.abs(np.subtract(g, color)).max() <= 6 for g in got), (color, got)


def test_grayscale_and_centered(root):
  ds = datasets.get_dataset("folder", root=root, shape=(4, 6, 1))
  assert ds.train.shape[1:] == (4, 6, 1) and len(ds.train) + len(ds.test) == 6 and ds.train.dtype == np.uint8
  x = ds.model_space(ds.train, centered=True)
  assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < 0


def test_an_empty_folder_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match=r"needs at least 2 images \(.png, .jpg.*found 0"):
    datasets.get_dataset("folder", root=str(tmp_path), shape=(8, 8, 3))
  with pytest.raises(ValueError, match=r"must have 1 \(grayscale\) or 3 \(RGB\) channels"):
    datasets.get_dataset("folder", root=str(tmp_path), shape=(8, 8, 4))
