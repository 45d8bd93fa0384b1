"""Pooling as pure functions."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def global_avg_pool(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Global average pooling (Lin et al. 2014): `[batch, *spatial, channels]` -> `[batch, channels]`.

  With `mask` (boolean `[batch, *spatial]`), only valid positions are averaged (variable-length series).
  """
  axes = tuple(range(1, x.ndim - 1))
  if mask is None:
    return jnp.mean(x, axis=axes)
  w = mask.astype(x.dtype)[..., None]
  return jnp.sum(x * w, axis=axes) / jnp.maximum(jnp.sum(w, axis=axes), 1)
