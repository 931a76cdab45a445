"""NCSN++ and DDPM++ (Song et al. 2021, "Score-Based Generative Modeling through SDEs", App. H).

One module, as in score_sde's `models/ncsnpp.py`: the DDPM U-Net (Ho et al. 2020) with the
architecture search of App. H.1 as options,

  * `fir`: anti-aliased FIR up/downsampling, kernel `fir_kernel` (StyleGAN2, Karras et al. 2020);
  * `skip_rescale`: residual and skip sums divided by sqrt 2;
  * `resblock_type='biggan'`: BigGAN residual blocks that themselves resample ('ddpm': separate
    Up/Downsample layers);
  * `progressive_input` ('none' | 'input_skip' | 'residual'): a pyramid of downsampled input images
    fed to every resolution; `progressive` ('none' | 'output_skip' | 'residual'): an output pyramid
    of images summed over resolutions (StyleGAN2's skip / residual generators);
    `progressive_combine` ('sum' | 'cat') for 'input_skip';
  * `embedding_type='fourier'`: Gaussian random Fourier features of `log sigma` with
    `fourier_scale` (continuous training); 'positional': DDPM's sinusoidal embedding of
    `250 * log sigma`.

The published CIFAR-10 networks (score_sde `configs/{ve,vp,subvp}/cifar10_*_continuous.py`):

  | field             | NCSN++ cont. (VE, default) | DDPM++ cont. (VP / sub-VP) |
  |-------------------|----------------------------|----------------------------|
  | fir               | True                       | False                      |
  | progressive_input | 'residual'                 | 'none'                     |
  | embedding_type    | 'fourier'                  | 'positional'               |

and otherwise the same: nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4 (8 for the 'deep'
variants), attn_resolutions=(16,), dropout=0.1, resblock_type='biggan', skip_rescale=True,
progressive='none', progressive_combine='sum', init_scale=0, fourier_scale=16. Parameters (the
same tree as score_sde's implementation): NCSN++ 62,758,915, deep 107,587,075; DDPM++ 61,804,419,
deep 106,632,579.

Here the network sees the data as given and returns the raw output: data centering and score_sde's
`scale_by_sigma` (`h / sigma`) are preconditioning, done by `models.utils.get_score_fn`. Images
must have sides divisible by `2 ** (len(ch_mult) - 1)`; attention resolutions refer to heights.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from scorejax.models import layerspp
from scorejax.models.layers import add_augment_embedding, add_label_embedding
from scorejax.models.registry import register_model

_CHOICES = {
  "resblock_type": ("ddpm", "biggan"),
  "progressive": ("none", "output_skip", "residual"),
  "progressive_input": ("none", "input_skip", "residual"),
  "progressive_combine": ("sum", "cat"),
  "embedding_type": ("fourier", "positional"),
  "attention_type": ("ddpm",),
  "conditioning": ("log_sigma", "score_sde"),
}


@register_model("ncsnpp")
class NCSNpp(nn.Module):
  """`net(x, c_noise, train, labels=None, augment_labels=None)`: `x` of shape `(batch, H, W, C)`,
  `c_noise = log sigma` of shape `(batch,)` (score_sde's label with `conditioning='score_sde'`); with
  `num_classes > 0` the class labels `(batch,)` join the noise embedding, with `augment_dim > 0` the
  augmentation labels `(batch, augment_dim)` join its features (EDM's SongUNet `map_augment`)."""

  nf: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 4
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  resamp_with_conv: bool = True
  conditional: bool = True
  fir: bool = True
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  skip_rescale: bool = True
  resblock_type: str = "biggan"
  progressive: str = "none"
  progressive_input: str = "residual"
  progressive_combine: str = "sum"
  attention_type: str = "ddpm"
  embedding_type: str = "fourier"
  fourier_scale: float = 16.0
  init_scale: float = 0.0
  conditioning: str = "log_sigma"  # or "score_sde": `c_noise` is score_sde's label (models/utils.py)
  conv_size: int = 3  # a score_sde config field that its network ignores: every convolution is 3x3 or 1x1
  num_classes: int = 0  # > 0: class-conditional (labels in 0..num_classes-1, num_classes the null label)
  augment_dim: int = 0  # > 0: takes the labels of EDM's augmentation (datasets/augment.py; None = zeros)
  dtype: Any = jnp.float32

  def _check_options(self):
    for field, choices in _CHOICES.items():
      if getattr(self, field) not in choices:
        raise ValueError(f"unknown model.{field} {getattr(self, field)!r}; valid choices: {', '.join(choices)}")
    if self.conv_size != 3:
      raise ValueError("NCSN++ uses 3x3 convolutions only (conv_size=3)")
    if self.num_classes and not self.conditional:
      raise ValueError("a class label joins the noise embedding: model.num_classes > 0 needs model.conditional=True")
    if self.augment_dim and not self.conditional:
      raise ValueError("augmentation labels join the noise embedding: model.augment_dim > 0 needs conditional=True")

  def _embedding(self, c_noise, act, augment_labels=None):
    """Noise-level embedding `(batch, 4 nf)`: features of `log sigma` (plus, with `augment_dim > 0`, a linear
    map of the augmentation labels, as EDM's SongUNet adds them), then a two-layer MLP. A score_sde label
    `l` is embedded as score_sde's NCSN++ does: Fourier features of `log l`, or the sinusoids of `l` itself."""
    score_sde = self.conditioning == "score_sde"
    if self.embedding_type == "fourier":
      features = layerspp.GaussianFourierProjection(embedding_size=self.nf, scale=self.fourier_scale)
      temb = features(jnp.log(c_noise) if score_sde else c_noise)
    elif score_sde:
      temb = layerspp.timestep_embedding(c_noise, self.nf)
    else:
      temb = layerspp.positional_noise_embedding(c_noise, self.nf)
    temb = add_augment_embedding(temb, augment_labels, self.augment_dim, self.dtype, layerspp.default_init())
    temb = nn.Dense(4 * self.nf, kernel_init=layerspp.default_init(), dtype=self.dtype)(temb)
    return nn.Dense(4 * self.nf, kernel_init=layerspp.default_init(), dtype=self.dtype)(act(temb))

  def _skip_sum(self, a, b):
    return (a + b) / np.sqrt(2.0) if self.skip_rescale else a + b

  @nn.compact
  def __call__(self, x, c_noise, train: bool = False, labels=None, augment_labels=None):
    self._check_options()
    act, dtype = nn.swish, self.dtype
    temb = None
    if self.conditional:
      temb = add_label_embedding(self._embedding(c_noise, act, augment_labels), labels, self.num_classes, dtype)
    resample = dict(fir=self.fir, fir_kernel=tuple(self.fir_kernel), dtype=dtype)
    biggan = self.resblock_type == "biggan"

    def res_block(out_ch=None, up=False, down=False):
      common = dict(
        act=act,
        out_ch=out_ch,
        dropout=self.dropout,
        skip_rescale=self.skip_rescale,
        init_scale=self.init_scale,
        dtype=dtype,
      )
      if biggan:
        return layerspp.ResnetBlockBigGAN(up=up, down=down, fir=self.fir, fir_kernel=tuple(self.fir_kernel), **common)
      return layerspp.ResnetBlockDDPM(**common)

    def attn_block():
      return layerspp.AttnBlock(skip_rescale=self.skip_rescale, init_scale=self.init_scale, dtype=dtype)

    def output_conv(h, out_ch, init_scale=1.0):
      return layerspp.conv3x3(act(layerspp.group_norm(h, dtype)), out_ch, init_scale=init_scale, dtype=dtype)

    image = x.astype(dtype)
    channels = x.shape[-1]
    num_resolutions = len(self.ch_mult)

    # Downsampling path, with the input pyramid.
    input_pyramid = image
    hs = [layerspp.conv3x3(image, self.nf, dtype=dtype)]
    for level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = res_block(self.nf * mult)(hs[-1], temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn_block()(h)
        hs.append(h)
      if level == num_resolutions - 1:
        continue
      if biggan:
        h = res_block(down=True)(hs[-1], temb, train)
      else:
        h = layerspp.Downsample(with_conv=self.resamp_with_conv, **resample)(hs[-1])
      if self.progressive_input == "input_skip":
        input_pyramid = layerspp.Downsample(with_conv=False, **resample)(input_pyramid)
        h = layerspp.Combine(method=self.progressive_combine, dtype=dtype)(input_pyramid, h)
      elif self.progressive_input == "residual":
        input_pyramid = layerspp.Downsample(out_ch=h.shape[-1], with_conv=True, **resample)(input_pyramid)
        h = input_pyramid = self._skip_sum(input_pyramid, h)
      hs.append(h)

    h = res_block()(hs[-1], temb, train)
    h = attn_block()(h)
    h = res_block()(h, temb, train)

    # Upsampling path, with the output pyramid.
    pyramid = None
    for level in reversed(range(num_resolutions)):
      for _ in range(self.num_res_blocks + 1):
        h = res_block(self.nf * self.ch_mult[level])(jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
      if h.shape[1] in self.attn_resolutions:
        h = attn_block()(h)

      if self.progressive == "output_skip":
        if pyramid is not None:
          pyramid = layerspp.Upsample(with_conv=False, **resample)(pyramid)
          pyramid = pyramid + output_conv(h, channels, self.init_scale)
        else:
          pyramid = output_conv(h, channels, self.init_scale)
      elif self.progressive == "residual":
        if pyramid is not None:
          pyramid = layerspp.Upsample(out_ch=h.shape[-1], with_conv=True, **resample)(pyramid)
          h = pyramid = self._skip_sum(pyramid, h)
        else:
          pyramid = output_conv(h, h.shape[-1])

      if level != 0:
        if biggan:
          h = res_block(up=True)(h, temb, train)
        else:
          h = layerspp.Upsample(with_conv=self.resamp_with_conv, **resample)(h)
    assert not hs

    if self.progressive == "output_skip":
      h = pyramid
    else:
      h = output_conv(h, channels, self.init_scale)
    return h.astype(x.dtype)
