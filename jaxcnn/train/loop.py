"""The one training loop: config -> registry -> data -> model -> step -> checkpoint -> eval -> report.

Experiments differ only in their config: the model, data set and task are looked up by name.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time

import jax
import numpy as np

from jaxcnn import published, registry
from jaxcnn.backends.xla_cpu import policy, xla_setup
from jaxcnn.data import mixing, pipeline
from jaxcnn.train import preflight
from jaxcnn.train import step as step_lib
from jaxcnn.train.checkpoint import CheckpointFormatError, Checkpointer
from jaxcnn.train.figures import write_predictions
from jaxcnn.train.metrics_writer import MetricsWriter
from jaxcnn.train.plateau import Plateau
from jaxcnn.train.runtime import Runtime
from jaxcnn.train.state import num_params
from jaxcnn.train.step import FIRST_BAD_GRAD, FIRST_BAD_LOSS
from jaxcnn.train.workdir import (DiskFullError, WorkdirLock, check_workdir, check_writable, disk_full_message,
                                  is_disk_full, remove_partial_checkpoints)


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or Inf."""


def default_console():
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
  check_writable(workdir)
  primary = jax.process_index() == 0  # the other processes of a multi-process run share process 0's hold
  with WorkdirLock(workdir) if primary else contextlib.nullcontext():
    try:
      return _train_and_evaluate(config, workdir, devices=devices, interrupt_at_step=interrupt_at_step,
                                 console=console or default_console())
    except Exception as e:  # pylint: disable=broad-except
      if isinstance(e, DiskFullError) or not is_disk_full(e):  # a DiskFullError names its own folder
        raise
      ckpt_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
      removed = remove_partial_checkpoints(ckpt_dir)
      committed = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
      raise DiskFullError(disk_full_message(workdir, max(committed, default=None), ckpt_dir, removed)) from None


@dataclasses.dataclass
class LoopState:
  """What the loop carries from epoch to epoch, saved in every checkpoint (its `loop` record, JSON)."""
  selected: dict = dataclasses.field(default_factory=dict)  # the record of the epoch `select_by` picks
  final: dict = dataclasses.field(default_factory=dict)     # the last epoch's record
  epoch_sums: dict | None = None    # the epoch's metric sums so far (a checkpoint taken mid-epoch)
  train_time_s: float = 0.0
  plateau: dict | None = None       # the plateau schedule's state
  selected_predictions: dict | None = None  # class probabilities at the selected epoch
  config: str | None = None         # the resolved config (JSON)
  stopped_early: dict | None = None  # early stopping: the epoch it stopped at, the selected epoch, why

  def to_checkpoint(self) -> dict:
    return {k: v for k, v in dataclasses.asdict(self).items()
            if v is not None or k in ("epoch_sums",)}

  @classmethod
  def from_checkpoint(cls, saved: dict) -> "LoopState":
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in saved.items() if k in names})


class _Trainer:
  """One run of the loop over `rt`: its device state, data iterator, loop state and writers."""

  def __init__(self, rt: Runtime, workdir: str, console, interrupt_at_step: int | None):
    self.rt, self.workdir, self.console, self.interrupt_at_step = rt, workdir, console, interrupt_at_step
    self.config, self.ds, self.task, self.par = rt.config, rt.c.dataset, rt.c.task, rt.par
    self.epochs, self.spe = int(rt.config.train.epochs), rt.steps_per_epoch
    self.primary = jax.process_index() == 0  # process 0 writes metrics, reports and figures
    sched = rt.config.schedule
    self.plateau = (Plateau(rt.config.optimizer.learning_rate, factor=sched.factor, patience=sched.patience,
                            min_lr=sched.min_lr, min_delta=sched.min_delta)
                    if sched.name == "plateau" else None)
    self.data_iter = self.new_data_iter()
    self.state = LoopState()
    self.selected_state = None  # the selected epoch's state, until its probabilities are computed
    # the selected epoch's weights (host), until the next checkpoint writes them as the best one: the best
    # checkpoint on disk is never older than the selection the saved loop state records
    self.best_pending = None
    self.keep_best = bool(rt.config.checkpoint.get("keep_best", True)) and rt.config.report.select_by != "final"
    self.last: dict = {}
    self.signal = None

  def new_data_iter(self):
    rt, ds, config = self.rt, self.ds, self.config
    return pipeline.train_iterator(ds.train, ds.train_preprocess or ds.preprocess, batch_size=rt.batch_size,
                                   seed=config.seed, num_epochs=self.epochs,
                                   num_threads=config.train.num_threads, augment=ds.augment,
                                   rows=rt.rows_per_step, batch_augment=mixing.mixer(config, ds.num_classes),
                                   **rt.proc)

  # ------------------------------------------------------------------------------------------- resume
  def resume(self) -> int | None:
    """Restores the newest readable checkpoint (the train state, the data position, the loop state);
    returns its step, or None for a fresh start."""
    rt = self.rt
    if rt.ckpt.latest_step() is None:
      return None
    try:
      step, restored, saved = rt.ckpt.restore(
          rt.state_template(), self.data_iter, warn=lambda m: self.console.print(m, style="red", markup=False))
    except CheckpointFormatError:
      raise
    except (ValueError, KeyError, TypeError) as e:  # readable, but another model: say which values differ
      raise registry.ConfigError(rt.mismatch_message(rt.ckpt.latest_step(), "train", e)) from None
    if step is None:  # every checkpoint was unreadable: a failed attempt may have moved the iterator
      self.data_iter = self.new_data_iter()
      return None
    rt.state, self.state = restored, LoopState.from_checkpoint(saved)
    if self.plateau and self.state.plateau:
      self.plateau.load_state_dict(self.state.plateau)
    return step

  # --------------------------------------------------------------------------------------- checkpoint
  def save(self, dstate, step_done: int, partial_sums=None) -> None:
    if self.best_pending is not None:  # first: a run killed between the two saves resumes consistently
      self.rt.ckpt.save_best(*self.best_pending)
      self.best_pending = None
    if self.selected_state is not None:  # once per checkpoint, not at every improvement
      self.state.selected_predictions = self.rt.predictions(self.selected_state)
      self.selected_state = None
    self.state.epoch_sums = (None if partial_sums is None else
                             {k: np.asarray(v).tolist() for k, v in jax.device_get(partial_sums).items()})
    if self.plateau:
      self.state.plateau = self.plateau.state_dict()
    self.state.config = self.config.to_json()
    self.rt.ckpt.save(step_done, self.par.get_state(dstate), self.data_iter, self.state.to_checkpoint())

  # ---------------------------------------------------------------------------------------- epoch end
  def end_epoch(self, dstate, sums, done: int):
    """Metrics of the epoch that ended at step `done`, the plateau schedule, evaluation when due, the
    log line and the checkpoint. Returns `(dstate, record, progress description, lr)`."""
    config, rt, plateau = self.config, self.rt, self.plateau
    epoch = done // self.spe
    host = jax.device_get(sums)
    check_finite(host, self.spe, rt.ckpt)
    train = self.task.summarize(host)
    lr = float(rt.schedule((done - 1) // rt.accumulate)) * (plateau.scale if plateau else 1.0)
    record = {"epoch": epoch, "lr": lr, "grad_norm": float(host["grad_norm"]) / self.spe,
              **{f"train/{k}": v for k, v in train.items()}}
    if plateau:
      old = plateau.lr
      plateau.update(train["loss"])
      if plateau.lr != old:
        dstate = dstate.replace(lr_scale=self.par.put_scalar(plateau.scale))
    # The reported number is the eval metrics at the epoch where `select_by` is lowest. When it is a
    # training metric, evaluating exactly at the epochs that improve it gives the same selection as
    # evaluating every epoch, at a fraction of the cost.
    key = config.report.select_by  # "final": the paper reports the last epoch
    best = self.state.selected.get(key)
    improves = key != "final" and key in record and (best is None or record[key] < best)
    if (epoch % config.train.eval_every_epochs == 0 or epoch == self.epochs
        or (improves and config.train.eval_on_improvement)):
      record.update(rt.evaluate(dstate, write=True))
      if key != "final" and (best is None or record[key] < best):
        # Confusion matrices of up to 50 classes are kept for the report (ImageNet's are not).
        self.state.selected = {k: v for k, v in record.items() if "confusion" not in k or len(v) <= 50}
        if config.report.get("save_predictions"):
          self.selected_state = self.par.get_state(dstate)  # host copy; predicted at the next save
        if self.keep_best:
          host = self.selected_state or self.par.get_state(dstate)
          ema = key.startswith("ema_") and host.ema is not None  # an EMA metric selects the average
          weights = host.ema if ema else {"params": host.params, "batch_stats": host.batch_stats}
          self.best_pending = (done, weights, {"epoch": epoch, "select_by": key, "value": float(record[key]),
                                               "weights": "ema" if ema else "raw"})
    patience = int(config.train.get("early_stopping_patience", 0))
    chosen = self.state.selected.get("epoch")
    if patience and chosen is not None and epoch - chosen >= patience and epoch < self.epochs:
      self.state.stopped_early = {"epoch": epoch, "selected_epoch": chosen, "select_by": key, "patience": patience}
    self.state.final = self.last = record
    desc = f"epoch {epoch}/{self.epochs} loss {train['loss']:.4f}"
    desc += self.task.progress(record, list(self.ds.evals))
    return dstate, record, desc, lr

  # ------------------------------------------------------------------------------------------- result
  def result(self, dstate) -> dict:
    config, rt, ds = self.config, self.rt, self.ds
    final = self.state.final or self.last
    return {
        "experiment": config.get("experiment"), "task_kind": self.task.kind, "dataset": ds.name,
        "class_names": list(ds.class_names),
        "num_train": rt.num_train, "num_test": len(next(iter(ds.evals.values()))),
        "num_params": num_params(self.par.get_state(dstate).params), "batch_size": rt.batch_size,
        "steps_per_epoch": self.spe,
        "epochs_done": (self.state.stopped_early or {}).get("epoch", rt.total_steps // self.spe),
        "stopped_early": self.state.stopped_early,
        "wall_time_s": self.state.train_time_s,
        "selected": final if config.report.select_by == "final" else self.state.selected,
        "final": final, "data_note": ds.info.get("note"),
        **dict(zip(("paper", "paper_error"), published.for_config(config, num_classes=ds.num_classes))),
        "eval_splits": list(ds.evals), "eval_sizes": {k: len(v) for k, v in ds.evals.items()},
    }


def early_stop_line(stop: dict) -> str:
  """What the run says when early stopping ends it (and when it is launched again)."""
  return (f"Early stopping at epoch {stop['epoch']}: no improvement of {stop['select_by']} for "
          f"{stop['epoch'] - stop['selected_epoch']} epochs (config.train.early_stopping_patience="
          f"{stop['patience']}); the selected epoch is {stop['selected_epoch']}.")


def _header(rt: Runtime, console, workdir: str, params) -> None:
  config, ds, par = rt.config, rt.c.dataset, rt.par
  console.print(f"[bold]{config.get('experiment', 'jaxcnn')}[/bold]  data [cyan]{ds.name}[/cyan] "
                f"({rt.num_train} train, " + ", ".join(f"{len(s)} {k}" for k, s in ds.evals.items()) +
                f")  model [cyan]{config.model.name}[/cyan] ({num_params(params):,} params)")
  console.print(f"{par.num_devices} x {jax.devices()[0].platform} device(s), parallel={par.mode}, "
                + (f"over {jax.process_count()} processes, " if jax.process_count() > 1 else "")
                + f"precision {config.get('precision', 'float32')}, "
                + (f"{xla_setup.cpu_kernels()} convolutions, host malloc {policy.current().host_malloc}, "
                   if xla_setup.cpu_kernels() and policy.current().known else "") +
                f"global batch {rt.batch_size}" +
                (f" (in {rt.rows_per_step} rows over {par.num_devices} devices, "
                 f"{rt.rows_per_step - rt.batch_size} masked)" if rt.rows_per_step != rt.batch_size else "") +
                (f" x {rt.accumulate} accumulated (an update every {rt.accumulate} steps, of "
                 f"{rt.accumulate * rt.batch_size} examples)" if rt.accumulate > 1 else "") +
                f", {rt.steps_per_epoch} steps/epoch, {int(config.train.epochs)} epochs, workdir {workdir}")
  mix = [f"{name} alpha {config.train.get(key, 0.0):g}" for name, key in (("mixup", "mixup_alpha"),
                                                                         ("CutMix", "cutmix_alpha"))
         if config.train.get(key, 0.0) > 0]
  if config.train.get("randaugment_ops", 0):
    console.print(f"RandAugment: {config.train.randaugment_ops} operations at magnitude "
                  f"{config.train.get('randaugment_magnitude', 9)} of 31 (torchvision's), on the host", markup=False)
  if mix:
    switch = f" (CutMix with probability {config.train.get('mix_switch_prob', 0.5):g})" if len(mix) == 2 else ""
    console.print("batches mixed on the host: " + " or ".join(mix) + switch, markup=False)
  if xla_setup.cpu_kernels() and policy.current().describe():
    console.print(policy.current().describe(), markup=False)


def _train_and_evaluate(config, workdir: str, *, devices, interrupt_at_step, console) -> dict | None:
  # ------------------------------------------------------------------------------------ build, resume
  rt = Runtime(config, workdir, devices)
  ds, task, par = rt.c.dataset, rt.c.task, rt.par
  if rt.num_train == 0:
    raise registry.ConfigError(f"data set {ds.name} has no training examples"
                               + (f" ({ds.info['note']})" if ds.info.get("note") else "")
                               + ": train with a folder that has them, or use --mode=eval / --mode=predict")
  t = _Trainer(rt, workdir, console, interrupt_at_step)
  resumed = t.resume()
  start_step = 0 if resumed is None else int(rt.state.step)
  writer = (MetricsWriter(workdir, resume_step=start_step if resumed is not None else None) if t.primary
            else _NoWriter())
  _header(rt, console, workdir, rt.state.params)
  if rt.pretrained is not None and resumed is None:
    console.print(rt.pretrained["message"], markup=False)
  if resumed is not None:
    console.print(f"[yellow]Resuming from checkpoint at step {start_step} "
                  f"(epoch {start_step / t.spe:.2f}) in {rt.ckpt.directory}[/yellow]")
    if t.state.stopped_early:
      console.print(f"[yellow]This run stopped early; nothing more to train. {early_stop_line(t.state.stopped_early)}"
                    "[/yellow]")
  # The steps compiled now, for this run's shapes, and checked against the devices' memory: a step that
  # cannot fit stops the run here (DoesNotFitError, with the batch that fits), not in its first step.
  console.print(preflight.memory_line(*preflight.check_run(rt)), markup=False)
  dstate = par.put_state(rt.state)
  sums = (None if t.state.epoch_sums is None else
          {k: np.asarray(v) for k, v in t.state.epoch_sums.items()})

  def on_signal(signum, frame):  # preemption: finish the step, save, exit 128 + signal
    del frame
    t.signal = signum

  old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
  from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
      TimeRemainingColumn
  progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=console, transient=False)
  t_start, time_before = time.time(), t.state.train_time_s

  # ------------------------------------------------------------------------------------------ train
  try:
    with progress:
      bar = progress.add_task("training", total=rt.total_steps, completed=start_step)
      # a run that stopped early and is launched again trains no further
      for step in range(start_step, start_step if t.state.stopped_early else rt.total_steps):
        dstate, metrics = par.train_step(dstate, par.put_batch(next(t.data_iter)))
        sums = step_lib.accumulate(sums, metrics)
        progress.advance(bar)
        done = step + 1
        if done % 100 == 0 and done % t.spe:  # long epochs: stop soon after a NaN, not at the epoch's end
          check_finite(sums, t.spe, rt.ckpt)
        if done % t.spe == 0:
          dstate, record, desc, lr = t.end_epoch(dstate, sums, done)
          sums = None
          epoch = done // t.spe
          writer.write(done, {k: v for k, v in record.items() if "confusion" not in k})
          progress.update(bar, description=desc)
          if epoch % config.train.log_every_epochs == 0 or epoch == t.epochs:
            progress.console.print(desc + f" lr {lr:.2e}")
          t.state.train_time_s = time_before + time.time() - t_start
          if epoch % config.checkpoint.every_epochs == 0 or epoch == t.epochs or t.state.stopped_early:
            t.save(dstate, done)
          if t.state.stopped_early:
            progress.console.print(early_stop_line(t.state.stopped_early))
            break
        if interrupt_at_step is not None and done == interrupt_at_step:
          return None
        if t.signal is not None:
          if sums is not None:  # never save a state that has gone NaN
            check_finite(sums, t.spe, rt.ckpt)
          t.state.train_time_s = time_before + time.time() - t_start
          if rt.ckpt.latest_step() != done:  # not when the epoch's checkpoint was just written
            t.save(dstate, done, sums)
          console.print(f"[yellow]Stopped by signal {t.signal} at step {done}; checkpoint saved. "
                        "Run the same command again to resume.[/yellow]")
          raise SystemExit(128 + t.signal)
  finally:
    for s, h in old_handlers.items():
      signal.signal(s, h)
    _close(writer.close, rt.ckpt.close)

  # ----------------------------------------------------------------------------------- report, figures
  result = t.result(dstate)
  if not t.primary:
    return result
  if t.state.selected_predictions:
    result["predictions"] = write_predictions(workdir, t.state.selected_predictions,
                                              result["selected"].get("epoch"))
  with open(os.path.join(workdir, "result.json"), "w") as f:
    json.dump(result, f, indent=1)
  history = MetricsWriter.read(writer.path)
  figures = task.figures(rt, par.get_state(dstate), workdir)
  if figures:
    result["figures"] = figures
  result["report"] = task.write_report(workdir, config, result, history)
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


