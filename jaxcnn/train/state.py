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


def init_model(model, example: dict[str, np.ndarray], rng: jax.Array):
  """Initialises `model` on one example (batch of 1). Returns `(params, batch_stats)`.

  Compiled with the backend's init options (on CPU: the same values, compiled about 1.5-3x sooner;
  jaxcnn/backends/xla_cpu/init_compile.py)."""
  x = jnp.asarray(example["x"])[None]
  init = jax.jit(lambda r, x: model.init(r, x, train=False))
  if isinstance(rng, jax.core.Tracer):  # traced (eval_shape, an enclosing jit): nothing compiles here
    variables = init(rng, x)
  else:
    variables = init.lower(rng, x).compile(init_compile.compiler_options(jax.default_backend()))(rng, x)
  return variables["params"], variables.get("batch_stats", {})


def create_train_state(model, optimizer, example, seed: int) -> TrainState:
  rng = jax.random.PRNGKey(seed)
  init_rng, state_rng = jax.random.split(rng)
  params, batch_stats = init_model(model, example, init_rng)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=optimizer.init(params), rng=state_rng,
                    lr_scale=jnp.ones((), jnp.float32))


def num_params(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))
