"""XLA:CPU formulation of `jaxcnn.conv.max_pool` for non-overlapping, unpadded windows: a reshape + max
with a custom gradient to the first maximum of each window (row-major), the numbers of XLA's
`reduce_window` and `select_and_scatter`, which XLA:CPU runs slower (bench/README.md)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _offsets(x: jax.Array, ws: tuple[int, ...]):
  """The window's offsets in row-major order, each `[batch, *counts, channels]` (a strided slice)."""
  counts = [n // w for n, w in zip(x.shape[1:-1], ws)]
  for k in np.ndindex(*ws):
    idx = tuple(slice(o, o + c * w, w) for o, c, w in zip(k, counts, ws))
    yield x[(slice(None), *idx, slice(None))]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool_tiles(x: jax.Array, ws: tuple[int, ...]) -> jax.Array:
  n = len(ws)
  counts = [d // w for d, w in zip(x.shape[1:-1], ws)]
  x = x[(slice(None), *[slice(0, c * w) for c, w in zip(counts, ws)], slice(None))]
  tiled = x.reshape(x.shape[0], *[d for c, w in zip(counts, ws) for d in (c, w)], x.shape[-1])
  return jnp.max(tiled, axis=tuple(2 + 2 * i for i in range(n)))


def max_pool_tiles_fwd(x, ws):
  y = max_pool_tiles(x, ws)
  return y, (x, y)


def max_pool_tiles_bwd(ws, res, g):
  x, y = res
  n = len(ws)
  found = jnp.zeros(y.shape, bool)
  parts = []
  for xk in _offsets(x, ws):  # the first maximum in row-major order takes the gradient
    take = jnp.logical_and(xk == y, jnp.logical_not(found))
    found = jnp.logical_or(found, take)
    parts.append(jnp.where(take, g, jnp.zeros_like(g)))
  counts = y.shape[1:-1]
  dx = jnp.stack(parts).reshape(*ws, *y.shape)        # [*ws, batch, *counts, C]
  order = [n] + [a for i in range(n) for a in (n + 1 + i, i)] + [2 * n + 1]
  dx = dx.transpose(order).reshape(y.shape[0], *[c * w for c, w in zip(counts, ws)], y.shape[-1])
  pad = [(0, 0)] + [(0, d - c * w) for d, c, w in zip(x.shape[1:-1], counts, ws)] + [(0, 0)]
  return (jnp.pad(dx, pad),)


max_pool_tiles.defvjp(max_pool_tiles_fwd, max_pool_tiles_bwd)
