"""`Experiment`: what every mode shares, built once from a config: the network, SDE, loss, sampler and
optimizer (run/builders.py, run/optim.py), the device mesh, the data (loaded on first use: sampling needs
none) and the guidance of class-conditional samples.

Everything random derives from `config.seed` and the training step, and the batch of a step is a
pure function of the two (datasets/loader.py), so a run resumed from a checkpoint is bit-identical
to one that never stopped.
"""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from scorejax import control, datasets, models
from scorejax.losses.vdm import Denoiser, score_denoiser
from scorejax.models.utils import INPUT_TRANSFORMS
from scorejax.models.vdm import noise_fn, schedule_fn
from scorejax.run.data import load_dataset
from scorejax.run.errors import UserError, check_int
from scorejax.run.optim import TrainState
from scorejax.run.validate import ALL_CLASSES, validate_config

# Tags folded into the seed key so that each use of randomness has its own stream.
INIT, TRAIN, SAMPLE, EVAL = 0, 1, 2, 3


def seed_key(config, tag):
  return jax.random.fold_in(jax.random.key(config.seed), tag)


class Experiment:
  """The parts of a run that every mode shares: network, SDE, loss, sampler, optimizer, mesh, data."""

  def __init__(self, config, devices=None):
    self.config = config
    devices = list(jax.devices() if devices is None else devices)
    parts = validate_config(config, len(devices))
    self.shape, self.model, self._sde = parts.shape, parts.model, parts.sde
    # A classifier of noisy inputs (models/classifier.py) learns p(y | x_t) for classifier guidance.
    self.is_classifier, self.loss_fn, self.sampling_fn = parts.is_classifier, parts.loss_fn, parts.sampling_fn
    # A learned schedule (model.schedule) lives in the parameters: so do the SDE of the score and its sampler.
    self.learned_schedule, self.sde_of, self.sampling_fn_of = parts.learned_schedule, parts.sde_of, parts.sampling_fn_of
    self._score_fn_of = parts.score_fn_of
    self.is_image = len(self.shape) == 3
    self.num_classes = config.model.get("num_classes", 0)  # > 0: the network takes class labels
    self.optimizer, self.ema_decay = parts.optimizer, parts.ema_decay
    self.mesh = Mesh(np.array(devices), ("data",))
    self.replicated = NamedSharding(self.mesh, P())
    self.guiding_classifier, self.classifier_params = None, None  # set by `use_classifier`
    self.classifier_guidance_scale = None
    # `num` fixes the sample shape; replicated samples can be read on every host, not only their shard.
    self.sample = jax.jit(self._sample, static_argnums=2, out_shardings=self.replicated)

  @property
  def sde(self):
    """The SDE of a fixed schedule (`training.sde`); a learned schedule's is the parameters' own, `sde_of(params)`,
    which every mode of a score model reads (this one is read by classifiers of noisy inputs only)."""
    if self.learned_schedule:
      raise UserError(
        f"model.schedule={self.config.model.schedule!r}: the SDE is the parameters' own (GammaSDE of the learned "
        "schedule, Experiment.sde_of(params)), not training.sde"
      )
    return self._sde

  @functools.cached_property
  def dataset(self):
    """The data (run/data.py), loaded on first use: training, evaluation and inpainting read it."""
    return load_dataset(self.config)

  def preprocess(self, batch, rng):
    """A stored training batch to model inputs (scaling, centering, flip, dequantization), on device."""
    d = self.config.data
    return datasets.preprocess_batch(
      batch, rng, self.dataset.max_value, d.centered, d.random_flip, d.uniform_dequantization
    )

  def model_space(self, x):
    """Stored examples as model inputs, without augmentation (for evaluation and plots)."""
    return self.dataset.model_space(x, self.config.data.centered)

  def score_fn(self, params, train=False, rng=None):
    """`score_fn(x, t)` of the network with `params` (dropout on with `train`, drawn from `rng`)."""
    if self.is_classifier:
      raise UserError(
        f"model.name={self.config.model.name!r} is a classifier of noisy inputs, not a score model; it guides the "
        "samples of a score model: --mode=sample --workdir=<its run> --config.sampling.classifier_workdir=<this run>"
      )
    return self._score_fn_of(params, train=train, rng=rng)

  def denoiser(self, params, eps, train=False, rng=None, times="sde"):
    """VDM's model of the network with `params` (losses/vdm.py `Denoiser`), whose bound (Kingma et al. 2021, Eq. 17)
    the loss and `--mode=eval` compute: with a learned `model.schedule`, its noise prediction `noise_fn`
    (conditioned on `gamma / 2`) and its log-SNR `schedule_fn` on `[0, 1]`; otherwise the score `score_fn(params)`
    over `training.sde`'s log-SNRs on `[eps, T]`, `eps_hat = -std(t) s(x_t, t)`, its times drawn uniformly in the
    SDE's time or in log-SNR (`times`: `score_denoiser`)."""
    if self.learned_schedule:
      transform = INPUT_TRANSFORMS[self.config.model.input_transform]
      return Denoiser(noise_fn(self.model, params, train, rng, transform), schedule_fn(self.model, params))
    return score_denoiser(self.score_fn(params, train=train, rng=rng), self._sde, eps, times=times)

  def init_state(self):
    params = models.init_params(self.model, seed_key(self.config, INIT), self.shape)
    state = TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      ema_params=jax.tree_util.tree_map(jnp.copy, params),
      opt_state=self.optimizer.init(params),
      nan_step=jnp.full((), -1, jnp.int32),
    )
    return jax.device_put(state, self.replicated)

  def logits_fn(self, params, train=False, rng=None):
    """`logits_fn(x, t) -> (batch, num_classes)` of a classifier of noisy inputs with `params`."""
    return models.classifier.get_logits_fn(self.model, params, self.sde, train=train, rng=rng)

  def batch_loss(self, params, batch, rng):
    """The training loss of one stored batch (with its labels, `(batch, labels)`, where the model has classes):
    `training.loss` over the network's score (with a learned `model.schedule`, VDM's bound over the `Denoiser` of
    its noise prediction and its log-SNR, `noise_fn` and `schedule_fn`: Kingma et al. 2021, Eq. 17), with label
    dropout for a class-conditional network and EDM's augmentation with `data.augment_p > 0`, or a classifier's
    cross-entropy over noisy inputs. `rng` draws the augmentation, dropout, label dropout and the loss's noise."""
    images, labels = batch if self.num_classes else (batch, None)
    x = self.preprocess(images, jax.random.fold_in(rng, 2))
    if self.is_classifier:
      return self.loss_fn(
        self.logits_fn(params, True, jax.random.fold_in(rng, 1)), x, labels, jax.random.fold_in(rng, 0)
      )
    dropout = jax.random.fold_in(rng, 1)
    if self.learned_schedule:  # VDM's bound over the network's noise prediction and its schedule's log-SNR
      model = self.denoiser(params, self.config.training.eps, train=True, rng=dropout)
    else:
      model = self.score_fn(params, train=True, rng=dropout)

    def bind(**labels):  # the labels that the network takes, bound into the score (or noise) function
      if isinstance(model, Denoiser):
        return model._replace(eps_fn=functools.partial(model.eps_fn, **labels))
      return functools.partial(model, **labels)

    if labels is not None:
      # Label dropout (Ho & Salimans 2022): one network learns s(x, t, y) and, on the null label, s(x, t).
      dropped = jax.random.uniform(jax.random.fold_in(rng, 3), labels.shape) < self.config.training.label_dropout
      model = bind(labels=jnp.where(dropped, self.num_classes, labels).astype(jnp.int32))
    augment_p = self.config.data.get("augment_p", 0.0)
    if augment_p > 0:
      # EDM's non-leaking augmentation (Karras et al. 2022, App. F.2): the network learns s(x, t, a) for the
      # labels a of the augmentation drawn; sampling asks for a = 0, the data as it is.
      x, augment_labels = datasets.augment.augment(jax.random.fold_in(rng, 4), x, augment_p)
      model = bind(augment_labels=augment_labels)
    return self.loss_fn(model, x, jax.random.fold_in(rng, 0))

  def use_classifier(self, logits_fn_of, params, num_classes, guidance_scale=None):
    """Guide class-conditional sampling with a classifier of noisy inputs: `logits_fn_of(params)` its
    `logits_fn(x, t)` (run/classifier.py loads one from its run), with `guidance_scale` where
    `sampling.guidance_scale` is None: the scale that suits that classifier, saved with its run."""
    label = self.config.sampling.get("class_label", -1)
    check_int("sampling.class_label", label, ALL_CLASSES if self.num_classes else -1, num_classes - 1)
    self.guiding_classifier, self.classifier_params = logits_fn_of, jax.device_put(params, self.replicated)
    self.classifier_guidance_scale = guidance_scale

  @property
  def guidance_scale(self):
    """`w`: `sampling.guidance_scale`, or where it is None, the guiding classifier's own scale (classifier
    guidance) or 1 (classifier-free guidance; Ho & Salimans 2022 sample at w in [0.1, 4])."""
    scale = self.config.sampling.get("guidance_scale")
    if scale is None and self.guiding_classifier is not None:
      scale = self.classifier_guidance_scale
    return 1.0 if scale is None else float(scale)

  def sampling_score_fn(self, params, labels=None, classifier_params=None):
    """The score the sampler follows: the network's, or with class `labels` `(batch,)` a guided one,
    `w = sampling.guidance_scale` (control/guidance.py): with a classifier (`use_classifier`),
    `s(x, t) + w grad log p_phi(y | x, t)`; else the classifier-free `(1 + w) s(x, t, y) - w s(x, t, null)`."""
    score_fn = self.score_fn(params)
    if labels is None:
      return score_fn
    scale = self.guidance_scale
    if self.guiding_classifier is not None:
      log_prob_fn = control.class_log_prob(self.guiding_classifier(classifier_params))
      return control.classifier_guidance(score_fn, log_prob_fn, labels, scale)
    return control.classifier_free_guidance(score_fn, labels, scale, self.num_classes)

  def sample_labels(self, num):
    """The class label of each of `num` samples: `sampling.class_label`; with `ALL_CLASSES` every class of
    the model in turn, `0, 1, ..., num_classes - 1, 0, ...`; or None (-1): unconditional."""
    label = self.config.sampling.get("class_label", -1)
    if label == ALL_CLASSES:
      return (np.arange(num) % self.num_classes).astype(np.int32)
    return None if label < 0 else np.full((num,), label, np.int32)

  def _sample(self, params, rng, num, labels=None, classifier_params=None):
    """Draw `num` samples with `sampling.method` from `x_init ~ p_T` (the SDE's prior): one program.
    Returns the samples and the number of score evaluations per sample."""
    x_init = self.sde_of(params).prior_sample(jax.random.fold_in(rng, 0), (num,) + self.shape)
    if num % self.mesh.size == 0:
      x_init = jax.lax.with_sharding_constraint(x_init, NamedSharding(self.mesh, P("data")))
    score_fn = self.sampling_score_fn(params, labels, classifier_params)
    return self.sampling_fn_of(params)(score_fn, x_init, jax.random.fold_in(rng, 1))

  def generate(self, params, step, num=None, progress=None, labels=None):
    """`sampling.num_samples` samples (in chunks of `sampling.batch_size`) with the key of `step`, of the
    classes `labels` (`(num,)`; by default `sample_labels`). `progress(done, total, nfe, seconds)` is called
    after each chunk."""
    s = self.config.sampling
    num = s.num_samples if num is None else num
    labels = self.sample_labels(num) if labels is None else np.asarray(labels, np.int32)
    rng = jax.random.fold_in(seed_key(self.config, SAMPLE), step)
    chunks, t0 = [], time.perf_counter()
    for i, lo in enumerate(range(0, num, s.batch_size)):
      size = min(s.batch_size, num - lo)
      chunk_labels = None if labels is None else labels[lo : lo + size]
      x, nfe = self.sample(params, jax.random.fold_in(rng, i), size, chunk_labels, self.classifier_params)
      chunks.append(np.asarray(x))
      if progress is not None:
        progress(lo + len(x), num, float(np.mean(nfe)), time.perf_counter() - t0)
    return np.concatenate(chunks)
