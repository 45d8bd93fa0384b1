"""Checkpoints with orbax: the train state, the grain iterator state and the host-side loop state
(plateau schedule, selection tracker, partial epoch sums), plus the resolved config and versions.

Writes are synchronous and orbax commits a step directory atomically (temporary name, then rename), so
a run killed while saving still has its previous checkpoint. A newest checkpoint that cannot be read
anyway (files truncated or lost after the commit) is set aside with a warning and the run resumes from
the one before it.
"""
from __future__ import annotations

import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

import jaxcnn
from jaxcnn.errors import ConfigError

FORMAT_VERSION = 1


class CheckpointFormatError(ConfigError):
  """A checkpoint this run cannot continue: another jaxcnn format version, another number of processes."""


def _stderr(message: str) -> None:
  import sys
  print(message, file=sys.stderr, flush=True)


class Checkpointer:
  """The run's checkpoints (`directory`: the newest `keep`) and, beside them, the weights of the epoch
  `report.select_by` picks (`directory`_best: one checkpoint, written only when the selection moved)."""

  def __init__(self, directory: str, keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.best_directory = self.directory + "_best"
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False))
    self._best = None

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  @property
  def best(self):
    """The best checkpoint's manager (its folder is made by the first `save_best`)."""
    if self._best is None:
      self._best = ocp.CheckpointManager(
          self.best_directory, options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                                                    enable_async_checkpointing=False))
    return self._best

  def best_step(self) -> int | None:
    """The step of the best checkpoint, or None when the run kept none."""
    return self.best.latest_step() if os.path.isdir(self.best_directory) else None

  def save_best(self, step: int, weights: dict, selected: dict) -> None:
    """Writes `weights` (`{"params", "batch_stats"}`) as the best checkpoint, with `selected` (the epoch,
    the selection metric and its value). orbax commits it atomically and then removes the previous one:
    a run killed while writing it leaves the previous best readable. A step already kept (a resumed run
    that trained the same steps again, to the same weights) is left as it is."""
    if os.path.isdir(self.best_directory) and step in self.best.all_steps():
      return
    loop = dict(selected=selected, format_version=FORMAT_VERSION, jaxcnn_version=jaxcnn.__version__)
    args = dict(state=ocp.args.StandardSave(jax.tree.map(np.asarray, weights)), loop=ocp.args.JsonSave(loop))
    self.best.save(step, args=ocp.args.Composite(**args), force=True)
    self.best.wait_until_finished()

  def restore_best_weights(self, weights_template):
    """`(step, weights, loop)` of the best checkpoint (`loop["selected"]`: which epoch and why)."""
    step = self.best_step()
    if step is None:
      raise FileNotFoundError(f"No best checkpoint in {self.best_directory}")
    return (step, *self._restore_weights(step, weights_template, self.best, self.best_directory))

  def save(self, step: int, state, data_iter, loop: dict) -> None:
    loop = dict(loop, format_version=FORMAT_VERSION, jaxcnn_version=jaxcnn.__version__)
    state = jax.tree.map(np.asarray, state)
    args = dict(state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(loop))
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)
    self.manager.wait_until_finished()

  def restore(self, state_template, data_iter, step: int | None = None, *, warn=None):
    """Returns `(step, state, loop)` of checkpoint `step`, or of the newest readable one.

    A checkpoint that cannot be read at all (truncated or missing files: a disk that filled up, a copy
    cut short) is moved to `<directory>.corrupt/<step>` with a warning (`warn(message)`, default: stderr)
    and the next older one is tried. A checkpoint that reads but does not fit `state_template` (another
    model or optimizer) is not corruption: that error is raised as it is.
    """
    def read(s):
      if data_iter is not None:  # evaluation needs no data position: any process count reads the state
        self._check_process_count(s)
      return self._restore(s, state_template, data_iter)
    return self._newest_readable(step, data_iter, warn, read)

  def restore_weights(self, weights_template, step: int | None = None, *, warn=None):
    """`(step, weights, loop)` like `restore`, reading only the state's entries that `weights_template`
    names (`{"params": ..., "batch_stats": ...}`): the model's weights without the optimizer's state,
    for `--mode=eval/predict/cam`, which build no optimizer."""
    return self._newest_readable(step, None, warn, lambda s: self._restore_weights(s, weights_template))

  def _newest_readable(self, step, data_iter, warn, read):
    """`(step, *read(step))` of checkpoint `step` or of the newest readable one (see `restore`)."""
    steps = [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"No checkpoint in {self.directory}")
    for s in steps:
      try:
        return (s, *read(s))
      except CheckpointFormatError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        if step is not None or self._readable(s, data_iter):
          raise
        moved = self._set_aside(s)
        older = [t for t in steps if t < s]
        (warn or _stderr)(f"warning: checkpoint step {s} in {self.directory} cannot be read "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); moved "
                          f"it to {moved}. " + (f"Falling back to step {older[0]}." if older else
                                                "No older checkpoint: starting from scratch."))
    return None, None, None

  def _restore(self, step: int, state_template, data_iter):
    template = jax.tree.map(np.asarray, state_template)
    args = dict(state=ocp.args.StandardRestore(template), loop=ocp.args.JsonRestore())
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    _check_shapes(template, restored["state"])
    return restored["state"], self._checked_loop(step, restored["loop"])

  def _restore_weights(self, step: int, weights_template, manager=None, directory: str | None = None):
    manager, directory = manager or self.manager, directory or self.directory
    template = jax.tree.map(np.asarray, weights_template)
    loop = self._checked_loop(step, manager.restore(step, args=ocp.args.Composite(
        loop=ocp.args.JsonRestore()))["loop"])
    # the "state" item's arrays by name, those of the template only (orbax's partial restore)
    restored = ocp.PyTreeCheckpointer().restore(
        os.path.join(directory, str(step), "state"),
        args=ocp.args.PyTreeRestore(template, restore_args=ocp.checkpoint_utils.construct_restore_args(template),
                                    partial_restore=True))
    _check_shapes(template, restored)
    return restored, loop

  def _checked_loop(self, step: int, loop: dict) -> dict:
    if loop.get("format_version") != FORMAT_VERSION:
      raise CheckpointFormatError(f"Checkpoint {self.directory}/{step} has format version "
                                  f"{loop.get('format_version')}, this jaxcnn reads {FORMAT_VERSION}.")
    return loop

  def _check_process_count(self, step: int) -> None:
    """The input pipeline's position is saved per process (`process_<i>-of-<n>.json`): a run resumed with
    another number of processes cannot continue the same data stream."""
    import re
    folder = os.path.join(self.directory, str(step), "data")
    if not os.path.isdir(folder):
      return
    counts = {int(m.group(1)) for f in os.listdir(folder) if (m := re.fullmatch(r"process_\d+-of-(\d+)\.json", f))}
    if counts and jax.process_count() not in counts:
      n = counts.pop()
      raise CheckpointFormatError(
          f"Checkpoint step {step} in {self.directory} was written by a run of {n} processes; this run has "
          f"{jax.process_count()}. Resume with {n} processes (--num_processes={n}), or start a new --workdir.")

  def _readable(self, step: int, data_iter=None) -> bool:
    """Whether checkpoint `step` reads without a template (so a failure with one is a mismatch)."""
    args = dict(state=ocp.args.StandardRestore(), loop=ocp.args.JsonRestore())
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      self.manager.restore(step, args=ocp.args.Composite(**args))
      return True
    except Exception:  # pylint: disable=broad-except
      return False

  def _set_aside(self, step: int) -> str:
    import shutil
    dest = os.path.join(self.directory + ".corrupt", str(step))
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      if os.path.exists(dest):
        shutil.rmtree(dest)
      shutil.move(os.path.join(self.directory, str(step)), dest)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"checkpoint {step} set aside")
    self.manager.reload()
    return dest

  def saved_config(self, step: int) -> dict | None:
    """The resolved config (as a dict) saved with checkpoint `step`, or None if it cannot be read."""
    import json
    try:
      loop = self.manager.restore(step, args=ocp.args.Composite(loop=ocp.args.JsonRestore()))["loop"]
      return json.loads(loop["config"])
    except Exception:  # pylint: disable=broad-except
      return None

  def close(self):
    self.manager.close()
    if self._best is not None:
      self._best.close()


def _check_shapes(template, restored) -> None:
  """orbax restores the saved arrays even when their shapes differ from the template's: compare."""
  want = jax.tree_util.tree_leaves_with_path(template)
  got = jax.tree.leaves(restored)
  for (path, w), g in zip(want, got, strict=True):
    if np.shape(w) != np.shape(g):
      raise ValueError(f"{jax.tree_util.keystr(path)} has shape {np.shape(g)} in the checkpoint, "
                       f"{np.shape(w)} in this model")
