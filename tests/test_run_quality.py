"""`--mode=eval`'s sample quality end to end: the digits classifier's metrics on a trained and an untrained
model, resuming an interrupted evaluation, checkpoint sweeps, and FID through main.py on a CIFAR-format
archive with Inception weights in pytorch-fid's file format (random values)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from scorejax.configs import digits
from scorejax.datasets import cifar10
from scorejax.evaluation import inception, torch_file
from scorejax.run.evaluate import evaluate
from scorejax.run.quality import classifier_dir
from scorejax.run.train import train

from helpers import ROOT, override, run_main, tiny_digits

pytestmark = pytest.mark.slow  # end to end: left out by `-m "not slow"`

QUALITY = ("fid", "inception_score", "kid", "precision", "recall", "class_histogram")
COPYING = ("copy_share", "copy_excess", "copy_share_z", "copying_z", "copying_flagged")


def quiet(*args):
  pass


# The run's shared `eval.stats_dir` (conftest.py: shared_stats), set for the module by `untrained`: the digits
# classifier and the real digits' statistics are computed once.
STATS = {"dir": ""}


def digits_config(**fields):
  return tiny_digits(
    **{
      "eval.num_samples": 96,
      "eval.stats_dir": STATS["dir"],
      "sampling.batch_size": 48,
      "training.snapshot_sampling": False,
      **fields,
    }
  )


@pytest.fixture(scope="module")
def untrained(tmp_path_factory, shared_stats):
  """A workdir with checkpoints at steps 2 and 4 of a model that has barely trained: its samples are noise."""
  STATS["dir"] = shared_stats
  workdir = str(tmp_path_factory.mktemp("digits"))
  train(digits_config(**{"training.snapshot_freq": 2}), workdir, print_fn=quiet)
  return workdir


@pytest.fixture(scope="module")
def untrained_result(untrained):
  return evaluate(digits_config(), untrained, print_fn=quiet)


def test_digits_eval_reports_every_metric_next_to_held_out_data(untrained, untrained_result):
  q = untrained_result["sample_quality"]
  assert q["feature_network"] == "digits_classifier" and q["classifier_held_out_accuracy"] >= 0.95
  # Cached beside the shared statistics (eval.stats_dir), not in the workdir.
  assert os.listdir(os.path.join(STATS["dir"], "digits_classifier"))
  assert not os.path.exists(os.path.join(untrained, "eval", "digits_classifier"))
  assert q["protocol"] == "held_out" and q["num_draws"] == 20
  assert q["num_samples"] == 96 and q["sampler"] == "ald" and q["nfe"] > 0
  # Every set is measured by as many images as the samples (96 of each half of the 400 held-out digits).
  assert q["count"] == 96
  for part in ("samples", "held_out_floor", "training_copies"):
    assert set(QUALITY + COPYING) <= set(q[part]), part
    assert q[part]["num_samples"] == 96 and q[part]["fid_std"] > 0 and q[part]["kid_std"] > 0, part
    assert len(q[part]["class_histogram"]) == 10 and abs(sum(q[part]["class_histogram"]) - 1) < 1e-6
  on_disk = json.load(open(os.path.join(untrained, "eval", "eval_4.json")))
  assert on_disk["sample_quality"]["samples"]["fid"] == q["samples"]["fid"]
  # Real held-out digits are far closer to the other held-out half than the noise of an untrained model.
  real, fake = q["held_out_floor"], q["samples"]
  assert real["fid"] < 0.5 * fake["fid"], (real["fid"], fake["fid"])
  assert real["precision"] > fake["precision"] and real["recall"] > fake["recall"]
  assert real["inception_score"] > fake["inception_score"]
  # Training digits are flagged as copies; noise and unseen real digits are not.
  assert q["training_copies"]["copying_flagged"] and q["training_copies"]["copy_share"] == 1
  assert not real["copying_flagged"] and not fake["copying_flagged"]


def test_an_interrupted_evaluation_redoes_only_unfinished_batches(untrained, untrained_result, tmp_path):
  config = digits_config()
  batches = os.path.join(untrained, "eval", "samples_4")
  assert sorted(f for f in os.listdir(batches) if f.startswith("batch_")) == ["batch_00000.npz", "batch_00001.npz"]
  os.remove(os.path.join(batches, "batch_00001.npz"))  # as if interrupted while drawing the second batch
  lines = []
  again = evaluate(config, untrained, print_fn=lines.append)
  assert any("reused 1 of 2 sample batches" in line for line in lines), lines
  assert sum(line.startswith("eval step 4: 96/96 samples") for line in lines) == 1, lines
  for key in QUALITY:  # the redrawn batch is the one that was lost: the same key, the same samples
    assert again["sample_quality"]["samples"][key] == untrained_result["sample_quality"]["samples"][key], key
  # Other sampler settings make the saved batches stale: they are drawn again.
  lines = []
  evaluate(override(digits_config(), **{"sampling.n_steps_each": 2}), untrained, print_fn=lines.append)
  assert any("discarding the saved samples" in line for line in lines), lines
  assert not any("reused" in line for line in lines), lines


def test_a_sweep_evaluates_each_checkpoint_once(untrained):
  config = digits_config(**{"eval.begin_step": 0, "eval.num_samples": 48})
  os.remove(os.path.join(untrained, "eval", "eval_4.json"))
  lines = []
  evaluate(config, untrained, print_fn=lines.append)
  assert os.path.exists(os.path.join(untrained, "eval", "eval_2.json"))
  assert os.path.exists(os.path.join(untrained, "eval", "eval_4.json"))
  lines = []
  evaluate(config, untrained, print_fn=lines.append)
  assert sum("exists; skipped" in line for line in lines) == 2, lines
  bad = digits_config(**{"eval.begin_step": 5})
  with pytest.raises(Exception, match=r"no checkpoint .* from eval.begin_step=5 .* the steps there are: 2, 4"):
    evaluate(bad, untrained, print_fn=quiet)


def test_main_eval_interrupted_by_sigint_resumes_from_its_saved_batches(untrained):
  """Through main.py as a user runs it: Ctrl-C after two of ten batches, then the same command again."""
  args = [
    sys.executable,
    "main.py",
    "--mode=eval",
    f"--workdir={untrained}",  # no --config: the config saved with the checkpoints
    "--config.eval.num_samples=480",
    "--config.sampling.batch_size=48",
    "--config.sampling.n_steps_each=3",  # other settings than the tests above: fresh batches
  ]
  batches = os.path.join(untrained, "eval", "samples_4")
  proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while not os.path.exists(os.path.join(batches, "batch_00001.npz")):
    assert proc.poll() is None and time.time() < deadline, proc.communicate(timeout=60)
    time.sleep(0.1)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, (out, err)
  assert "interrupted (SIGINT) during --mode=eval" in err and "reuse the finished sample batches" in err, err
  done = len([f for f in os.listdir(batches) if f.startswith("batch_")])
  assert 2 <= done < 10, done
  again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr
  assert f"reused {done} of 10 sample batches" in again.stdout, again.stdout
  result = json.load(open(os.path.join(untrained, "eval", "eval_4.json")))
  q = result["sample_quality"]  # 480 drawn; each set measured by 200, half the held-out digits
  assert q["num_samples"] == 480 and q["count"] == q["samples"]["num_samples"] == 200


# ----------------------------------------------------------------------------- CIFAR-10 format, Inception


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
  """A CIFAR-format archive of 16 + 8 random images, a model trained 2 steps on it through main.py, and
  Inception weights with pytorch-fid's names and shapes in its file format."""
  folder = tmp_path_factory.mktemp("cifar")
  rng = np.random.default_rng(0)
  names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  sizes = [4, 4, 4, 2, 2, 8]
  cifar10.write_archive(
    os.path.join(folder, cifar10.ARCHIVE),
    {name: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for name, n in zip(names, sizes)},
  )
  weights = os.path.join(folder, "pt_inception.pth")
  torch_file.save_state_dict(weights, inception.random_state_dict(0))
  workdir = os.path.join(folder, "run")
  flags = [
    "--config=configs/digits.py:ncsn",
    "--config.data.dataset=cifar10",
    "--config.data.shape=(32, 32, 3)",
    f"--config.data.root={folder}",
    "--config.data.verify_checksum=False",
    "--config.model.nf=8",
    "--config.model.ch_mult=(1,)",  # one resolution, as tiny_digits: a third of the compile time
    "--config.model.num_scales=4",
    "--config.training.batch_size=8",
    "--config.training.n_iters=2",
    "--config.training.snapshot_freq=2",
    "--config.training.snapshot_sampling=False",
    "--config.sampling.n_steps_each=1",
    "--config.sampling.batch_size=4",
    "--config.eval.num_samples=6",
    "--config.eval.feature_batch_size=4",
    f"--workdir={workdir}",
  ]
  result = run_main(*flags, timeout=300)
  assert result.returncode == 0, result.stderr
  return flags, weights, workdir


def test_cifar_eval_without_weights_says_which_file_to_get(cifar_run):
  flags, _, workdir = cifar_run
  result = run_main("--mode=eval", *flags, timeout=300)
  assert result.returncode == 0, result.stderr
  assert "pt_inception-2015-12-05-6726825d.pth" in result.stdout
  assert "--config.eval.inception_weights=PATH" in result.stdout
  assert "sample_quality" not in json.load(open(os.path.join(workdir, "eval", "eval_2.json")))


def test_cifar_eval_with_inception_weights(cifar_run):
  flags, weights, workdir = cifar_run
  os.remove(os.path.join(workdir, "eval", "eval_2.json"))
  # Against the training split, as the FID literature measures CIFAR-10 (configs/cifar.py's eval.reference).
  reference = "--config.eval.reference=train"
  result = run_main("--mode=eval", *flags, reference, f"--config.eval.inception_weights={weights}", timeout=400)
  assert result.returncode == 0, result.stderr
  q = json.load(open(os.path.join(workdir, "eval", "eval_2.json")))["sample_quality"]
  assert q["feature_network"] == "inception_v3_fid" and len(q["samples"]["class_histogram"]) == 1008
  assert q["protocol"] == "train" and q["samples"]["num_samples"] == 6 and q["held_out_data"]["num_samples"] == 6
  parts = ("samples", "held_out_data", "training_data")
  assert all(np.isfinite(q[part][k]) for part in parts for k in QUALITY[:-1] + COPYING), q
  assert q["training_data"]["copy_share"] == 1 and q["training_data"]["copying_z"] < 0  # 6 samples: not significant
  stats = os.listdir(os.path.join(workdir, "eval", "stats"))
  assert len(stats) == 2 and all(f.startswith("cifar10_") and "inception_v3_fid" in f for f in stats), stats
  missing = run_main("--mode=eval", *flags, reference, "--config.eval.inception_weights=/nonexistent.pth", timeout=300)
  assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
  assert "pt_inception-2015-12-05-6726825d.pth" in missing.stderr


# ----------------------------------------------------------------------------- scoring a file of images


def test_a_saved_npz_of_held_out_digits_scores_the_same_through_main_as_in_process(untrained, tmp_path):
  """pytorch-fid's use: score images from anywhere against the dataset's cached statistics. The held-out digits,
  saved as an .npz of pixel counts, then as a folder of PNGs: the same numbers through main.py, in process and
  from the PNGs; they are the held-out floor of the protocol (not flagged, not far from it)."""
  from PIL import Image

  from scorejax import datasets

  test = datasets.get_dataset("digits").test
  path = str(tmp_path / "held_out.npz")
  np.savez(path, images=test)
  cli = run_main("--mode=eval", f"--workdir={untrained}", f"--config.eval.samples_file={path}", timeout=300)
  assert cli.returncode == 0, cli.stderr
  assert "wrote" in cli.stdout and "held-out floor" in cli.stdout, cli.stdout
  from_cli = json.load(open(os.path.join(untrained, "eval", "file_held_out.json")))["sample_quality"]
  in_process = evaluate(digits_config(**{"eval.samples_file": path}), untrained, print_fn=quiet)["sample_quality"]
  assert from_cli == in_process
  folder = tmp_path / "pngs"
  folder.mkdir()
  for i, image in enumerate(test[..., 0]):
    Image.fromarray(np.round(image * (255 / 16)).astype(np.uint8)).save(folder / f"{i:03d}.png")
  from_pngs = evaluate(digits_config(**{"eval.samples_file": str(folder)}), untrained, print_fn=quiet)
  assert from_pngs["sample_quality"] == in_process
  held = in_process["samples"]
  assert in_process["count"] == 200 and not held["copying_flagged"] and abs(held["copying_z"]) < 3
  assert held["fid"] < in_process["held_out_floor"]["fid"] + 2 * in_process["held_out_floor"]["fid_std"]
  missing = run_main("--mode=eval", f"--workdir={untrained}", "--config.eval.samples_file=/nonexistent.npz")
  assert (
    missing.returncode == 2 and missing.stderr.strip() == "error: eval.samples_file='/nonexistent.npz' does not exist"
  )


# ----------------------------------------------------------------------------- the ranking panel (issue 19)

# A score model that trains fast on the digits: VE on configs/digits.py:ncsn's sigma 0.01-5, continuous loss, EMA
# over about 100 steps (ncsn's 0.999 keeps most of the initial weights for the first thousand steps), sampled by the
# probability-flow ODE (Euler, 34 steps and a denoising step: 35 score evaluations).
PANEL = {
  "training.loss": "sde",
  "training.sde": "vesde",
  "training.continuous": True,
  "training.snapshot_sampling": False,
  "training.log_freq": 50,
  "model.ema_rate": 0.99,
  "model.num_scales": 34,
  "model.ch_mult": (1,),  # one resolution: it compiles in a third of the time, and the ranking stays clear
  "sampling.method": "pc",
  "sampling.predictor": "euler_maruyama",
  "sampling.corrector": "none",
  "sampling.probability_flow": True,
  "sampling.time_grid": "uniform",
  "eval.num_samples": 200,
  "sampling.batch_size": 200,
}


@pytest.fixture(scope="module")
def panel(tmp_path_factory, untrained, untrained_result):
  """One model trained 2 steps (untrained), then on to 300 (weak) and 600 (trained), its 200 samples at each
  checkpoint drawn by one `--mode=eval` sweep, and the sets of real images beside them, all measured by one run of
  the held-out protocol (the same draws): 200 images per set against a random half of the 400 held-out digits."""
  from scorejax import datasets
  from scorejax.evaluation import digits_classifier, quality

  workdir = str(tmp_path_factory.mktemp("panel"))
  fields = {"training.n_iters": 2, "training.snapshot_freq": 2, "eval.stats_dir": STATS["dir"]}
  config = override(digits.get_config("ncsn"), **PANEL, **fields)
  train(config, workdir, print_fn=quiet)
  config = override(config, **{"training.n_iters": 600, "training.snapshot_freq": 300, "eval.begin_step": 0})
  train(config, workdir, print_fn=quiet)
  lines = []
  evaluate(config, workdir, print_fn=lines.append)
  # The classifier trained for `untrained` (the same data and seed) serves this run from the shared stats_dir.
  assert not any(line.startswith("digits classifier:") for line in lines), lines
  features = {}
  for name, step in (("untrained", 2), ("weak", 300), ("trained", 600)):
    with np.load(os.path.join(workdir, "eval", f"samples_{step}", "batch_00000.npz")) as batch:
      features[name] = {"features": batch["features"], "logits": batch["logits"]}
  ds = datasets.get_dataset("digits")
  network, _ = digits_classifier.load_or_train(
    classifier_dir(config.eval, workdir), ds.train / 16, ds.train_labels, ds.test / 16, ds.test_labels
  )
  rng = np.random.default_rng(0)
  train_images = ds.train[:600] / 16
  noisy = np.clip(train_images + rng.normal(0, 0.25, train_images.shape), 0, 1)
  sets = {"training copies": network.extract(train_images), "noisy": network.extract(noisy)}
  for c in range(10):
    sets[f"without {c}"] = network.extract(train_images[ds.train_labels[:600] != c])
  features.update({k: {"features": f, "logits": lg} for k, (f, lg) in sets.items()})
  held_out = dict(zip(("features", "logits"), network.extract(ds.test / 16)))
  train_features = network.extract(ds.train / 16)[0]
  result = quality.held_out_protocol(features, held_out, train_features, num_draws=10, seed=0)
  for name in ("held_out_floor", *features):
    e = result[name]
    print(
      f"{name:16s} FID {e['fid']:7.1f} +- {e['fid_std']:5.1f}  KID {e['kid']:8.0f} +- {e['kid_std']:5.0f}  "
      f"copy share {e['copy_share']:.3f}  Z {e['copying_z']:6.1f}  flagged {e['copying_flagged']}"
    )
  return result


def spread(*entries, metric):
  """Twice the draw-to-draw standard deviations of `entries`, combined."""
  return 2 * np.sqrt(sum(e[f"{metric}_std"] ** 2 for e in entries))


@pytest.mark.parametrize("metric", ["fid", "kid"])
def test_the_panel_ranks_real_data_first_then_models_by_training(panel, metric):
  floor, trained, weak, untrained = (panel[k] for k in ("held_out_floor", "trained", "weak", "untrained"))
  assert panel["count"] == 200 and all(panel[k]["num_samples"] == 200 for k in ("trained", "held_out_floor"))
  # Unseen real digits are not worse than a trained model's samples beyond their spread (here far better).
  assert floor[metric] <= trained[metric] + spread(floor, trained, metric=metric)
  # Training ranks models: 600 steps better than 300, better than 2, each beyond the spread.
  assert trained[metric] + spread(trained, weak, metric=metric) < weak[metric]
  assert weak[metric] + spread(weak, untrained, metric=metric) < untrained[metric]
  # Memorization is not better than real data beyond the spread: copies of training digits sit at the floor.
  copies = panel["training copies"]
  assert copies[metric] >= floor[metric] - spread(copies, floor, metric=metric)


@pytest.mark.parametrize("metric", ["fid", "kid"])
def test_the_panel_ranks_clean_digits_above_noisy_ones_and_a_full_set_above_one_missing_a_class(panel, metric):
  copies, noisy = panel["training copies"], panel["noisy"]
  assert copies[metric] + spread(copies, noisy, metric=metric) < noisy[metric]  # pixel noise of std 0.25
  # Each set without one class against the set of all classes, drawn from the same training digits, over the same
  # draws: worse in the mean for every class. Not beyond the spread of a single draw for every class: removing an
  # 8 moved FID by +8 (std 5-7) and KID by +92 (std 130-150).
  for c in range(10):
    assert panel[f"without {c}"][metric] > copies[metric], c


def test_the_panel_flags_training_copies_and_nothing_else(panel):
  assert panel["training copies"]["copying_flagged"] and panel["training copies"]["copy_share"] == 1
  for name in ("held_out_floor", "trained", "weak", "untrained", "noisy"):
    assert not panel[name]["copying_flagged"], name
  floor = panel["held_out_floor"]  # its share is the calibration quantile, 5%, within sampling error
  assert abs(floor["copy_share"] - 0.05) < 0.03 and abs(floor["copying_z"]) < 2
