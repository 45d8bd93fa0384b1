"""Two interchangeable ways to run the step bodies on all devices, selected by `config.parallel`:

- "jit": `jax.jit(jax.shard_map(body, mesh=Mesh(devices, ("data",))))`: the state is one global array
  replicated with `NamedSharding(mesh, P())`, the batch one global array sharded `P("data")`
  (built from each process's rows with `jax.make_array_from_process_local_data`).
- "pmap": `jax.pmap(body, axis_name="data")`: the state is replicated with a leading device axis, the
  batch reshaped to `[local_devices, per_device, ...]`.

Both take and return host-side (unreplicated) states through `put_state` / `get_state`, so a
checkpoint written under one mode restores under the other.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcnn.errors import ConfigError

MODES = ("jit", "pmap")
AXIS = "data"


class Parallel:

  def __init__(self, mode: str, train_body, eval_body, devices=None):
    if mode not in MODES:
      raise ConfigError(f"config.parallel={mode!r} is not one of {', '.join(MODES)}")
    self.mode = mode
    self.devices = list(devices if devices is not None else jax.devices())
    self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]
    self.num_devices = len(self.devices)
    if mode == "jit":
      self.mesh = Mesh(np.array(self.devices), (AXIS,))
      self._repl = NamedSharding(self.mesh, P())
      self._data = NamedSharding(self.mesh, P(AXIS))
      # check_vma=False: the body reduces over the axis itself (psum of gradients and BatchNorm sums),
      # exactly as under pmap. With replication tracking on, autodiff would also psum the gradient of
      # the replicated parameters, counting every device's contribution twice.
      smap = functools.partial(jax.shard_map, mesh=self.mesh, in_specs=(P(), P(AXIS)), check_vma=False)
      self._train = jax.jit(smap(train_body, out_specs=(P(), P())), donate_argnums=0)
      self._eval = jax.jit(smap(eval_body, out_specs=P()))
    else:
      self._train = jax.pmap(train_body, axis_name=AXIS, devices=self.devices, donate_argnums=0)
      self._eval = jax.pmap(eval_body, axis_name=AXIS, devices=self.devices)

  def put_state(self, state):
    if self.mode == "jit":
      return jax.device_put(state, self._repl)
    n = len(self.local_devices)
    return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), state)

  def get_state(self, state):
    if self.mode == "pmap":
      # The first local device's replica, copied from its shard ([1, ...]); `x[0]` would dispatch a
      # gather per leaf.
      return jax.tree.map(
          lambda x: np.asarray(x.addressable_data(0))[0] if isinstance(x, jax.Array) else x, state)
    return jax.device_get(state)

  def put_scalar(self, value, dtype=jnp.float32):
    return self.put_state(jnp.asarray(value, dtype))

  def put_batch(self, local_batch: dict[str, np.ndarray]):
    """`local_batch`: this process's rows of the global batch."""
    if self.mode == "jit":
      return jax.make_array_from_process_local_data(self._data, local_batch)
    n = len(self.local_devices)
    return jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), local_batch)

  def train_step(self, state, batch):
    state, metrics = self._train(state, batch)
    if self.mode == "pmap":
      metrics = jax.tree.map(lambda x: x[0], metrics)
    return state, metrics

  def predictor(self, body):
    """`(state, batch) -> outputs` of a per-row body (not reduced over devices, e.g. detections), as
    numpy arrays of the whole global batch on every process, rows in the global batch's order."""
    from jax.experimental import multihost_utils
    if self.mode == "jit":
      f = jax.jit(jax.shard_map(body, mesh=self.mesh, in_specs=(P(), P(AXIS)), out_specs=P(AXIS),
                                check_vma=False))

      def run(state, batch):
        out = f(state, batch)
        if jax.process_count() == 1:
          return jax.device_get(out)
        return multihost_utils.process_allgather(out, tiled=True)
      return run
    f = jax.pmap(body, axis_name=AXIS, devices=self.devices)

    def run_pmap(state, batch):
      out = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), jax.device_get(f(state, batch)))
      if jax.process_count() == 1:
        return out
      return multihost_utils.process_allgather(out, tiled=True)
    return run_pmap

  def eval_step(self, state, batch):
    metrics = self._eval(state, batch)
    if self.mode == "pmap":
      metrics = jax.tree.map(lambda x: x[0], metrics)
    return metrics
