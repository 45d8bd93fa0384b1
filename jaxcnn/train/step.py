"""The pure train and eval step bodies.

Each runs on one device's share of the global batch inside a mapped context with the device axis named
`axis_name` ("data"): gradients, metric sums and BatchNorm statistics are reduced over it with `psum`,
so the result is the same for any number of devices. `jaxcnn.train.parallel` maps them with `pmap` or
`jit(shard_map)`.

A batch is a dict of `x` (model input), `label`, `mask` (`[batch]`, False for padding rows) and
optionally `valid` (`[batch, length]`, False for padded time steps of variable-length inputs).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from jaxcnn.train.start import is_frozen, split
from jaxcnn.train.state import TrainState


FIRST_BAD_LOSS, FIRST_BAD_GRAD = "first_nonfinite_loss_step", "first_nonfinite_grad_step"
NEVER = 2**31 - 1


def _step_if(bad, step):
  return jnp.where(bad, step + 1, NEVER).astype(jnp.int32)


def accumulate(sums, metrics):
  """Adds step metrics to running sums (`sums` None: the first step); first-bad-step entries take the
  minimum."""
  if sums is None:
    return metrics
  return {k: jnp.minimum(v, metrics[k]) if k in (FIRST_BAD_LOSS, FIRST_BAD_GRAD) else v + metrics[k]
          for k, v in sums.items()}


def model_mask(batch):
  """What the model sees as valid: examples `[batch]`, or positions `[batch, length]`."""
  if "valid" in batch:
    return jnp.logical_and(batch["valid"], batch["mask"][:, None])
  return batch["mask"]


def train_step(state: TrainState, batch, *, model, task, tx: optax.GradientTransformation,
               axis_name: str = "data", frozen: tuple[str, ...] = (), ema_decay: float = 0.0):
  """One optimizer step on the global batch: `(state, batch) -> (state, metric sums)`. The parameters
  and BatchNorm statistics in `frozen` (`jaxcnn.train.start.is_frozen`) stay as they are. With
  `ema_decay` (and `state.ema`), their moving average follows: `ema = d * ema + (1 - d) * new`, BatchNorm
  statistics included (as timm's ModelEmaV3 and torchvision's ExponentialMovingAverage keep them)."""
  weights = batch["mask"].astype(jnp.float32)
  count = jnp.maximum(jax.lax.psum(jnp.sum(weights), axis_name), 1.0)
  rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), jax.lax.axis_index(axis_name))

  # Tasks whose model computes its own losses (Mask R-CNN samples anchors and RoIs against the ground
  # truth) pass the batch and a key to it: `task.train_inputs(batch, rng)` -> extra keyword arguments.
  extra = task.train_inputs(batch, rng)

  # Gradients of the trained parameters only: the frozen modules' are never computed, and the backward
  # pass ends at the lowest module that trains (with the stem and res2 frozen, it never enters them).
  trained, flat = split(state.params, frozen)

  def loss_fn(trained):
    params = traverse_util.unflatten_dict({**flat, **trained}, sep="/")
    logits, new_vars = model.apply(
        {"params": params, "batch_stats": state.batch_stats}, batch["x"], train=True,
        mask=model_mask(batch), rngs={"dropout": rng}, mutable=["batch_stats"], **extra)
    # This device's share of the global mean loss; the psum of the gradients adds the shares up.
    return jnp.sum(task.loss(logits, batch) * weights) / count, (logits, new_vars)

  (_, (logits, new_vars)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trained)
  grads = jax.lax.psum(grads, axis_name)
  grad_norm = optax.tree.norm(grads)  # of the trained parameters
  grads = traverse_util.unflatten_dict({p: grads[p] if p in grads else jnp.zeros_like(v) for p, v in flat.items()},
                                       sep="/")
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  updates = jax.tree.map(lambda u: u * state.lr_scale.astype(u.dtype), updates)
  params = optax.apply_updates(state.params, updates)
  metrics = jax.lax.psum(task.metric_sums(logits, batch, weights), axis_name)
  metrics["grad_norm"] = grad_norm
  # The first step (1-based) whose loss / gradients were NaN or Inf; NEVER when finite. Accumulated
  # over steps with `min` (see `accumulate`), so the trainer can name the step without a sync per step.
  metrics[FIRST_BAD_LOSS] = _step_if(~jnp.isfinite(metrics["loss"]), state.step)
  metrics[FIRST_BAD_GRAD] = _step_if(~jnp.isfinite(metrics["grad_norm"]), state.step)
  batch_stats = new_vars.get("batch_stats", state.batch_stats)
  if frozen:
    before = traverse_util.flatten_dict(state.batch_stats, sep="/")
    batch_stats = traverse_util.unflatten_dict(
        {p: before[p] if is_frozen(p, frozen) else v
         for p, v in traverse_util.flatten_dict(batch_stats, sep="/").items()}, sep="/")
  ema = state.ema
  if ema is not None and ema_decay:
    ema = jax.tree.map(lambda e, v: (ema_decay * e + (1 - ema_decay) * v).astype(e.dtype), ema,
                       {"params": params, "batch_stats": batch_stats})
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            batch_stats=batch_stats, ema=ema)
  return new_state, metrics


def eval_step(state: TrainState, batch, *, model, task, axis_name: str = "data"):
  """Metric sums (with a confusion matrix) of the model in inference mode on the global batch."""
  logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, batch["x"],
                       train=False, mask=model_mask(batch))
  return jax.lax.psum(task.metric_sums(logits, batch, batch["mask"], confusion=True), axis_name)
