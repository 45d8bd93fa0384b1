"""A run's runtime, shared by training and the other modes: the components, the train state (fresh,
from pretrained weights, or restored), the optimizer, the parallel step functions, the checkpoints, and
evaluation on every eval split."""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import registry
from jaxcnn.data import pipeline
from jaxcnn.train import step as step_lib
from jaxcnn.train.checkpoint import CheckpointFormatError, Checkpointer
from jaxcnn.train.components import build_components, config_kwargs, global_batch_size, round_up
from jaxcnn.train.optimizer import make_optimizer, make_schedule
from jaxcnn.train.parallel import Parallel
from jaxcnn.train.start import check_frozen, freeze, frozen_names, load_pretrained
from jaxcnn.train.state import create_train_state

# The largest eval split (preprocessed inputs, bytes) that stays on the devices between evaluations.
EVAL_CACHE_BYTES = 1 << 30


class Runtime:
  """Everything a run needs, built from the config (shared by training and `--mode=eval`)."""

  def __init__(self, config, workdir: str, devices=None):
    self.config, self.workdir = config, workdir
    self.c = build_components(config)
    ds = self.c.dataset
    self.num_train = len(ds.train)
    self.batch_size = global_batch_size(config, self.num_train)
    self.steps_per_epoch = pipeline.steps_per_epoch(self.num_train, self.batch_size)
    self.total_steps = int(config.train.epochs) * self.steps_per_epoch
    self.schedule = make_schedule(config.schedule, config.optimizer.learning_rate, self.total_steps,
                                  self.steps_per_epoch)
    self.frozen = frozen_names(config)
    self.tx = freeze(make_optimizer(config.optimizer, self.schedule), self.frozen)
    self.par = Parallel(
        config.parallel,
        functools.partial(step_lib.train_step, model=self.c.model, task=self.c.task, tx=self.tx,
                          frozen=self.frozen),
        functools.partial(step_lib.eval_step, model=self.c.init_model, task=self.c.task),
        devices)
    # A batch that does not divide over the devices (the paper's 5 on 8) runs in rows rounded up to
    # them, the extra rows masked: the same numbers as the bare batch on one device.
    self.rows_per_step = round_up(self.batch_size, self.par.num_devices)
    self.eval_batch_size = round_up(int(config.train.eval_batch_size), self.par.num_devices)
    self.proc = dict(process_index=jax.process_index(), process_count=jax.process_count())
    # The train state's shapes and dtypes, traced (nothing initialised or compiled): what a checkpoint is
    # restored into. The fresh state (`self.state`, initialised and loaded with `config.model.pretrained`)
    # is made only when a run needs it: `--mode=eval` / `predict` and a resumed run never do.
    self.abstract_state = self._build(lambda: jax.eval_shape(
        lambda: create_train_state(self.c.init_model, self.tx, ds.example(), config.seed)))
    self._state, self.pretrained = None, None
    check_frozen(self.frozen, self.abstract_state.params)
    self.ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.checkpoint.keep)
    self._eval_cache: dict[str, list] = {}
    self._predict_fn = None
    self._host_eval_cache: dict[str, list] = {}
    self._predict_step = None
    self._coco_gt: dict[str, dict] = {}

  def _build(self, make):
    try:
      return make()
    except ValueError as e:  # the model's own check of its arguments (e.g. filters vs kernel_sizes)
      raise registry.ConfigError(f"model {self.config.model.name!r} cannot be built from config.model "
                                 f"({', '.join(f'{k}={v}' for k, v in config_kwargs(self.config.model).items())}): "
                                 f"{str(e).splitlines()[0]}") from None

  @property
  def state(self):
    """The fresh train state (initialised on first use, with `config.model.pretrained` loaded), or the
    state a resumed run assigned."""
    if self._state is None:
      def create():
        return self._build(lambda: create_train_state(self.c.init_model, self.tx, self.c.dataset.example(),
                                                      self.config.seed))
      if self.config.model.get("pretrained"):
        self._state, self.pretrained = load_pretrained(self.abstract_state, self.c.init_model, self.config,
                                                       self.tx, create)
      else:
        self._state = create()
    return self._state

  @state.setter
  def state(self, value):
    self._state = value

  def state_template(self):
    """Zeros of the train state's shapes and dtypes (host memory, untouched pages): what checkpoints are
    restored into."""
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), self.abstract_state)

  def restore_latest(self, mode: str):
    """`(step, state)` of the newest checkpoint, for `--mode=<mode>`; a clear error when there is none."""
    step = self.ckpt.latest_step()
    no_checkpoint = (f"No checkpoint in {self.ckpt.directory}. Train first (same command without "
                     f"--mode={mode}) or point --workdir at a trained run.")
    if step is None:
      raise FileNotFoundError(no_checkpoint)
    try:
      step, state, _ = self.ckpt.restore(self.state_template(), None)
    except CheckpointFormatError:
      raise
    except (ValueError, KeyError, TypeError) as e:
      raise registry.ConfigError(self._mismatch(self.ckpt.latest_step(), mode, e)) from None
    if step is None:
      raise FileNotFoundError(no_checkpoint)
    return step, state

  def _mismatch(self, step: int, mode: str, err: Exception) -> str:
    """Why a checkpoint does not fit this config: the config values it was trained with that differ."""
    saved = self.ckpt.saved_config(step)
    head = (f"--mode={mode}: checkpoint step {step} in {self.ckpt.directory} does not fit this config's "
            "model/optimizer")
    if saved is None:
      return f"{head} ({type(err).__name__}: {str(err)[:300]})"

    def flat(d, prefix=""):
      out = {}
      for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
      return out
    now, then = flat(self.config.to_dict()), flat(saved)
    diffs = [f"--config.{k}={then[k]} (now {now.get(k)})" for k in sorted(then)
             if k.split(".")[0] in ("model", "optimizer", "dataset") and now.get(k) != then[k]
             and not (isinstance(now.get(k), (list, tuple)) and list(now[k]) == then[k])]
    return (f"{head}. It was trained with {', '.join(diffs) or 'the same values'}: pass the training "
            "run's --config overrides.")

  def predictions(self, state) -> dict[str, dict[str, list]]:
    """Class probabilities and labels of every eval split, in order: `{split: {"probs", "labels"}}`
    (host-side, one device; for `config.report.save_predictions`, e.g. to average an ensemble)."""
    if self._predict_fn is None:
      model = self.c.init_model
      self._predict_fn = jax.jit(lambda v, b: jax.nn.softmax(
          model.apply(v, b["x"], train=False, mask=step_lib.model_mask(b)).astype(jnp.float32), -1))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    out = {}
    for split, source in self.c.dataset.evals.items():
      if split not in self._host_eval_cache:
        self._host_eval_cache[split] = list(pipeline.eval_batches(source, self.c.dataset.preprocess,
                                                                  batch_size=self.eval_batch_size))
      probs, labels = [], []
      for b in self._host_eval_cache[split]:
        keep = np.asarray(b["mask"], bool)
        probs.append(np.asarray(jax.device_get(self._predict_fn(variables, b)))[keep])
        labels.append(np.asarray(b["label"])[keep])
      out[split] = {"probs": np.concatenate(probs).round(6).tolist(),
                    "labels": np.concatenate(labels).astype(int).tolist()}
    return out

  def evaluate(self, dstate, *, write: bool = False, progress=None) -> dict[str, float]:
    """Metrics on every eval split, as `{"<split>/<metric>": value}`. `write`: tasks that evaluate on
    the host (COCO) also write their results files into the workdir (process 0). `progress(split,
    done, total)` is called after each batch.

    A split whose preprocessed inputs fit in `EVAL_CACHE_BYTES` is put on the devices once and kept
    there (training evaluates it every epoch); a larger one (ImageNet's 50,000 validation images are
    30 GB as float32) is streamed, its images decoded in `config.train.num_threads` threads."""
    out = {}
    ds = self.c.dataset
    for split, source in ds.evals.items():
      if self.c.task.host_eval:
        out.update({f"{split}/{k}": v for k, v in self._host_evaluate(dstate, split, write).items()})
        continue
      total = pipeline.steps_per_epoch(len(source), self.eval_batch_size)
      if split in self._eval_cache:
        batches = self._eval_cache[split]
      else:
        example = ds.preprocess(source[0])
        size = len(source) * sum(np.asarray(v).nbytes for v in example.values())
        batches = (self.par.put_batch(b) for b in pipeline.eval_batches(
            source, ds.preprocess, batch_size=self.eval_batch_size,
            num_threads=int(self.config.train.get("num_threads", 0)), **self.proc))
        if size <= EVAL_CACHE_BYTES:
          batches = self._eval_cache[split] = list(batches)
      sums = None
      for done, b in enumerate(batches, 1):
        m = self.par.eval_step(dstate, b)
        sums = m if sums is None else jax.tree.map(lambda a, b: a + b, sums, m)
        if progress is not None:
          progress(split, done, total)
      for k, v in self.c.task.summarize(jax.device_get(sums)).items():
        out[f"{split}/{k}"] = v
    return out


  def _host_evaluate(self, dstate, split: str, write: bool) -> dict:
    """A task's host-side evaluation (instance segmentation: COCO AP) of one eval split."""
    task, ds = self.c.task, self.c.dataset
    if self._predict_step is None:
      self._predict_step = self.par.predictor(task.predict_body(self.c.init_model))
    if split not in self._coco_gt:
      self._coco_gt[split] = ds.coco_ground_truth(split)
    # Streamed, not cached on the devices: COCO's 5000 validation images at 1344 x 1344 are 108 GB.
    batches = pipeline.eval_batches(ds.evals[split], ds.preprocess, batch_size=self.eval_batch_size, **self.proc)
    # A generator: each batch's detections become COCO results (pasted, RLE) before the next is run.
    detections = (self._predict_step(dstate, self.par.put_batch(b)) for b in batches)
    return task.evaluate(self._coco_gt[split], detections, split=split, workdir=self.workdir,
                         write=write and jax.process_index() == 0)
