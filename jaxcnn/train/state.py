"""The train state: a plain pytree of arrays, the same on every device."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.backends.xla_cpu import init_compile


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: optimizer steps taken
  params: Any
  batch_stats: Any         # BatchNorm running statistics ({} for models without)
  opt_state: Any
  rng: jax.Array           # raw uint32 PRNG key; per-step keys are fold_in(rng, step)
  lr_scale: jax.Array      # float32 scalar multiplying the optimizer's updates (plateau schedule)


def jit_init(model, rngs, *args, **kwargs):
  """`model.init(rngs, *args, **kwargs)`, jitted and compiled with the backend's init options (on CPU:
  the same values, compiled about 1.5-3x sooner; jaxcnn/backends/xla_cpu/init_compile.py). Traced
  (under eval_shape or an enclosing jit), nothing compiles here."""
  init = jax.jit(lambda r, *a: model.init(r, *a, **kwargs))
  if any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves((rngs, args))):
    return init(rngs, *args)
  return init.lower(rngs, *args).compile(init_compile.compiler_options(jax.default_backend()))(rngs, *args)


def init_model(model, example: dict[str, np.ndarray], rng: jax.Array):
  """Initialises `model` on one example (batch of 1). Returns `(params, batch_stats)`."""
  variables = jit_init(model, rng, jnp.asarray(example["x"])[None], train=False)
  return variables["params"], variables.get("batch_stats", {})


def _rngs(seed: int):
  """`(init_rng, state_rng)`: the model's initialisation key and the train state's own."""
  return jax.random.split(jax.random.PRNGKey(seed))


def train_state(params, batch_stats, optimizer, seed: int) -> TrainState:
  """The train state at step 0 of `params` and `batch_stats` (a fresh optimizer state)."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=optimizer.init(params), rng=_rngs(seed)[1],
                    lr_scale=jnp.ones((), jnp.float32))


def create_train_state(model, optimizer, example, seed: int) -> TrainState:
  params, batch_stats = init_model(model, example, _rngs(seed)[0])
  return train_state(params, batch_stats, optimizer, seed)


def num_params(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))
