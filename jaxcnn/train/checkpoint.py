"""Checkpoints with orbax: the train state, the grain iterator state and the host-side loop state
(plateau schedule, selection tracker, partial epoch sums), plus the resolved config and versions.

Writes are synchronous and orbax commits a step directory atomically (temporary name, then rename), so
a run killed while saving still has its previous checkpoint.
"""
from __future__ import annotations

import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

import jaxcnn

FORMAT_VERSION = 1


class Checkpointer:

  def __init__(self, directory: str, keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iter, loop: dict) -> None:
    loop = dict(loop, format_version=FORMAT_VERSION, jaxcnn_version=jaxcnn.__version__)
    state = jax.tree.map(np.asarray, state)
    args = dict(state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(loop))
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)
    self.manager.wait_until_finished()

  def restore(self, state_template, data_iter, step: int | None = None):
    """Returns `(state, loop)`; `data_iter` is moved to the saved position in place."""
    step = self.latest_step() if step is None else step
    template = jax.tree.map(np.asarray, state_template)
    args = dict(state=ocp.args.StandardRestore(template), loop=ocp.args.JsonRestore())
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    loop = restored["loop"]
    if loop.get("format_version") != FORMAT_VERSION:
      raise ValueError(f"Checkpoint {self.directory}/{step} has format version "
                       f"{loop.get('format_version')}, this jaxcnn reads {FORMAT_VERSION}.")
    return restored["state"], loop

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
