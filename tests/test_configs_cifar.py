"""Every published CIFAR-10 variant starts and trains on CPU at a reduced width, on a generated
archive in the CIFAR-10 format; their full-width parameter counts are the published ones."""

import os

import jax
import numpy as np
import pytest

from scorejax.configs import cifar, folder
from scorejax.datasets import cifar10
from scorejax.run.builders import build_sde
from scorejax.run.experiment import Experiment
from scorejax.run.info import info
from scorejax.run.train import make_train_step

from helpers import FAST_COMPILE, override


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  path = tmp_path_factory.mktemp("cifar_variants")
  rng = np.random.default_rng(0)
  names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  cifar10.write_archive(
    os.path.join(path, cifar10.ARCHIVE), {n: rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8) for n in names}
  )
  return str(path)


def tiny(config, root):
  fields = {"data.root": root, "data.verify_checksum": False, "model.nf": 8, "training.batch_size": 4}
  if config.model.name == "ddpm":  # 32 groups at every width (score_sde's DDPM): 32 channels at least
    fields["model.nf"] = 32
  if config.model.name in ("ncsnpp", "ddpm"):  # fewer levels and blocks: the same code paths, less to compile
    fields.update({"model.ch_mult": (1, 2), "model.num_res_blocks": 1})
  return override(config, **fields)


DEEP = [v for v in cifar.VARIANTS if v.endswith("_deep")]
EDM = [v for v in cifar.VARIANTS if v.startswith("edm_")]
# One EDM variant trains here: the others differ from it only in fields that other variants train with
# (test_edm_variants_differ_only_in_the_network_and_the_classes).
# vdm's parts train elsewhere: its network is DDPM's (vp_ddpm), its bound, learned schedule and Fourier features on
# the toy and the digits (test_run_vdm.py).
# subvp_ddpmpp is vp_ddpmpp with the sub-VP SDE (test_subvp_variants_differ_from_vp_only_in_the_sde), whose loss
# and samplers are tested on closed forms (test_losses_sde_losses.py, test_samplers_*.py).
SUBVP = [v for v in cifar.VARIANTS if v.startswith("subvp_")]
TRAINED = [v for v in cifar.VARIANTS if v not in DEEP + EDM + SUBVP and v != "vdm"] + ["edm_ncsnpp_cond"]


def two_batches(exp, size=4):
  """Two steps' batches, `(steps, 1, batch, ...)`, with their labels where the model takes classes."""
  split = lambda a: np.stack([a[:size], a[size : 2 * size]])[:, None]
  images = split(exp.dataset.train)
  return [(x, y) for x, y in zip(images, split(exp.dataset.train_labels))] if exp.num_classes else list(images)


@pytest.mark.slow
@pytest.mark.parametrize("variant", TRAINED)
def test_variant_trains(variant, root):
  """The variant's own loss, SDE, preprocessing and network, through `run_lib`'s train step: two
  optimizer steps on real (generated) CIFAR-format batches. The end-to-end loop around the step
  (checkpoints, logs, signals) is the same for every config and is tested on the small ones."""
  exp = Experiment(tiny(cifar.get_config(variant), root), devices=jax.devices()[:1])
  state = exp.init_state()
  batches = two_batches(exp)
  step = make_train_step(exp)
  # Compiled once without LLVM optimisation: each variant's program runs twice here.
  compiled = step.lower(state, batches[0]).compile(FAST_COMPILE)
  for batch in batches:
    state, loss = compiled(state, batch)
  assert int(state.step) == 2 and int(state.nan_step) == -1 and np.isfinite(np.asarray(loss)).all()
  assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree_util.tree_leaves(state.params))


@pytest.mark.parametrize("subvp", SUBVP)
def test_subvp_variants_differ_from_vp_only_in_the_sde(subvp):
  a, b = cifar.get_config(subvp).to_dict(), cifar.get_config(subvp.replace("subvp_", "vp_")).to_dict()
  assert (a["training"].pop("sde"), b["training"].pop("sde")) == ("subvpsde", "vpsde")
  assert a == b


@pytest.mark.parametrize("deep", DEEP)
def test_deep_variants_differ_from_theirs_only_in_depth_and_length(deep):
  """So at the reduced depth of the test above they are the same program as their base variant."""
  a, b = cifar.get_config(deep).to_dict(), cifar.get_config(deep[: -len("_deep")]).to_dict()
  assert (a["model"].pop("num_res_blocks"), b["model"].pop("num_res_blocks")) == (8, 4)
  assert (a["training"].pop("n_iters"), b["training"].pop("n_iters")) == (950_000, 1_300_000)
  assert a == b


def flat(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
  return out


def _differences(a, b):
  """`{field: (value in a, value in b)}` for every field where the variants `a` and `b` differ."""
  a, b = (flat(cifar.get_config(v).to_dict()) for v in (a, b))
  return {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def test_edm_variants_differ_only_in_the_network_and_the_classes():
  """NCSN++ is DDPM++ with FIR resampling, the residual input pyramid and Fourier features (EDM's train.py
  presets); a conditional variant adds 10 classes, trained on every label and sampled over every class."""
  assert _differences("edm_ncsnpp", "edm_ddpmpp") == {
    "model.fir": (True, False),
    "model.progressive_input": ("residual", "none"),
    "model.embedding_type": ("fourier", "positional"),
  }
  for arch in ("ddpmpp", "ncsnpp"):
    assert _differences(f"edm_{arch}_cond", f"edm_{arch}") == {
      "model.num_classes": (10, 0),
      "training.label_dropout": (0.0, 0.1),
      "sampling.class_label": (-2, -1),
      "sampling.guidance_scale": (0.0, None),
    }


@pytest.mark.parametrize("variant", EDM)
def test_edm_variants_train_on_200_mimg_and_sample_from_sigma_80_to_0_002(variant):
  """Karras et al. 2022, Table 7: 200 Mimg at batch 512; the sampler's levels span EDM's [0.002, 80]."""
  config = cifar.get_config(variant)
  assert config.training.n_iters * config.training.batch_size == 200_000_000
  sde = build_sde(config)
  assert float(sde.noise_level(sde.T)) == pytest.approx(80.0, rel=1e-6)
  assert float(sde.noise_level(config.sampling.eps)) == pytest.approx(0.002, rel=1.1e-5)


# NVlabs/edm's SongUNet (training/networks.py) with train.py's --arch presets, its parameters counted from the
# constructor's shapes: DDPM++ 55,732,739; NCSN++ 56,395,523 and its 128 Fourier frequencies (a buffer there,
# a fixed parameter here); with EDM's augmentation labels (augment_dim = 9) its map_augment adds 9 x 128
# (DDPM++) or 9 x 256 (NCSN++) weights.
EDM_SONGUNET = {"edm_ddpmpp": 55_732_739 + 9 * 128, "edm_ncsnpp": 56_395_523 + 9 * 256 + 128}


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(EDM_SONGUNET))
def test_edm_networks_have_the_parameters_of_edms_songunet(variant):
  quiet = dict(print_fn=lambda *a: None)
  count = info(cifar.get_config(variant), **quiet)
  assert count == EDM_SONGUNET[variant]
  # A class adds the table of 10 classes and the null label at the embedding's width 4 nf (EDM: a linear map).
  assert info(cifar.get_config(variant + "_cond"), **quiet) - count == (10 + 1) * 4 * 128


# Published sizes: DDPM 35.7M (Ho et al. 2020, App. B); NCSN++/DDPM++ as counted from score_sde's code.
PUBLISHED = {
  "vp_ddpm": 35.7e6,
  "ve_ncsnpp": 62.76e6,
  "ve_ncsnpp_deep": 107.59e6,
  "vp_ddpmpp": 61.80e6,
  "vp_ddpmpp_deep": 106.63e6,
  "subvp_ddpmpp": 61.80e6,
  "subvp_ddpmpp_deep": 106.63e6,
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(PUBLISHED))
def test_info_reports_the_published_parameter_count(variant):
  lines = []
  count = info(cifar.get_config(variant), print_fn=lines.append)
  assert abs(count - PUBLISHED[variant]) < 0.05e6
  assert f"{count:,} parameters ({count / 1e6:.1f}M)" in lines[0]


def test_vdm_has_the_parameters_of_vdms_score_unet_and_says_so():
  """The parameter tree by `jax.eval_shape`: google-research/vdm's 30,578,181 (cifar.VDM_PARAMS) and 8,065 more,
  each accounted for: a bias in the noise projection of each of the 67 residual blocks (67 x 128 = 8,576), VDM's
  embedding MLP taking 129 inputs (its 128 and the conditioning scalar: 512 fewer here), and the learned linear
  schedule's 3 parameters (its slope, normalised away, and the two ends; VDM's 2)."""
  lines = []
  count = info(cifar.get_config("vdm"), print_fn=lines.append)
  assert count == cifar.VDM_PARAMS + 67 * 128 - 4 * 128 + 1 == 30_586_246
  assert any(line.startswith("published   30,578,181 parameters") and "+8,065" in line for line in lines), lines
  assert any("learned_linear log-SNR gamma(t) from -13.3 to 5.0" in line and " 3 of the" in line for line in lines)


def test_folder_config_reads_its_images(tmp_path):
  from PIL import Image

  rng = np.random.default_rng(1)
  for i in range(6):
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
  config = override(
    folder.get_config("vp_ddpm"),
    **{
      "data.root": str(tmp_path),
      "data.image_size": 16,
      "training.batch_size": 4,
      "model.nf": 32,  # DDPM: 32 groups at every width
      "model.ch_mult": (1, 2),
      "model.num_res_blocks": 1,
      "model.attn_resolutions": (8,),
    },
  )
  exp = Experiment(config)
  assert exp.dataset.train.shape[1:] == (16, 16, 3) and len(exp.dataset.train) + len(exp.dataset.test) == 6
  with pytest.raises(ValueError, match="unknown cifar variant 'nope'; valid choices: ve_ncsnpp"):
    folder.get_config("nope")
