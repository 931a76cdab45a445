"""Every field with a domain and every data fault ends in one line naming the field (or file), exit
status 2, no traceback, and nothing on disk changed.

The field domains are checked in-process through `validate_config` (one row each, milliseconds); the
data faults, and a few domains as representatives, run `main.py` in a subprocess (one input per run:
the one-line guarantee holds per input)."""

import gzip
import hashlib
import math
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from scorejax import datasets, sde_lib
from scorejax.configs import cifar, digits
from scorejax.configs.default import get_default_config
from scorejax.datasets import cifar10
from scorejax.run.data import load_dataset
from scorejax.run.errors import UserError
from scorejax.run.validate import validate_config
from scorejax.samplers import get_sampling_fn

from helpers import ROOT, override, tiny_digits, tiny_toy

CONFIGS = {
  "toy": tiny_toy,
  "digits": tiny_digits,
  "cifar": lambda: cifar.get_config("ve_ncsnpp"),
  "digits_vdm": lambda: digits.get_config("vdm"),
}

# (config, {field: bad value}, what the one line must say). Values keep the field's type, as
# ml_collections' overrides do (`--config.model.ch_mult=abc` arrives as ('abc',)).
DOMAINS = [
  ("toy", {"seed": -1}, "seed must be a non-negative integer below 2**63, got -1"),
  ("toy", {"training.batch_size": 0}, "training.batch_size must be a positive integer, got 0"),
  ("toy", {"training.n_iters": 0}, "training.n_iters must be a positive integer, got 0"),
  ("toy", {"training.log_freq": 0}, "training.log_freq must be a positive integer, got 0"),
  ("toy", {"training.snapshot_freq": -5}, "training.snapshot_freq must be a positive integer, got -5"),
  ("toy", {"training.n_jitted_steps": 0}, "training.n_jitted_steps must be a positive integer, got 0"),
  ("toy", {"training.max_to_keep": 0}, "training.max_to_keep must be a positive integer, got 0"),
  ("toy", {"model.num_scales": 0}, "model.num_scales must be a positive integer, got 0"),
  ("toy", {"model.nf": 0}, "model.nf must be a positive integer, got 0"),
  ("toy", {"model.num_layers": 0}, "model.num_layers must be a positive integer, got 0"),
  ("digits", {"model.num_res_blocks": -1}, "model.num_res_blocks must be a positive integer, got -1"),
  ("digits", {"model.ch_mult": ("abc",)}, "model.ch_mult must be a non-empty tuple of positive integers, got ('abc',)"),
  ("digits", {"model.ch_mult": (1, 0)}, "model.ch_mult must be a non-empty tuple of positive integers, got (1, 0)"),
  ("digits", {"model.ch_mult": ()}, "model.ch_mult must be a non-empty tuple of positive integers, got ()"),
  ("cifar", {"model.attn_resolutions": (0,)}, "model.attn_resolutions must be a tuple of positive integers"),
  ("digits", {"model.nf": 1}, "model.name='ncsn_small' cannot be built from the model fields (model.nf"),
  ("toy", {"model.sigma_min": 0.0}, "model.sigma_min must be a finite number > 0, got 0.0"),
  ("toy", {"model.sigma_max": math.inf}, "model.sigma_max must be a finite number > 0, got inf"),
  ("toy", {"model.sigma_min": 6.0}, "need 0 < model.sigma_min < model.sigma_max, got 6.0 and 6.0"),
  ("toy", {"model.beta_max": math.nan}, "model.beta_max must be a finite number > 0, got nan"),
  ("toy", {"model.beta_min": 30.0}, "need 0 < model.beta_min < model.beta_max, got 30.0 and 20.0"),
  ("toy", {"model.ema_rate": 1.0}, "model.ema_rate must be a finite number in [0, 1), got 1.0"),
  ("cifar", {"model.dropout": 1.0}, "model.dropout must be a finite number in [0, 1), got 1.0"),
  ("toy", {"model.ema_halflife_kimg": -1.0}, "model.ema_halflife_kimg must be a finite number >= 0, got -1.0"),
  ("toy", {"model.ema_halflife_kimg": math.inf}, "model.ema_halflife_kimg must be a finite number >= 0, got inf"),
  ("toy", {"model.ema_rampup_ratio": -0.05}, "model.ema_rampup_ratio must be a finite number >= 0, got -0.05"),
  ("toy", {"sampling.n_steps_each": 0}, "sampling.n_steps_each must be a positive integer, got 0"),
  ("toy", {"sampling.num_samples": 0}, "sampling.num_samples must be a positive integer, got 0"),
  ("toy", {"sampling.batch_size": 0}, "sampling.batch_size must be a positive integer, got 0"),
  ("toy", {"sampling.method": "edm", "sampling.num_steps": 0}, "sampling.num_steps must be a positive integer, got 0"),
  ("toy", {"sampling.method": "ode", "sampling.ode_steps": 0}, "sampling.ode_steps must be a positive integer, got 0"),
  (
    "toy",
    {"sampling.method": "ode", "sampling.ode_max_steps": 0},
    "sampling.ode_max_steps must be a positive integer, got 0",
  ),
  ("toy", {"sampling.method": "pc", "sampling.snr": -0.1}, "sampling.snr must be a finite number >= 0, got -0.1"),
  ("toy", {"sampling.method": "ode", "sampling.eps": 0.0}, "sampling.eps must be a finite number in (0, 1), got 0.0"),
  ("toy", {"sampling.method": "pc", "sampling.eps": 1.0}, "sampling.eps must be a finite number in (0, 1), got 1.0"),
  ("toy", {"sampling.step_lr": 0.0}, "sampling.step_lr must be a finite number > 0, got 0.0"),
  ("toy", {"sampling.method": "ode", "sampling.rtol": 0.0}, "sampling.rtol must be a finite number > 0, got 0.0"),
  ("toy", {"sampling.method": "ode", "sampling.atol": -1.0}, "sampling.atol must be a finite number > 0, got -1.0"),
  ("toy", {"sampling.method": "edm", "sampling.rho": 0.0}, "sampling.rho must be a finite number > 0, got 0.0"),
  (
    "toy",
    {"sampling.method": "edm", "sampling.s_churn": -1.0},
    "sampling.s_churn must be a finite number >= 0, got -1.0",
  ),
  (
    "toy",
    {"sampling.method": "edm", "sampling.s_noise": -1.0},
    "sampling.s_noise must be a finite number >= 0, got -1.0",
  ),
  (
    "toy",
    {"sampling.method": "edm", "sampling.s_min": 2.0, "sampling.s_max": 1.0},
    "sampling.s_max must be a number >= sampling.s_min=2.0",
  ),
  (
    "toy",
    {"sampling.method": "ddim", "sampling.ddim_eta": 1.5},
    "sampling.ddim_eta must be a finite number in [0, 1], got 1.5",
  ),
  (
    "toy",
    {"sampling.method": "dpm_solver", "sampling.dpm_solver_order": 4},
    "unknown sampling.dpm_solver_order 4; valid choices: 1, 2, 3",
  ),
  (
    "toy",
    {"training.loss": "vdm", "training.schedule_gradient": "bound"},
    "unknown training.schedule_gradient 'bound'; valid choices: vlb, variance",
  ),
  ("toy", {"training.loss": "vdm", "training.eps": 1.0}, "training.eps must be a finite number in [0, 1), got 1.0"),
  (
    "toy",
    {"training.loss": "vdm", "training.sde": "vpsde", "training.eps": 0.0},
    "training.eps must be > 0 for VPSDE: its noise level at t = 0.0 is 0",
  ),
  (
    "digits",
    {"training.loss": "vdm", "data.uniform_dequantization": True},
    "training.loss='vdm' bounds the likelihood of the 17 levels of data.dataset='digits' with its discrete decoder, "
    "but data.uniform_dequantization=True makes the data continuous: set data.uniform_dequantization=False",
  ),
  ("toy", {"model.schedule": "cosine"}, "unknown model.schedule 'cosine'; valid choices: fixed, learned, learned_"),
  ("toy", {"model.schedule": "learned"}, "model.schedule='learned' is trained by VDM's bound: set training.loss='vdm'"),
  (
    "toy",
    {"model.schedule": "learned", "training.loss": "vdm"},
    "model.schedule='learned' conditions a noise prediction network on the schedule's log-SNR: set "
    "model.prediction='noise' and model.conditioning='log_sigma' (got 'score', 'log_sigma')",
  ),
  (
    "toy",
    {"model.schedule": "learned", "training.loss": "vdm", "model.prediction": "noise", "model.gamma_min": 6.0},
    "need model.gamma_min < model.gamma_max, got 6.0 and 5.0",
  ),
  (
    "toy",
    {"model.schedule": "learned_linear", "training.loss": "vdm", "model.prediction": "noise", "sampling.method": "edm"},
    "sampling.method='edm' builds its steps from the numbers of a fixed schedule, which "
    "model.schedule='learned_linear' learns: choose pc (time_grid='uniform'), ode, ddim or dpm_solver",
  ),
  (
    "toy",
    {"model.schedule": "learned", "training.loss": "vdm", "model.prediction": "noise", "model.gamma_max": math.inf},
    "model.gamma_max must be a finite number (any sign), got inf",
  ),
  ("toy", {"published_params": -1}, "published_params must be a non-negative integer, got -1"),
  ("toy", {"eval.batch_size": 0}, "eval.batch_size must be a positive integer, got 0"),
  ("toy", {"eval.num_levels": 0}, "eval.num_levels must be a positive integer, got 0"),
  ("toy", {"eval.bpd_num_repeats": 0}, "eval.bpd_num_repeats must be a positive integer, got 0"),
  ("toy", {"eval.bpd_num_examples": -1}, "eval.bpd_num_examples must be a non-negative integer, got -1"),
  ("toy", {"eval.eps": 0.0}, "eval.eps must be a finite number in (0, 1), got 0.0"),
  ("toy", {"eval.rtol": 0.0}, "eval.rtol must be a finite number > 0, got 0.0"),
  ("toy", {"eval.atol": math.inf}, "eval.atol must be a finite number > 0, got inf"),
  ("toy", {"eval.ode_steps": 0}, "eval.ode_steps must be a positive integer, got 0"),
  ("toy", {"eval.ode_max_steps": 0}, "eval.ode_max_steps must be a positive integer, got 0"),
  ("toy", {"eval.num_probes": 0}, "eval.num_probes must be a positive integer, got 0"),
  ("toy", {"eval.num_draws": 0}, "eval.num_draws must be a positive integer, got 0"),
  (
    "digits_vdm",
    {"eval.bpd_methods": "bound,elbo"},
    "eval.bpd_methods='bound,elbo' is not a comma-separated list of distinct methods; valid choices: bound, ode",
  ),
  ("toy", {"eval.bpd_methods": ""}, "eval.bpd_methods='' is not a comma-separated list of distinct methods"),
  ("toy", {"eval.bpd_methods": "ode,ode"}, "eval.bpd_methods='ode,ode' is not a comma-separated list of distinct"),
  ("toy", {"eval.ode_solver": "dopri"}, "unknown eval.ode_solver 'dopri'; valid choices: "),
  ("toy", {"eval.hutchinson_type": "sphere"}, "unknown eval.hutchinson_type 'sphere'; valid choices: rademacher"),
  ("digits", {"eval.reference": "test"}, "eval.reference='test' is none of held_out, train"),
  ("toy", {"data.num_train": 0}, "data.num_train must be a positive integer, got 0"),
  ("toy", {"data.num_test": 0}, "data.num_test must be a positive integer, got 0"),
  ("toy", {"data.shape": ()}, "data.shape must be a non-empty tuple of positive integers, got ()"),
  ("digits", {"data.shape": (8, 0, 1)}, "data.shape must be a non-empty tuple of positive integers, got (8, 0, 1)"),
  ("cifar", {"data.image_size": 0}, "data.image_size must be a positive integer, got 0"),
  ("cifar", {"data.image_size": 30}, "image size (30, 30) is not divisible by 2**(len(model.ch_mult)-1)=8"),
  ("cifar", {"data.num_channels": 0}, "data.num_channels must be a positive integer, got 0"),
  ("toy", {"optim.lr": 0.0}, "optim.lr must be a finite number > 0, got 0.0"),
  ("toy", {"optim.beta1": 1.0}, "optim.beta1 must be a finite number in [0, 1), got 1.0"),
  ("toy", {"optim.beta2": -0.1}, "optim.beta2 must be a finite number in [0, 1), got -0.1"),
  (
    "toy",
    {"optim.optimizer": "AdamW", "optim.weight_decay": -1.0},
    "optim.weight_decay must be a finite number >= 0, got -1.0",
  ),
  ("toy", {"optim.eps": 0.0}, "optim.eps must be a finite number > 0, got 0.0"),
  ("toy", {"optim.warmup": -1}, "optim.warmup must be a non-negative integer, got -1"),
  ("toy", {"optim.lr_rampup_kimg": -10.0}, "optim.lr_rampup_kimg must be a finite number >= 0, got -10.0"),
  ("cifar", {"optim.lr_rampup_kimg": math.nan}, "optim.lr_rampup_kimg must be a finite number >= 0, got nan"),
]


def one_line(message):
  assert "\n" not in message and message.strip() == message, repr(message)
  return message


@pytest.mark.parametrize("name,fields,expected", DOMAINS, ids=[f"{c}-{'-'.join(f)}" for c, f, _ in DOMAINS])
def test_a_field_out_of_its_domain_is_one_line_naming_it(name, fields, expected):
  config = override(CONFIGS[name](), **fields)
  with pytest.raises(UserError) as error:
    validate_config(config, num_devices=1)
  assert expected in one_line(str(error.value))


@pytest.mark.parametrize("name", CONFIGS)
def test_the_shipped_configs_pass(name):
  validate_config(CONFIGS[name](), num_devices=1)


# A sampler's builder checks its own arguments (for callers without a config), naming the field.
BUILDERS = [
  ("edm", "vp", {"num_steps": 0}, "sampling.num_steps must be a positive integer, got 0"),
  ("edm", "ve", {"eps": 1.5}, "sampling.eps must be a finite number in (0, 1), got 1.5"),
  ("pc", "ve", {"snr": -1.0}, "sampling.snr must be a finite number >= 0, got -1.0"),
  ("ddim", "vp", {"ddim_eta": -0.5}, "sampling.ddim_eta must be a finite number in [0, 1], got -0.5"),
  ("dpm_solver", "vp", {"num_steps": 0}, "sampling.num_steps must be a positive integer, got 0"),
  ("ode", "ve", {"ode_steps": 0}, "sampling.ode_steps must be a positive integer, got 0"),
  ("ode", "vp", {"rtol": 0.0}, "sampling.rtol must be a finite number > 0, got 0.0"),
  ("ald", "ve", {"n_steps_each": 0}, "sampling.n_steps_each must be a positive integer, got 0"),
  ("cas", "ve", {"n_steps_each": 0}, "sampling.n_steps_each must be a positive integer, got 0"),
]


@pytest.mark.parametrize("method,sde,options,expected", BUILDERS)
def test_a_sampler_refuses_options_out_of_their_domain(method, sde, options, expected):
  sde = sde_lib.VESDE(0.01, 5.0, N=10) if sde == "ve" else sde_lib.VPSDE(0.1, 20.0, N=10)
  with pytest.raises(ValueError) as error:
    get_sampling_fn(sde, method, **{**get_default_config().sampling, "time_grid": "uniform", **options})
  assert expected in one_line(str(error.value))


def test_a_folder_whose_test_split_takes_every_image_leaves_no_training_split(tmp_path):
  for i in range(3):
    Image.new("RGB", (8, 8), (80 * i, 0, 0)).save(tmp_path / f"{i}.png")
  config = override(tiny_digits(), **{"data.dataset": "folder", "data.shape": (8, 8, 3), "data.root": str(tmp_path)})
  config.data.num_test = 3
  with pytest.raises(UserError) as error:
    load_dataset(config)
  assert "the training split of data.dataset='folder' is empty; lower data.num_test" in one_line(str(error.value))


# ----------------------------------------------------------------------------- downloads


def small_archive(path, skip=()):
  names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  rng = np.random.default_rng(0)
  batches = {n: rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8) for n in names if n not in skip}
  cifar10.write_archive(str(path), batches)
  return str(path)


def test_a_missing_archive_is_downloaded_only_on_request(tmp_path, monkeypatch):
  source = small_archive(tmp_path / "source.tar.gz")
  monkeypatch.setattr(cifar10, "URL", f"file://{source}")
  root = tmp_path / "data"
  with pytest.raises(ValueError, match="or pass --config.data.download=True to download it"):
    datasets.get_dataset("cifar10", root=str(root), verify_checksum=False)  # the default: no download
  assert not root.exists()
  ds = datasets.get_dataset("cifar10", root=str(root), verify_checksum=False, download=True)
  assert ds.train.shape == (10, 32, 32, 3) and os.listdir(root) == [cifar10.ARCHIVE]
  monkeypatch.setattr(cifar10, "URL", f"file://{tmp_path}/nowhere.tar.gz")
  with pytest.raises(ValueError) as error:
    datasets.get_dataset("cifar10", root=str(tmp_path / "other"), verify_checksum=False, download=True)
  assert f"cannot download CIFAR-10 from file://{tmp_path}/nowhere.tar.gz" in one_line(str(error.value))
  assert not os.listdir(tmp_path / "other")  # no partial file left behind


# ----------------------------------------------------------------------------- through main.py

CIFAR = ["--config.data.dataset=cifar10", "--config.data.shape=(32, 32, 3)", "--config.data.verify_checksum=False"]
FOLDER = ["--config.data.dataset=folder", "--config.data.shape=(8, 8, 3)"]
TOY = [
  "--config=configs/toy2d.py",
  "--config.data.num_train=64",
  "--config.model.nf=32",
  "--config.model.num_layers=2",
  "--config.model.num_scales=10",
]


def png_header(width, height):
  """A PNG that declares `width x height` 1-bit pixels: PIL decides on its size before decoding."""

  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def make_data(kind, root):
  """Write the data of the fault `kind` under `root`; returns the `data.root` to pass."""
  archive = root / cifar10.ARCHIVE
  if kind.startswith("cifar"):
    os.makedirs(root)
    good = small_archive(root / "good.tar.gz")
    blob = open(good, "rb").read()
    os.remove(good)
    contents = {
      "cifar_truncated": blob[: len(blob) // 2],
      "cifar_empty": b"",
      "cifar_not_a_tar": b"<html><body>404 Not Found</body></html>\n",
      "cifar_not_a_tar_inside": gzip.compress(b"just some text\n" * 100),
    }
    if kind == "cifar_missing_batch":
      small_archive(archive, skip=("data_batch_3",))
    elif kind in contents:
      archive.write_bytes(contents[kind])
    return str(root)
  if kind == "root_is_a_file":
    root.write_text("not a folder\n")
    return str(root)
  if kind == "folder_bomb":
    os.makedirs(root)
    for i in range(3):
      Image.new("RGB", (8, 8), (80 * i, 0, 0)).save(root / f"{i}.png")
    (root / "huge.png").write_bytes(png_header(20_000, 20_000))  # 4e8 pixels > 2 * MAX_IMAGE_PIXELS
    return str(root)
  if kind == "folder_no_images":
    os.makedirs(root / "sub")
    (root / "notes.txt").write_text("no images here\n")
    return str(root)
  return str(root)  # missing: nothing written


def tree_hash(path):
  """What is on disk under `path`: every path and its bytes."""
  digest = hashlib.sha256()
  if os.path.isfile(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()
  for folder, dirs, files in sorted(os.walk(path)):
    dirs.sort()
    for name in sorted(files):
      full = os.path.join(folder, name)
      digest.update(full.encode() + b"\0" + open(full, "rb").read())
  return digest.hexdigest()


# (id, data written, arguments, what the one line must say)
RUNS = [
  ("cifar_truncated", CIFAR, "cannot read the CIFAR-10 archive {root}/cifar-10-python.tar.gz ("),
  ("cifar_empty", CIFAR, "cannot read the CIFAR-10 archive {root}/cifar-10-python.tar.gz (empty file)"),
  ("cifar_not_a_tar", CIFAR, "cannot read the CIFAR-10 archive {root}/cifar-10-python.tar.gz (not a gzip file)"),
  ("cifar_not_a_tar_inside", CIFAR, "cannot read the CIFAR-10 archive {root}/cifar-10-python.tar.gz ("),
  ("cifar_missing_batch", CIFAR, "(cifar-10-batches-py/data_batch_3 is missing); replace it with the published"),
  ("cifar_missing", CIFAR, "put cifar-10-python.tar.gz (md5 c58f30108f718f92721af3b95e74349a, from https:"),
  ("root_is_a_file", CIFAR, "data.root='{root}' is a file, not a folder; set data.root to the folder that holds"),
  ("root_is_a_file", FOLDER, "data.root='{root}' is a file, not a folder; set data.root to the folder that holds"),
  ("folder_bomb", FOLDER, "image {root}/huge.png is too large to decode safely (Image size (400000000 pixels)"),
  ("folder_no_images", FOLDER, "data.dataset='folder' needs at least 2 images (.png, .jpg, .jpeg, .bmp, .webp, .gif)"),
  (
    "none",
    ["--config.model.ch_mult=abc"],
    "model.ch_mult must be a non-empty tuple of positive integers, got ('abc',)",
  ),
  ("none", [*TOY, "--config.seed=-1"], "seed must be a non-negative integer below 2**63, got -1"),
  (
    "none",
    ["--config.training.loss=vdm", "--config.data.uniform_dequantization=True"],
    "data.uniform_dequantization=True makes the data continuous: set data.uniform_dequantization=False",
  ),
  ("none", [*TOY, "--config.training.batch_size=128"], "training.batch_size=128 is larger than the training set (64"),
]


@pytest.mark.slow
@pytest.mark.parametrize("kind,args,expected", RUNS, ids=[f"{r[0]}-{i}" for i, r in enumerate(RUNS)])
def test_main_reports_a_fault_in_one_line_and_changes_nothing(kind, args, expected, tmp_path):
  root = make_data(kind, tmp_path / "data")
  workdir = tmp_path / "run"
  before = tree_hash(root) if os.path.exists(root) else None
  result = subprocess.run(
    [sys.executable, "main.py", *args, f"--config.data.root={root}", f"--workdir={workdir}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  assert expected.format(root=root) in lines[0], lines[0]
  assert (tree_hash(root) if os.path.exists(root) else None) == before  # no download, nothing removed
  assert not workdir.exists()  # refused before the run wrote anything
  if kind == "cifar_missing":
    assert f"at {root}/cifar-10-python.tar.gz" in lines[0] and "--config.data.download=True" in lines[0]


def test_a_samples_file_that_cannot_be_scored_is_one_line(tmp_path):
  """`eval.samples_file` (run/quality.py: read_images): what is wrong with the file, in one line."""
  from scorejax.run.quality import read_images

  ds = datasets.get_dataset("digits")
  good = ds.test[:10]
  cases = {
    "other_key.npz": ({"x": good}, "holds x, not images or samples"),
    "shape.npz": ({"images": np.zeros((10, 8, 9, 1), np.uint8)}, "holds images of shape (10, 8, 9, 1); expected"),
    "range.npz": ({"images": good.astype(np.int64) + 1}, "integer pixels must lie in 0..16, got 1..17"),
    "nan.npz": ({"samples": np.full((10, 8, 8, 1), np.nan, np.float32)}, "holds NaN or infinite values"),
  }
  for name, (arrays, expected) in cases.items():
    np.savez(tmp_path / name, **arrays)
    with pytest.raises(UserError) as error:
      read_images(str(tmp_path / name), ds, centered=False)
    assert expected in one_line(str(error.value)), name
  (tmp_path / "not.npz").write_bytes(b"not a zip")
  with pytest.raises(UserError, match="is not a readable .npz file or folder"):
    read_images(str(tmp_path / "not.npz"), ds, centered=False)
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="is a folder without .png images"):
    read_images(str(tmp_path / "empty"), ds, centered=False)
  # Model-space floats (as --mode=sample writes them) and pixel counts of the same images agree.
  np.savez(tmp_path / "floats.npz", samples=2 * good / 16.0 - 1)
  np.testing.assert_array_equal(read_images(str(tmp_path / "floats.npz"), ds, centered=True), good)
  np.savez(tmp_path / "counts.npz", images=good[..., 0])  # (n, 8, 8): the channel axis is added
  np.testing.assert_array_equal(read_images(str(tmp_path / "counts.npz"), ds, centered=False), good)
