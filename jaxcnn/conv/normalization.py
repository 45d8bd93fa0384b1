"""Batch normalisation (Ioffe & Szegedy 2015) as a pure function, exact under padding and devices.

Statistics are sums and counts: with a validity `mask` and a named device axis they are reduced with
`psum`, so the mean and variance are those of the *global* batch of valid positions, whatever the
split across devices and however many padded rows a device holds (Flax's own BatchNorm averages
per-device means, which is not exact when devices hold different numbers of valid rows).

A bias added just before batch normalisation (Keras's `Conv1D` -> `BatchNormalization`, as in Wang et
al.'s FCN and ResNet) cancels in training: `BN(x + b) = BN(x)` for the batch's own statistics, so its
gradient is zero, but only up to rounding, and Adam's `m / sqrt(v)` turns that rounding noise (which
differs with the CPU's vector width and the devices' reduction order) into steps of the learning rate's
size: the bias drifted by up to 0.12 in 750 steps and the running mean lagged it. `input_bias=b` takes
`x` without the bias and `b` apart: training normalises `x` (the same output) and adds `b` to the
running mean only; inference computes `x + b - mean`. The bias keeps its place among the parameters
(the reference's parameter count and weight layout), its gradient is exactly zero, and Adam leaves it
where it was initialised.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, mean: jax.Array, var: jax.Array, *,
               train: bool, momentum: float = 0.99, epsilon: float = 1e-3,
               mask: jax.Array | None = None, axis_name: str | None = None,
               input_bias: jax.Array | None = None):
  """Normalises the last axis of `x` `[..., channels]`.

  Args:
    scale, bias, mean, var: `[channels]`; `mean`/`var` are the running statistics.
    train: use batch statistics (and return updated running ones) instead of the running statistics.
    mask: optional boolean `x.shape[:-1]` (or a prefix of it, broadcast over the rest): which positions
      are real data; padded positions do not enter the statistics.
    axis_name: a mapped device axis (pmap/shard_map) to reduce the statistics over.
    input_bias: optional `[channels]`: the bias of the layer before, which `x` does not include (see
      the module doc): the result is that of normalising `x + input_bias`, with a zero gradient for it.
  Returns:
    `(y, (new_mean, new_var))`; in eval mode the running statistics are returned unchanged.
  """
  if not train:
    if input_bias is not None:
      x = x + input_bias.astype(x.dtype)
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
  if input_bias is not None:  # the statistics of x + b; the output above does not depend on b
    batch_mean = batch_mean + jax.lax.stop_gradient(input_bias).astype(jnp.float32)
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
  def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None,
               input_bias: jax.Array | None = None) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", self.scale_init, (c,))
    bias = self.param("bias", nn.initializers.zeros_init(), (c,))
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
    # During init there is no mapped axis; statistics are only reduced across devices when training.
    axis_name = None if self.is_initializing() else self.axis_name
    y, (mean, var) = batch_norm(x, scale, bias, ra_mean.value, ra_var.value, train=train,
                                momentum=self.momentum, epsilon=self.epsilon, mask=mask,
                                axis_name=axis_name, input_bias=input_bias)
    if train and not self.is_initializing():
      ra_mean.value, ra_var.value = mean, var
    return y
