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
  # An exponential moving average of `params` and `batch_stats` (`config.train.ema_decay` > 0), as
  # {"params", "batch_stats"}; None (no leaves: a checkpoint without it) when off.
  ema: Any = None


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


def train_state(params, batch_stats, optimizer, seed: int, ema: bool = False) -> TrainState:
  """The train state at step 0 of `params` and `batch_stats` (a fresh optimizer state; with `ema`, their
  moving average starting at them)."""
  average = {"params": params, "batch_stats": batch_stats}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=optimizer.init(params), rng=_rngs(seed)[1],
                    lr_scale=jnp.ones((), jnp.float32),
                    ema=jax.tree.map(jnp.array, average) if ema else None)  # a copy: the steps donate both


def create_train_state(model, optimizer, example, seed: int, ema: bool = False) -> TrainState:
  params, batch_stats = init_model(model, example, _rngs(seed)[0])
  return train_state(params, batch_stats, optimizer, seed, ema)


def ema_weights(state: TrainState) -> TrainState:
  """`state` with its moving average as the weights (what the EMA evaluations and --checkpoint=ema use)."""
  return state.replace(params=state.ema["params"], batch_stats=state.ema["batch_stats"])


def num_params(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))
