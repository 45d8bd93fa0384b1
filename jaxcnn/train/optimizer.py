"""Optax optimizer and per-step learning-rate schedule from the config."""
from __future__ import annotations

import optax

from jaxcnn.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "plateau", "cosine", "warmup_cosine", "step", "piecewise")


def make_schedule(cfg_schedule, base_lr: float, total_steps: int, steps_per_epoch: int):
  """A per-step schedule. "plateau" is constant here: its epoch-level decisions are taken by
  `jaxcnn.train.plateau.Plateau` and applied through the state's `lr_scale`."""
  name = cfg_schedule.name
  if name in ("constant", "plateau"):
    return optax.constant_schedule(base_lr)
  if name == "cosine":
    return optax.cosine_decay_schedule(base_lr, max(total_steps, 1))
  if name == "warmup_cosine":
    warmup = int(cfg_schedule.get("warmup_epochs", 0) * steps_per_epoch)
    return optax.warmup_cosine_decay_schedule(0.0, base_lr, max(warmup, 1), max(total_steps, warmup + 1))
  if name == "step":
    every = int(cfg_schedule.get("every_epochs", 30) * steps_per_epoch)
    return optax.exponential_decay(base_lr, max(every, 1), cfg_schedule.get("factor", 0.1),
                                   staircase=True)
  if name == "piecewise":  # multiply by `factor` at each of `boundaries_epochs` (He et al. 2016)
    bounds = [int(round(e * steps_per_epoch)) for e in cfg_schedule.get("boundaries_epochs", ())]
    sched = optax.piecewise_constant_schedule(
        base_lr, {b: cfg_schedule.get("factor", 0.1) for b in bounds if b > 0})
    warmup = int(cfg_schedule.get("warmup_epochs", 0) * steps_per_epoch)
    if warmup <= 0:
      return sched
    # A linear warm-up from a tenth of the rate (He et al. 2016 start ResNet-110 at lr/10).
    return optax.join_schedules(
        [optax.linear_schedule(0.1 * base_lr, base_lr, warmup),
         lambda step: sched(step + warmup)], [warmup])
  raise ConfigError(f"Unknown config.schedule.name {name!r}. Available: {', '.join(SCHEDULES)}")


def make_optimizer(cfg_opt, schedule) -> optax.GradientTransformation:
  """The learning rate is applied last in every optimizer here, so multiplying the update by the
  state's `lr_scale` is exactly multiplying the learning rate."""
  name = cfg_opt.name
  if name == "adam":
    return optax.adam(schedule, b1=cfg_opt.b1, b2=cfg_opt.b2, eps=cfg_opt.eps)
  if name == "adamw":
    return optax.adamw(schedule, b1=cfg_opt.b1, b2=cfg_opt.b2, eps=cfg_opt.eps,
                       weight_decay=cfg_opt.weight_decay)
  if name == "sgd":
    tx = optax.sgd(schedule, momentum=cfg_opt.momentum or None, nesterov=cfg_opt.get("nesterov", False))
    if cfg_opt.weight_decay:
      tx = optax.chain(optax.add_decayed_weights(cfg_opt.weight_decay), tx)
    return tx
  raise ConfigError(f"Unknown config.optimizer.name {name!r}. Available: {', '.join(OPTIMIZERS)}")
