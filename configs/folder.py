"""Your own images: `--config=configs/folder.py:<variant> --config.data.root=/path/to/images`.

Every image under `data.root` (PNG, JPEG, ..., in any sub-folder) is center-cropped to a square and
resized to `data.image_size` (default 64: CelebA-64 and LSUN exported to image files fit here).
Variants are the CIFAR-10 ones of configs/cifar.py (default `ve_ncsnpp`, score_sde's CelebA-64
settings), with the VE noise range of score_sde's CelebA config: `sigma_max = 90` (EDM's variants keep
its 80). For other sizes or data, choose `model.sigma_max` about as large as the largest distance between
two training images (Song & Ermon 2020, technique 1), e.g. `--config.data.image_size=128
--config.model.sigma_max=180`.
"""

from scorejax.configs import cifar

VARIANTS = cifar.VARIANTS


def get_config(variant="ve_ncsnpp"):
  config = cifar.get_config(variant)
  data = config.data
  data.dataset = "folder"
  data.root = "data/images"
  data.image_size = 64
  data.num_channels = 3
  if config.training.sde == "vesde" and variant != "ncsn" and not variant.startswith("edm_"):
    config.model.sigma_max = 90.0  # EDM keeps its 80 at 64x64 as at 32x32 (its FFHQ and AFHQv2 runs)
  return config
