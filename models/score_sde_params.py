"""score_sde's parameter trees onto this project's networks: the leaf map of `--mode=import`.

Flax names a submodule by its class and a counter per class within its parent (`ResnetBlockBigGANpp_3`),
and score_sde's NCSN++/DDPM++ (`models/ncsnpp.py`, `layerspp.py`) build the same modules in the same order
as `models/ncsnpp.py` here. The trees differ only where the classes are named differently:

  | score_sde             | here                |
  |-----------------------|---------------------|
  | `ResnetBlockBigGANpp` | `ResnetBlockBigGAN` |
  | `ResnetBlockDDPMpp`   | `ResnetBlockDDPM`   |
  | `AttnBlockpp`         | `AttnBlock`         |

and every other name (`Conv_0`, `Dense_1`, `GroupNorm_0`, `NIN_3`, `Conv2d_0`, `GaussianFourierProjection_0`,
`Downsample_0`, leaves `kernel`, `bias`, `scale`, `W`, `b`, `weight`) is the same. score_sde's DDPM
(`models/ddpm.py`) attends once per resolution on the way up, after that resolution's blocks, where the
DDPM here (Ho et al. 2020) attends after each of them: its `AttnBlock_j` there lands on the last of ours
at that place, and ours before it become the identity (`identity_attention`).
"""

import jax
import jax.numpy as jnp
import numpy as np

from scorejax.models import layerspp

MODULE_RENAMES = {
  "ResnetBlockBigGANpp": "ResnetBlockBigGAN",
  "ResnetBlockDDPMpp": "ResnetBlockDDPM",
  "AttnBlockpp": "AttnBlock",
}
_MAX_NAMED = 5  # leaves named in an error; the rest are counted


def flatten(tree, prefix=()):
  """`{path tuple: leaf}` of a nested dict."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, prefix + (str(key),)))
    else:
      out[prefix + (str(key),)] = value
  return out


def unflatten(leaves):
  tree = {}
  for path, leaf in leaves.items():
    node = tree
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = leaf
  return tree


def _split(name):
  """`('ResnetBlockBigGANpp', 3)` of `'ResnetBlockBigGANpp_3'`; `(name, None)` without a counter."""
  cls, _, index = name.rpartition("_")
  return (cls, int(index)) if cls and index.isdigit() else (name, None)


def _rename_modules(path, renames):
  parts = []
  for part in path:
    cls, index = _split(part)
    parts.append(f"{renames.get(cls, cls)}_{index}" if index is not None and cls in renames else part)
  return tuple(parts)


def ddpm_attention_map(image_height, ch_mult, num_res_blocks, attn_resolutions):
  """`({score_sde's AttnBlock index: ours}, [our indices with no counterpart])` for the DDPM U-Net.

  Both attend after each down-path block at the resolutions of `attn_resolutions`, and once in the middle;
  on the way up, at each of those resolutions, ours attends after each of `num_res_blocks + 1` blocks and
  score_sde's once, after the last of them (its blocks come first in flax's order: same counter).
  """
  mapping, extra, ours, theirs = {}, [], 0, 0
  resolutions = [image_height // 2**level for level in range(len(ch_mult))]
  for resolution in resolutions:
    for _ in range(num_res_blocks if resolution in attn_resolutions else 0):
      mapping[theirs], ours, theirs = ours, ours + 1, theirs + 1
  mapping[theirs], ours, theirs = ours, ours + 1, theirs + 1  # the middle block
  for resolution in reversed(resolutions):
    if resolution in attn_resolutions:
      extra.extend(range(ours, ours + num_res_blocks))
      ours += num_res_blocks
      mapping[theirs], ours, theirs = ours, ours + 1, theirs + 1
  return mapping, extra


def leaf_map(model, data_shape):
  """`(rename, extra)` for `model` (NCSN++/DDPM++ or DDPM): `rename(path) -> our path` of a score_sde
  parameter path (a tuple of names), and the names of our top-level modules with no score_sde
  counterpart (DDPM's extra attention blocks)."""
  name = type(model).__name__
  if name == "NCSNpp":
    return (lambda path: _rename_modules(path, MODULE_RENAMES)), []
  if name == "DDPM":
    mapping, extra = ddpm_attention_map(data_shape[0], model.ch_mult, model.num_res_blocks, model.attn_resolutions)

    def rename(path):
      cls, index = _split(path[0])
      if cls == "AttnBlock" and index in mapping:
        return (f"AttnBlock_{mapping[index]}",) + tuple(path[1:])
      if cls == "AttnBlock":  # beyond score_sde's blocks: named as such, so that it is reported as unknown
        return (f"AttnBlock_of_score_sde_{index}",) + tuple(path[1:])
      return tuple(path)

    return rename, [f"AttnBlock_{i}" for i in extra]
  raise ValueError(f"no score_sde parameter map for {name}; score_sde checkpoints import into ncsnpp and ddpm")


def identity_attention(like, rng):
  """Parameters of an `AttnBlock` that returns its input: initialised as the block initialises itself, with
  the output projection (`NIN_3`; `NIN_0-2` are q, k, v) at exactly zero, so that `x + NIN_3(...) = x` and
  fine-tuning can still grow it (its gradient is not zero where q, k, v are not)."""
  channels = like["GroupNorm_0"]["scale"].shape[0]
  params = layerspp.AttnBlock().init(rng, jnp.zeros((1, 1, 1, channels)))["params"]
  params = jax.tree_util.tree_map(np.asarray, params)
  params["NIN_3"] = jax.tree_util.tree_map(np.zeros_like, params["NIN_3"])
  return params


def _named(paths):
  names = sorted("/".join(p) for p in paths)
  more = f" and {len(names) - _MAX_NAMED} more" if len(names) > _MAX_NAMED else ""
  return ", ".join(names[:_MAX_NAMED]) + more


def map_tree(theirs, like, rename, extra=(), fill=None, what="parameters"):
  """`theirs` (a nested dict of arrays with score_sde's names) as a tree of `like`'s structure, float32.

  `rename` maps each path; the top-level modules named in `extra` are absent from `theirs` and come from
  `fill(name, like[name])`. Raises ValueError in one line naming the unknown and mis-shaped leaves (by
  score_sde's names) and the missing ones (by ours), at most a few of each."""
  expected = {path: leaf for path, leaf in flatten(like).items() if path[0] not in extra}
  mapped, unknown, misshaped = {}, [], []
  for path, leaf in flatten(theirs).items():
    ours = rename(path)
    if ours not in expected:
      unknown.append(path)
      continue
    leaf = np.asarray(leaf)
    if leaf.shape != tuple(expected[ours].shape) or not np.issubdtype(leaf.dtype, np.floating):
      misshaped.append((path, leaf.shape, leaf.dtype, tuple(expected[ours].shape)))
      continue
    mapped[ours] = leaf.astype(np.float32, copy=False)
  reported = {rename(path) for path, *_ in misshaped}
  missing = [path for path in expected if path not in mapped and path not in reported]
  problems = []
  if unknown:
    problems.append(f"unknown to this network {_named(unknown)}")
  if missing:
    problems.append(f"missing from the file {_named(missing)}")
  if misshaped:
    shown = [f"{'/'.join(p)} {s} {d} (expected {e} float)" for p, s, d, e in sorted(misshaped)[:_MAX_NAMED]]
    more = f" and {len(misshaped) - _MAX_NAMED} more" if len(misshaped) > _MAX_NAMED else ""
    problems.append(f"mis-shaped {', '.join(shown)}{more}")
  if problems:
    raise ValueError(f"its {what}: {'; '.join(problems)}")
  tree = unflatten(mapped)
  for name in extra:
    tree[name] = fill(name, like[name])
  return tree
