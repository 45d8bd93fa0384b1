"""A run's runtime, shared by training and the other modes: the components, the train state (fresh,
from pretrained weights, or restored), the optimizer, the parallel step functions, the checkpoints, and
evaluation on every eval split."""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import numpy as np
import optax

from jaxcnn import registry
from jaxcnn.data import pipeline
from jaxcnn.data.base import made
from jaxcnn.train import step as step_lib
from jaxcnn.train.checkpoint import CheckpointFormatError, Checkpointer
from jaxcnn.train.components import build_components, config_kwargs, global_batch_size, round_up
from jaxcnn.train.optimizer import make_optimizer, make_schedule
from jaxcnn.train.parallel import Parallel
from jaxcnn.train.start import check_frozen, freeze, frozen_names, load_pretrained
from jaxcnn.train.start import ema_on
from jaxcnn.train.state import create_train_state, ema_weights

# The largest eval split (preprocessed inputs, bytes) that stays on the devices between evaluations.
EVAL_CACHE_BYTES = 1 << 30


@dataclasses.dataclass
class Steps:
  """The run's step functions and what shapes them, built from the config, the model and task, and two
  facts of the data set (its size and one example's shapes): the same for a training run
  (`Runtime`) and for `--mode=compile` (jaxcnn/train/preflight.py), which has no data."""
  batch_size: int          # the global batch
  rows_per_step: int       # the global batch rounded up to the devices (the extra rows masked)
  eval_batch_size: int     # rounded up to the devices
  steps_per_epoch: int
  total_steps: int
  schedule: Any
  frozen: tuple
  tx: Any
  par: Parallel
  abstract_state: Any      # the train state's shapes and dtypes (traced; nothing initialised)
  accumulate: int = 1      # micro-batches (train steps) per optimizer update (config.train.accumulate_steps)


def model_error(config, e: Exception) -> registry.ConfigError:
  """The model's own check of its arguments (e.g. filters vs kernel_sizes), as a config mistake."""
  return registry.ConfigError(f"model {config.model.name!r} cannot be built from config.model "
                              f"({', '.join(f'{k}={v}' for k, v in config_kwargs(config.model).items())}): "
                              f"{str(e).splitlines()[0]}")


def build_steps(config, model, init_model, task, num_train: int, example: dict, devices=None, *,
                inference: bool = False) -> Steps:
  """The optimizer, its schedule and the parallel train / eval steps of the config on `devices`. With
  `inference` (--mode=eval/predict/cam) no optimizer and no schedule: the state has no optimizer state."""
  batch_size = global_batch_size(config, num_train)
  steps_per_epoch = pipeline.steps_per_epoch(num_train, batch_size)
  total_steps = int(config.train.epochs) * steps_per_epoch
  frozen = frozen_names(config)
  k = int(config.train.get("accumulate_steps", 1))
  if k < 1 or steps_per_epoch % k:
    raise registry.ConfigError(
        f"config.train.accumulate_steps={k} must be >= 1 and divide the {steps_per_epoch} steps of an epoch "
        f"(batch {batch_size} of {num_train} examples), so that every epoch ends with an update; divisors: "
        + ", ".join(str(d) for d in range(1, steps_per_epoch + 1) if steps_per_epoch % d == 0)[:200])
  if inference:
    schedule, tx = None, optax.identity()
  else:
    # the schedule counts optimizer updates: one per `k` micro-batches
    schedule = make_schedule(config.schedule, config.optimizer.learning_rate, total_steps // k,
                             steps_per_epoch // k)
    tx = freeze(make_optimizer(config.optimizer, schedule), frozen)
    if k > 1:  # the mean gradient of k micro-batches, applied every k-th step (optax.MultiSteps)
      tx = optax.MultiSteps(tx, every_k_schedule=k).gradient_transformation()
  par = Parallel(
      config.parallel,
      functools.partial(step_lib.train_step, model=model, task=task, tx=tx, frozen=frozen,
                        ema_decay=float(config.train.get("ema_decay", 0.0))),
      functools.partial(step_lib.eval_step, model=init_model, task=task),
      devices)
  # A batch that does not divide over the devices (the paper's 5 on 8) runs in rows rounded up to
  # them, the extra rows masked: the same numbers as the bare batch on one device.
  rows_per_step = round_up(batch_size, par.num_devices)
  eval_batch_size = round_up(int(config.train.eval_batch_size), par.num_devices)
  # The train state's shapes and dtypes, traced (nothing initialised or compiled): what a checkpoint is
  # restored into, and what the steps are compiled for.
  try:
    abstract_state = jax.eval_shape(lambda: create_train_state(init_model, tx, example, config.seed,
                                                               ema=ema_on(config)))
  except ValueError as e:  # the model's own check of its arguments (e.g. filters vs kernel_sizes)
    raise model_error(config, e) from None
  check_frozen(frozen, abstract_state.params)
  return Steps(batch_size=batch_size, rows_per_step=rows_per_step, eval_batch_size=eval_batch_size,
               steps_per_epoch=steps_per_epoch, total_steps=total_steps, schedule=schedule, frozen=frozen,
               tx=tx, par=par, abstract_state=abstract_state, accumulate=k)


class Runtime:
  """Everything a run needs, built from the config (shared by training and the other modes). With
  `inference=True` (--mode=eval/predict/cam) it builds no optimizer and restores only the model's
  weights from a checkpoint, not the optimizer's state: a run evaluates with any optimizer config."""

  def __init__(self, config, workdir: str, devices=None, *, inference: bool = False):
    self.config, self.workdir, self.inference = config, workdir, inference
    self.c = build_components(config)
    ds = self.c.dataset
    # inference reads no training example: a training split made on first use stays unmade (0 here)
    self.num_train = len(ds.train) if not inference or made(ds.train) else 0
    s = build_steps(config, self.c.model, self.c.init_model, self.c.task, self.num_train, ds.example(),
                    devices, inference=inference)
    self.steps = s
    self.batch_size, self.rows_per_step, self.eval_batch_size = s.batch_size, s.rows_per_step, s.eval_batch_size
    self.steps_per_epoch, self.total_steps, self.schedule = s.steps_per_epoch, s.total_steps, s.schedule
    self.frozen, self.tx, self.par, self.abstract_state = s.frozen, s.tx, s.par, s.abstract_state
    self.accumulate = s.accumulate
    self.proc = dict(process_index=jax.process_index(), process_count=jax.process_count())
    # The fresh state (`self.state`, initialised and loaded with `config.model.pretrained`) is made only
    # when a run needs it: `--mode=eval` / `predict` and a resumed run never do.
    self._state, self.pretrained = None, None
    self.restored = None  # which checkpoint restore_latest read, in words
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
      raise model_error(self.config, e) from None

  @property
  def state(self):
    """The fresh train state (initialised on first use, with `config.model.pretrained` loaded), or the
    state a resumed run assigned."""
    if self._state is None:
      def create():
        return self._build(lambda: create_train_state(self.c.init_model, self.tx, self.c.dataset.example(),
                                                      self.config.seed, ema=ema_on(self.config)))
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
    """`(step, state)` of the checkpoint `--mode=<mode>` uses, with a clear error when there is none:
    training resumes from the newest; the inference modes take `config.checkpoint.restore` ("auto": the
    best checkpoint when the run kept one, else the newest; "best", "latest", "ema" (the newest
    checkpoint's moving average of the weights) or a step number).
    `self.restored` says which, in words."""
    which = str(self.config.checkpoint.get("restore", "auto")) if self.inference else "latest"
    step = self.ckpt.latest_step()
    no_checkpoint = (f"No checkpoint in {self.ckpt.directory}. Train first (same command without "
                     f"--mode={mode}) or point --workdir at a trained run.")
    best = self.ckpt.best_step() if which in ("auto", "best") else None
    if which == "best" and best is None:
      raise FileNotFoundError(f"--checkpoint=best: no best checkpoint in {self.ckpt.best_directory} (the run "
                              "kept none: config.report.select_by is 'final', or config.checkpoint.keep_best "
                              "was off); use --checkpoint=latest")
    if step is None and best is None:
      raise FileNotFoundError(no_checkpoint)
    template = self.state_template()
    weights_template = {"params": template.params, "batch_stats": template.batch_stats}
    if which == "ema" and template.ema is None:
      raise registry.ConfigError("--checkpoint=ema: this config keeps no moving average of the weights "
                                 "(config.train.ema_decay is 0); pass the training run's --config.train.ema_decay")
    try:
      if best is not None:
        step, weights, loop = self.ckpt.restore_best_weights(weights_template)
        sel = loop.get("selected", {})
        self.restored = (f"the best checkpoint (step {step}, epoch {sel.get('epoch')}: "
                         f"{sel.get('select_by')} {sel.get('value', float('nan')):.4g}"
                         + (", the moving average of the weights" if sel.get("weights") == "ema" else "")
                         + f") in {self.ckpt.best_directory}")
        return step, template.replace(step=np.asarray(step, np.int32), ema=None, **weights)
      if which.isdigit() and int(which) not in self.ckpt.manager.all_steps():
        raise FileNotFoundError(f"--checkpoint={which}: no checkpoint of that step in {self.ckpt.directory} "
                                f"(it has steps {sorted(self.ckpt.manager.all_steps())}; the newest "
                                f"config.checkpoint.keep are kept)")
      at = int(which) if which.isdigit() else None
      if self.inference:  # the weights alone (and their moving average), without an optimizer state
        if template.ema is not None:
          weights_template["ema"] = template.ema
        step, weights, _ = self.ckpt.restore_weights(weights_template, step=at)
        state = None if step is None else template.replace(step=np.asarray(step, np.int32), **weights)
        if state is not None and which == "ema":  # the moving average as the weights
          state = ema_weights(state).replace(ema=None)
      else:
        step, state, _ = self.ckpt.restore(template, None)
    except CheckpointFormatError:
      raise
    except (ValueError, KeyError, TypeError) as e:
      raise registry.ConfigError(self.mismatch_message(self.ckpt.latest_step(), mode, e)) from None
    if step is None:
      raise FileNotFoundError(no_checkpoint)
    what = ("the moving average of the weights of the latest checkpoint" if which == "ema"
            else "the latest checkpoint" if at is None else "the checkpoint")
    self.restored = f"{what} (step {step}) in {self.ckpt.directory}"
    return step, state

  def mismatch_message(self, step: int, mode: str, err: Exception) -> str:
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
      task = self.c.task
      self._predict_fn = jax.jit(lambda v, b: task.probabilities(
          model.apply(v, b["x"], train=False, mask=step_lib.model_mask(b))))
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
    30 GB as float32) is streamed, its images decoded in `config.train.num_threads` threads.

    A state with a moving average of its weights (`config.train.ema_decay`) is evaluated with both: the
    average's metrics are `ema_<split>/<metric>` (`config.report.select_by` may name them)."""
    out = self._evaluate(dstate, write, progress)
    if dstate.ema is not None:
      out.update({f"ema_{k}": v for k, v in self._evaluate(ema_weights(dstate), False, progress).items()})
    return out

  def _evaluate(self, dstate, write: bool, progress) -> dict[str, float]:
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
