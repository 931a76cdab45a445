"""Any folder of images (`data.dataset='folder'`, `data.root`): the user's own data, CelebA or
LSUN exported to image files. Each image is center-cropped to a square and resized to
`(data.image_size, data.image_size, data.num_channels)` (or `data.shape = (H, W, C)`), C = 3 (RGB) or 1 (grayscale)."""

import os

import numpy as np
from PIL import Image

from scorejax.datasets.registry import Dataset, register_dataset

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


def list_images(root):
  paths = [
    os.path.join(folder, name)
    for folder, _, names in os.walk(root)
    for name in names
    if name.lower().endswith(EXTENSIONS)
  ]
  return sorted(paths)


def load_image(path, shape):
  """Center crop to the largest square, resize to `shape[:2]` (bicubic, antialiased), uint8 HWC."""
  height, width, channels = shape
  with Image.open(path) as image:
    image = image.convert("RGB" if channels == 3 else "L")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((width, height), Image.BICUBIC)
    return np.asarray(image, np.uint8).reshape(height, width, channels)


@register_dataset("folder", levels=256)
def folder(root="data", shape=(64, 64, 3), num_test=None, **unused):
  """All images under `root` as uint8 pixel counts 0..255. A fixed 1% of them
  (at least one; `num_test` to choose) is held out as the test split. A `root` that is not a folder
  of at least 2 images, or an image that cannot be read (damaged, or larger than PIL's
  decompression-bomb limit of `2 * Image.MAX_IMAGE_PIXELS` pixels), is a `ValueError` in one line
  naming it: a dataset is never silently smaller than the folder."""
  if len(shape) != 3 or shape[2] not in (1, 3):
    raise ValueError(
      f"images must have 1 (grayscale) or 3 (RGB) channels for data.dataset='folder', got shape {tuple(shape)}"
    )
  if os.path.exists(root) and not os.path.isdir(root):
    raise ValueError(f"data.root={root!r} is a file, not a folder; set data.root to the folder that holds the images")
  paths = list_images(root) if os.path.isdir(root) else []
  if len(paths) < 2:
    raise ValueError(
      f"data.dataset='folder' needs at least 2 images ({', '.join(EXTENSIONS)}) under "
      f"data.root={root!r}, found {len(paths)}" + ("" if os.path.isdir(root) else " (the folder does not exist)")
    )
  images = []
  for path in paths:
    try:
      images.append(load_image(path, shape))
    except Image.DecompressionBombError as e:
      raise ValueError(
        f"image {path} is too large to decode safely ({e}); downscale it or remove it from data.root"
      ) from None
    except Exception as e:  # whatever a damaged or unsupported file raises in PIL's decoders
      raise ValueError(f"cannot read image {path}: {' '.join(str(e).split()) or type(e).__name__}") from None
  x = np.stack(images).astype(np.uint8)
  order = np.random.default_rng(0).permutation(len(x))
  n_test = num_test if num_test is not None else max(1, len(x) // 100)
  return Dataset("folder", train=x[order[n_test:]], test=x[order[:n_test]], max_value=255)
