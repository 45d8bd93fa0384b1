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
    self._train_compiled = self._eval_compiled = self._train_shapes = self._eval_shapes = None

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
    step = self._train_compiled if self._matches(batch, self._train_shapes) else self._train
    state, metrics = step(state, batch)
    if self.mode == "pmap":
      metrics = jax.tree.map(lambda x: x[0], metrics)
    return state, metrics

  # ------------------------------------------------------------------ ahead of time: shapes, compiling
  def _pmap_rows(self) -> int:
    """The leading axis of pmap's arguments: this process's devices; every device of a slice compiled for
    from one process (`--mode=compile` for a multi-host TPU slice), which pmap then maps over them all."""
    return len(self.devices) if jax.process_count() == 1 else len(self.local_devices)

  def state_spec(self, abstract_state):
    """The device state's shapes as the steps take it (`put_state`'s): jit, the global arrays replicated
    over the mesh; pmap, a leading axis of this process's devices."""
    if self.mode == "jit":
      return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self._repl), abstract_state)
    n = self._pmap_rows()
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct((n,) + tuple(s.shape), s.dtype), abstract_state)

  def batch_spec(self, example: dict, rows: int):
    """A global batch of `rows` rows as the steps take it (`put_batch`'s) from one example's
    `{key: (shape, dtype)}` (jaxcnn.data.base.DataSpec), with the row `mask` the pipeline adds."""
    example = {**example, "mask": ((), "bool")}
    if self.mode == "jit":
      return {k: jax.ShapeDtypeStruct((rows, *shape), np.dtype(dtype), sharding=self._data)
              for k, (shape, dtype) in example.items()}
    n, per = self._pmap_rows(), rows // self.num_devices
    return {k: jax.ShapeDtypeStruct((n, per, *shape), np.dtype(dtype)) for k, (shape, dtype) in example.items()}

  def step_fn(self, program: str, body=None):
    """The jitted / pmapped function of "train", "eval" or "predict" (the per-row `body`): what the run
    calls, and what `.lower(state_spec, batch_spec).compile()` compiles ahead of time for whatever
    devices this `Parallel` was given (a TPU slice's too)."""
    return {"train": self._train, "eval": self._eval}.get(program) or self.rows_fn(body)

  def use_compiled(self, train=None, eval=None,  # pylint: disable=redefined-builtin
                   train_batch=None, eval_batch=None) -> None:
    """Runs the steps with executables compiled ahead of time (`lower(...).compile()`, checked against
    the devices' memory first: jaxcnn/train/preflight.py) for batches of the shapes they were compiled
    for (`batch_spec`s); a batch of other shapes (images of their own sizes) goes through `jax.jit` /
    `jax.pmap` as before."""
    shapes = lambda spec: {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in spec.items()}  # noqa: E731
    if train is not None:
      self._train_compiled, self._train_shapes = train, shapes(train_batch)
    if eval is not None:
      self._eval_compiled, self._eval_shapes = eval, shapes(eval_batch)

  @staticmethod
  def _matches(batch, shapes) -> bool:
    return shapes is not None and batch.keys() == shapes.keys() and all(
        (tuple(np.shape(v)), np.dtype(v.dtype)) == shapes[k] for k, v in batch.items())

  def rows_fn(self, body):
    """The jit(shard_map) / pmap function of a per-row body `(state, batch) -> rows`."""
    if self.mode == "jit":
      return jax.jit(jax.shard_map(body, mesh=self.mesh, in_specs=(P(), P(AXIS)), out_specs=P(AXIS),
                                   check_vma=False))
    return jax.pmap(body, axis_name=AXIS, devices=self.devices)

  def predictor(self, body):
    """`(state, batch) -> outputs` of a per-row body (not reduced over devices, e.g. detections), as
    numpy arrays of the whole global batch on every process, rows in the global batch's order."""
    from jax.experimental import multihost_utils
    f = self.rows_fn(body)
    if self.mode == "jit":
      def run(state, batch):
        out = f(state, batch)
        if jax.process_count() == 1:
          return jax.device_get(out)
        return multihost_utils.process_allgather(out, tiled=True)
      return run

    def run_pmap(state, batch):
      out = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), jax.device_get(f(state, batch)))
      if jax.process_count() == 1:
        return out
      return multihost_utils.process_allgather(out, tiled=True)
    return run_pmap

  def eval_step(self, state, batch):
    step = self._eval_compiled if self._matches(batch, self._eval_shapes) else self._eval
    metrics = step(state, batch)
    if self.mode == "pmap":
      metrics = jax.tree.map(lambda x: x[0], metrics)
    return metrics
