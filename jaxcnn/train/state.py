"""The train state: a plain pytree of arrays, the same on every device."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: optimizer steps taken
  params: Any
  batch_stats: Any         # BatchNorm running statistics ({} for models without)
  opt_state: Any
  rng: jax.Array           # raw uint32 PRNG key; per-step keys are fold_in(rng, step)
  lr_scale: jax.Array      # float32 scalar multiplying the optimizer's updates (plateau schedule)


def init_model(model, example: dict[str, np.ndarray], rng: jax.Array):
  """Initialises `model` on one example (batch of 1). Returns `(params, batch_stats)`."""
  x = jnp.asarray(example["x"])[None]
  variables = jax.jit(lambda r, x: model.init(r, x, train=False))(rng, x)
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
