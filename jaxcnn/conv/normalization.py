"""Batch normalisation (Ioffe & Szegedy 2015) as a pure function, exact under padding and devices.

Statistics are sums and counts: with a validity `mask` and a named device axis they are reduced with
`psum`, so the mean and variance are those of the *global* batch of valid positions, whatever the
split across devices and however many padded rows a device holds (Flax's own BatchNorm averages
per-device means, which is not exact when devices hold different numbers of valid rows).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, mean: jax.Array, var: jax.Array, *,
               train: bool, momentum: float = 0.99, epsilon: float = 1e-3,
               mask: jax.Array | None = None, axis_name: str | None = None):
  """Normalises the last axis of `x` `[..., channels]`.

  Args:
    scale, bias, mean, var: `[channels]`; `mean`/`var` are the running statistics.
    train: use batch statistics (and return updated running ones) instead of the running statistics.
    mask: optional boolean `x.shape[:-1]` (or a prefix of it, broadcast over the rest): which positions
      are real data; padded positions do not enter the statistics.
    axis_name: a mapped device axis (pmap/shard_map) to reduce the statistics over.
  Returns:
    `(y, (new_mean, new_var))`; in eval mode the running statistics are returned unchanged.
  """
  if not train:
    y = (x - mean) * jax.lax.rsqrt(var + epsilon) * scale + bias
    return y.astype(x.dtype), (mean, var)
  xf = x.astype(jnp.float32)
  axes = tuple(range(x.ndim - 1))
  if mask is None:
    w = jnp.ones(x.shape[:-1] + (1,), jnp.float32)
  else:
    m = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    w = jnp.broadcast_to(m, x.shape[:-1] + (1,)).astype(jnp.float32)
  sums = (jnp.sum(w, axes), jnp.sum(xf * w, axes), jnp.sum(jnp.square(xf) * w, axes))
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  count, s1, s2 = sums
  count = jnp.maximum(count, 1.0)
  batch_mean = s1 / count
  batch_var = jnp.maximum(s2 / count - jnp.square(batch_mean), 0.0)
  y = (xf - batch_mean) * jax.lax.rsqrt(batch_var + epsilon) * scale + bias
  new_mean = momentum * mean + (1.0 - momentum) * batch_mean
  new_var = momentum * var + (1.0 - momentum) * batch_var
  return y.astype(x.dtype), (new_mean, new_var)


class BatchNorm(nn.Module):
  """Thin module over `batch_norm`. Defaults are Keras's (momentum 0.99, epsilon 1e-3)."""
  momentum: float = 0.99
  epsilon: float = 1e-3
  axis_name: str | None = None
  scale_init: nn.initializers.Initializer = nn.initializers.ones_init()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", self.scale_init, (c,))
    bias = self.param("bias", nn.initializers.zeros_init(), (c,))
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
    # During init there is no mapped axis; statistics are only reduced across devices when training.
    axis_name = None if self.is_initializing() else self.axis_name
    y, (mean, var) = batch_norm(x, scale, bias, ra_mean.value, ra_var.value, train=train,
                                momentum=self.momentum, epsilon=self.epsilon, mask=mask,
                                axis_name=axis_name)
    if train and not self.is_initializing():
      ra_mean.value, ra_var.value = mean, var
    return y
