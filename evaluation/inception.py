"""Inception-v3 of the FID literature in Flax, computing what pytorch-fid computes from its weight file.

FID (Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to a local Nash equilibrium") and the
Inception Score (Salimans et al. 2016) are defined by one network: the TensorFlow Inception-v3 graph of 2015-12-05
(Szegedy et al. 2016, "Rethinking the Inception architecture"). pytorch-fid (mseitzer/pytorch-fid, `fid_inception_v3`)
ported it to PyTorch as torchvision's `inception_v3(num_classes=1008, aux_logits=False)` with four patched blocks:

- `FIDInceptionA/C/E_1`: the pool branch averages over the pixels inside the image only (`count_include_pad=False`);
- `FIDInceptionE_2` (Mixed_7c): the pool branch is a 3x3 *max* pool, stride 1, padding 1, as in the TF graph.

Every convolution is `BasicConv2d`: conv (no bias) -> BatchNorm (eps=0.001, running statistics) -> ReLU.
Images in [0, 1] are resized to 299x299 by bilinear interpolation with `F.interpolate(mode="bilinear",
align_corners=False)` arithmetic (no antialiasing, when shrinking too), then mapped to [-1, 1] by `2x - 1`.
Outputs: pool3, the 2048 averaged features of Mixed_7c (FID's features), and `fc(pool3)`, 1008 logits (the IS's;
classes 1..1000 are ImageNet's, 0 and 1001..1007 unused).

The weights are pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, read without PyTorch by `torch_file`.
"""

import hashlib
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scorejax.evaluation import resize, torch_file
from scorejax.evaluation.features import FeatureNetwork

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
INPUT_SIZE = 299
NUM_FEATURES = 2048
NUM_CLASSES = 1008
BN_EPSILON = 1e-3


# --- The architecture as data: torchvision's constructor arguments, block by block, in state-dict order. ---


def _conv(in_channels, out_channels, kernel, stride=1, padding=0):
  """`BasicConv2d(in_channels, out_channels, kernel_size=kernel, stride=stride, padding=padding)`."""
  pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
  return dict(
    in_channels=in_channels, out_channels=out_channels, kernel=pair(kernel), stride=stride, padding=pair(padding)
  )


def _inception_a(c, pool_features):
  return {
    "branch1x1": _conv(c, 64, 1),
    "branch5x5_1": _conv(c, 48, 1),
    "branch5x5_2": _conv(48, 64, 5, padding=2),
    "branch3x3dbl_1": _conv(c, 64, 1),
    "branch3x3dbl_2": _conv(64, 96, 3, padding=1),
    "branch3x3dbl_3": _conv(96, 96, 3, padding=1),
    "branch_pool": _conv(c, pool_features, 1),
  }


def _inception_b(c):
  return {
    "branch3x3": _conv(c, 384, 3, stride=2),
    "branch3x3dbl_1": _conv(c, 64, 1),
    "branch3x3dbl_2": _conv(64, 96, 3, padding=1),
    "branch3x3dbl_3": _conv(96, 96, 3, stride=2),
  }


def _inception_c(c, c7):
  return {
    "branch1x1": _conv(c, 192, 1),
    "branch7x7_1": _conv(c, c7, 1),
    "branch7x7_2": _conv(c7, c7, (1, 7), padding=(0, 3)),
    "branch7x7_3": _conv(c7, 192, (7, 1), padding=(3, 0)),
    "branch7x7dbl_1": _conv(c, c7, 1),
    "branch7x7dbl_2": _conv(c7, c7, (7, 1), padding=(3, 0)),
    "branch7x7dbl_3": _conv(c7, c7, (1, 7), padding=(0, 3)),
    "branch7x7dbl_4": _conv(c7, c7, (7, 1), padding=(3, 0)),
    "branch7x7dbl_5": _conv(c7, 192, (1, 7), padding=(0, 3)),
    "branch_pool": _conv(c, 192, 1),
  }


def _inception_d(c):
  return {
    "branch3x3_1": _conv(c, 192, 1),
    "branch3x3_2": _conv(192, 320, 3, stride=2),
    "branch7x7x3_1": _conv(c, 192, 1),
    "branch7x7x3_2": _conv(192, 192, (1, 7), padding=(0, 3)),
    "branch7x7x3_3": _conv(192, 192, (7, 1), padding=(3, 0)),
    "branch7x7x3_4": _conv(192, 192, 3, stride=2),
  }


def _inception_e(c):
  return {
    "branch1x1": _conv(c, 320, 1),
    "branch3x3_1": _conv(c, 384, 1),
    "branch3x3_2a": _conv(384, 384, (1, 3), padding=(0, 1)),
    "branch3x3_2b": _conv(384, 384, (3, 1), padding=(1, 0)),
    "branch3x3dbl_1": _conv(c, 448, 1),
    "branch3x3dbl_2": _conv(448, 384, 3, padding=1),
    "branch3x3dbl_3a": _conv(384, 384, (1, 3), padding=(0, 1)),
    "branch3x3dbl_3b": _conv(384, 384, (3, 1), padding=(1, 0)),
    "branch_pool": _conv(c, 192, 1),
  }


# (name, kind, convs): kind "conv" is a lone BasicConv2d; the max pools between stem convs hold no weights.
_LAYERS = (
  ("Conv2d_1a_3x3", "conv", _conv(3, 32, 3, stride=2)),
  ("Conv2d_2a_3x3", "conv", _conv(32, 32, 3)),
  ("Conv2d_2b_3x3", "conv", _conv(32, 64, 3, padding=1)),
  ("Conv2d_3b_1x1", "conv", _conv(64, 80, 1)),
  ("Conv2d_4a_3x3", "conv", _conv(80, 192, 3)),
  ("Mixed_5b", "A", _inception_a(192, 32)),
  ("Mixed_5c", "A", _inception_a(256, 64)),
  ("Mixed_5d", "A", _inception_a(288, 64)),
  ("Mixed_6a", "B", _inception_b(288)),
  ("Mixed_6b", "C", _inception_c(768, 128)),
  ("Mixed_6c", "C", _inception_c(768, 160)),
  ("Mixed_6d", "C", _inception_c(768, 160)),
  ("Mixed_6e", "C", _inception_c(768, 192)),
  ("Mixed_7a", "D", _inception_d(768)),
  ("Mixed_7b", "E_1", _inception_e(1280)),
  ("Mixed_7c", "E_2", _inception_e(2048)),
)


def _conv_paths():
  """(state-dict prefix, conv spec) of every BasicConv2d, in torch's registration order."""
  for name, kind, spec in _LAYERS:
    if kind == "conv":
      yield name, spec
    else:
      for branch, conv in spec.items():
        yield f"{name}.{branch}", conv


def reference_state_dict_shapes():
  """[(key, shape)] of pytorch-fid's FID Inception state dict, in its order: per BasicConv2d `conv.weight` (OIHW),
  `bn.weight`, `bn.bias`, `bn.running_mean`, `bn.running_var`; then `fc.weight` (1008, 2048) and `fc.bias`.
  BatchNorm's `num_batches_tracked` counters are left out: they carry no weights."""
  shapes = []
  for prefix, c in _conv_paths():
    out = c["out_channels"]
    shapes.append((f"{prefix}.conv.weight", (out, c["in_channels"], *c["kernel"])))
    shapes += [(f"{prefix}.bn.{leaf}", (out,)) for leaf in ("weight", "bias", "running_mean", "running_var")]
  return shapes + [("fc.weight", (NUM_CLASSES, NUM_FEATURES)), ("fc.bias", (NUM_CLASSES,))]


def random_state_dict(seed):
  """A state dict of the reference's keys and shapes with deterministic random values (NumPy's PCG64 from `seed`).

  Scaled so activations keep their size through the ~50 layers: He-normal convolutions (std sqrt(2 / fan_in)
  keeps E[x^2] through conv + ReLU, He et al. 2015), BatchNorm running statistics near the identity (var in
  [0.9, 1.1], mean ~ N(0, 0.05^2)) with scale in [0.9, 1.1] and shift ~ N(0, 0.05^2), fc ~ N(0, 1/2048)."""
  rng = np.random.default_rng(seed)
  state = {}
  for key, shape in reference_state_dict_shapes():
    if key == "fc.weight":
      value = rng.standard_normal(shape) / np.sqrt(shape[1])
    elif key.endswith("conv.weight"):
      value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    elif key.endswith(("bn.weight", "running_var")):
      value = rng.uniform(0.9, 1.1, shape)
    else:  # bn.bias, running_mean, fc.bias
      value = 0.05 * rng.standard_normal(shape)
    state[key] = value.astype(np.float32)
  return state


# --- The network. ---


class BasicConv2d(nn.Module):
  """conv (no bias) -> BatchNorm with running statistics (eps 0.001) -> ReLU, as torchvision's BasicConv2d."""

  in_channels: int
  out_channels: int
  kernel: tuple
  stride: int
  padding: tuple
  precision: str = "highest"

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(
      self.out_channels,
      self.kernel,
      strides=self.stride,
      padding=[(p, p) for p in self.padding],
      use_bias=False,
      precision=self.precision,
      name="conv",
    )(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x):
  """TensorFlow's 3x3 average pool, stride 1, 'SAME': the mean over the pixels inside the image only."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x, stride=1, padding=1):
  return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((padding, padding), (padding, padding)))


class InceptionBlock(nn.Module):
  """One of torchvision's InceptionA..E with pytorch-fid's patches; `kind` in A, B, C, D, E_1, E_2."""

  kind: str
  convs: dict
  precision: str = "highest"

  @nn.compact
  def __call__(self, x):
    c = {name: BasicConv2d(**spec, precision=self.precision, name=name) for name, spec in self.convs.items()}
    if self.kind == "A":
      branches = [
        c["branch1x1"](x),
        c["branch5x5_2"](c["branch5x5_1"](x)),
        c["branch3x3dbl_3"](c["branch3x3dbl_2"](c["branch3x3dbl_1"](x))),
        c["branch_pool"](_avg_pool_3x3(x)),
      ]
    elif self.kind == "B":
      branches = [
        c["branch3x3"](x),
        c["branch3x3dbl_3"](c["branch3x3dbl_2"](c["branch3x3dbl_1"](x))),
        _max_pool_3x3(x, stride=2, padding=0),
      ]
    elif self.kind == "C":
      b7 = c["branch7x7_3"](c["branch7x7_2"](c["branch7x7_1"](x)))
      b7dbl = x
      for i in range(1, 6):
        b7dbl = c[f"branch7x7dbl_{i}"](b7dbl)
      branches = [c["branch1x1"](x), b7, b7dbl, c["branch_pool"](_avg_pool_3x3(x))]
    elif self.kind == "D":
      b7x3 = x
      for i in range(1, 5):
        b7x3 = c[f"branch7x7x3_{i}"](b7x3)
      branches = [c["branch3x3_2"](c["branch3x3_1"](x)), b7x3, _max_pool_3x3(x, stride=2, padding=0)]
    else:  # E_1, E_2
      b3 = c["branch3x3_1"](x)
      b3dbl = c["branch3x3dbl_2"](c["branch3x3dbl_1"](x))
      # pytorch-fid's FIDInceptionE_2: the TF graph max-pools here where the paper and torchvision average.
      pool = _avg_pool_3x3(x) if self.kind == "E_1" else _max_pool_3x3(x)
      branches = [
        c["branch1x1"](x),
        c["branch3x3_2a"](b3),
        c["branch3x3_2b"](b3),
        c["branch3x3dbl_3a"](b3dbl),
        c["branch3x3dbl_3b"](b3dbl),
        c["branch_pool"](pool),
      ]
    return jnp.concatenate(branches, axis=-1)


class FIDInceptionV3(nn.Module):
  """(n, 299, 299, 3) images in [-1, 1] -> (pool3 (n, 2048), logits (n, 1008)).

  `precision` of the convolutions: "highest" computes in float32 on every backend (as PyTorch on the CPU);
  "default" lets GPUs and TPUs use TF32/bfloat16 passes, faster and ~1e-3 off."""

  precision: str = "highest"

  @nn.compact
  def __call__(self, x):
    for name, kind, spec in _LAYERS:
      if kind == "conv":
        x = BasicConv2d(**spec, precision=self.precision, name=name)(x)
        if name in ("Conv2d_2b_3x3", "Conv2d_4a_3x3"):  # maxpool1, maxpool2
          x = _max_pool_3x3(x, stride=2, padding=0)
      else:
        x = InceptionBlock(kind, spec, precision=self.precision, name=name)(x)
    pool3 = jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d((1, 1)); the dropout that follows is off at evaluation
    logits = nn.Dense(NUM_CLASSES, precision=self.precision, name="fc")(pool3)
    return pool3, logits


# --- Input: torch's bilinear resize and the [-1, 1] scaling. ---


def resize_bilinear(images, size=INPUT_SIZE):
  """(n, H, W, C) -> (n, size, size, C) as torch's bilinear `F.interpolate(align_corners=False)` (resize.py)."""
  return resize.resize_bilinear(images, size)


def preprocess(images):
  """float (n, H, W, C) in [0, 1], C in {1, 3} -> (n, 299, 299, 3) in [-1, 1]: grey repeated to RGB, resized as
  pytorch-fid (`resize_input=True`), then `2x - 1` (`normalize_input=True`)."""
  images = jnp.asarray(images, jnp.float32)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"expected images (n, H, W, C) with C in {{1, 3}}, got shape {images.shape}")
  x = resize_bilinear(images)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  return 2 * x - 1


# --- Weights: the pytorch-fid state dict onto the Flax tree. ---

# (module, tensor) of a state-dict key -> (collection, Flax leaf, layout change)
_LEAVES = {
  ("conv", "weight"): ("params", "kernel", lambda w: w.transpose(2, 3, 1, 0)),  # OIHW -> HWIO
  ("bn", "weight"): ("params", "scale", None),
  ("bn", "bias"): ("params", "bias", None),
  ("bn", "running_mean"): ("batch_stats", "mean", None),
  ("bn", "running_var"): ("batch_stats", "var", None),
  ("fc", "weight"): ("params", "kernel", lambda w: w.T),  # (out, in) -> (in, out)
  ("fc", "bias"): ("params", "bias", None),
}


def _first_few(names, n=4):
  names = list(names)
  return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def variables_from_state_dict(state_dict):
  """Flax variables `{"params": ..., "batch_stats": ...}` of `FIDInceptionV3` from pytorch-fid's state dict.

  `Mixed_5b.branch1x1.conv.weight` (OIHW) -> params/Mixed_5b/branch1x1/conv/kernel (HWIO); `...bn.weight, bias` ->
  params/.../bn/scale, bias; `...bn.running_mean, running_var` -> batch_stats/.../bn/mean, var; `fc.weight` (out, in)
  -> params/fc/kernel (in, out). Strict: an unknown, missing or mis-shaped tensor raises ValueError naming the
  first few. BatchNorm's `num_batches_tracked` counters carry no weights and are ignored, present or not."""
  expected = dict(reference_state_dict_shapes())
  given = {k: np.asarray(v) for k, v in state_dict.items() if not k.endswith(".num_batches_tracked")}
  problems = []
  if unknown := [k for k in given if k not in expected]:
    problems.append(f"unknown {_first_few(unknown)}")
  if missing := [k for k in expected if k not in given]:
    problems.append(f"missing {_first_few(missing)}")
  if misshaped := [
    f"{k} {given[k].shape} != {expected[k]}" for k in expected if k in given and given[k].shape != expected[k]
  ]:
    problems.append(f"mis-shaped {_first_few(misshaped)}")
  if problems:
    raise ValueError("not pytorch-fid's FID Inception state dict: " + "; ".join(problems))
  variables = {"params": {}, "batch_stats": {}}
  for key in expected:
    *path, module, tensor = key.split(".")
    collection, leaf, relayout = _LEAVES[(module, tensor)]
    value = given[key].astype(np.float32)
    node = variables[collection]
    for part in (*path, module):
      node = node.setdefault(part, {})
    node[leaf] = np.ascontiguousarray(relayout(value) if relayout else value)
  return variables


def convert_to_npz(src, dst):
  """Writes the weights of `src` (pytorch-fid's `.pth`) to `dst` as an `.npz` of the same names and layouts, after
  checking that they are the FID Inception's. `load_inception` reads either."""
  state_dict = torch_file.load_state_dict(src)
  variables_from_state_dict(state_dict)  # refuses anything but the FID Inception's tensors
  np.savez(dst, **state_dict)


def load_inception(path, precision="highest"):
  """The FID Inception as a `FeatureNetwork` ("inception_v3_fid", 2048 features, 1008 logits) with the weights of
  `path`: pytorch-fid's `.pth` (either torch layout) or an `.npz` of the same names. `weights_hash` is the SHA-256 of
  the file's bytes. `apply` takes float32 (n, H, W, C) images in [0, 1], C in {1, 3}."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(
      f"Inception weights not found at {path!r}: download {WEIGHTS_URL} and pass it as "
      f"--config.eval.inception_weights=PATH"
    )
  with open(path, "rb") as f:
    weights_hash = hashlib.sha256(f.read()).hexdigest()
  variables = jax.tree.map(jnp.asarray, variables_from_state_dict(torch_file.load_state_dict(path)))
  model = FIDInceptionV3(precision=precision)
  apply = lambda variables, images: model.apply(variables, preprocess(images))
  return FeatureNetwork("inception_v3_fid", weights_hash, NUM_FEATURES, NUM_CLASSES, apply, variables)


def main(argv):
  if len(argv) != 3:
    print(f"usage: python -m scorejax.evaluation.inception {WEIGHTS_FILE} OUT.npz", file=sys.stderr)
    return 2
  try:
    convert_to_npz(argv[1], argv[2])
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"wrote {argv[2]}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
