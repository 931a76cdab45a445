"""Any folder of images (`data.dataset='folder'`, `data.root`): the user's own data, CelebA or
LSUN exported to image files. Each image is center-cropped to a square and resized to
`data.shape = (H, W, C)`, with C = 3 (RGB) or 1 (grayscale)."""
import os

import numpy as np
from PIL import Image

from datasets.registry import Dataset, register_dataset, scale_images

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


def list_images(root):
  paths = [os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names
           if name.lower().endswith(EXTENSIONS)]
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


@register_dataset("folder")
def folder(root="data", shape=(64, 64, 3), centered=False, num_test=None, **unused):
  """All images under `root`, scaled to [0, 1] (or [-1, 1] if `centered`). A fixed 1% of them
  (at least one; `num_test` to choose) is held out as the test split."""
  if len(shape) != 3 or shape[2] not in (1, 3):
    raise ValueError(f"data.shape must be (H, W, 1) or (H, W, 3) for data.dataset='folder', got {tuple(shape)}")
  paths = list_images(root) if os.path.isdir(root) else []
  if len(paths) < 2:
    raise ValueError(f"data.dataset='folder' needs at least 2 images ({', '.join(EXTENSIONS)}) under "
                     f"data.root={root!r}, found {len(paths)}")
  images = []
  for path in paths:
    try:
      images.append(load_image(path, shape))
    except OSError as e:
      raise ValueError(f"cannot read image {path}: {e}") from None
  x = scale_images(np.stack(images), 255.0, centered)
  order = np.random.default_rng(0).permutation(len(x))
  n_test = num_test if num_test is not None else max(1, len(x) // 100)
  return Dataset("folder", train=x[order[n_test:]], test=x[order[:n_test]])
