"""Pooling (max, average, global) in 1D/2D/3D and the squeeze-and-excitation block, as pure functions.

All channels-last `[batch, *spatial, channels]`; windows and strides are per spatial axis.
"""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.conv.nd import Padding, cpu_form, current_impl, ntuple, on_cpu, resolve_padding


def _window(x: jax.Array, window, stride, padding):
  n = x.ndim - 2
  if n not in (1, 2, 3):
    raise ValueError(f"pooling expects [batch, *spatial, channels] with 1-3 spatial axes; got {x.shape}")
  ws = ntuple(window, n, "window")
  ss = ws if stride is None else ntuple(stride, n, "stride")
  if isinstance(padding, str) and padding.upper() == "CEIL":
    pads = [ceil_mode_padding(d, w, s) for d, w, s in zip(x.shape[1:-1], ws, ss)]
  else:
    pads = resolve_padding(padding, x.shape[1:-1], ws, ss)
  return (1, *ws, 1), (1, *ss, 1), [(0, 0), *pads, (0, 0)]


def ceil_mode_padding(n: int, window: int, stride: int) -> tuple[int, int]:
  """Padding `(0, extra)` that gives PyTorch's `ceil_mode=True` (without padding): `ceil((n - window) /
  stride) + 1` windows, the last one allowed to run past the end. "SAME" agrees with it on even sizes
  for 3x3/2 windows but gives one window more on odd ones (15 -> 8 instead of 7)."""
  out = -(-(n - window) // stride) + 1
  return 0, max((out - 1) * stride + window - n, 0)


def max_pool(x: jax.Array, window, stride=None, padding: Padding = "VALID") -> jax.Array:
  """`y[i] = max_k x[i*s + k]` over the window (padding never wins: it is -inf). Stride defaults to
  the window (non-overlapping pooling). `padding="CEIL"`: PyTorch's `ceil_mode=True`
  (`ceil_mode_padding`).

  The gradient goes to the first maximum of each window (row-major), as XLA's `select_and_scatter`
  and PyTorch give it. In a program compiled for the CPU, non-overlapping unpadded pooling takes the
  same numbers from jaxcnn/backends/xla_cpu/pooling.py (a reshape + max, which XLA:CPU runs faster;
  `jaxcnn.conv.nd.on_cpu`)."""
  dims, strides, pads = _window(x, window, stride, padding)

  def reduce_window(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, strides, pads)
  if (dims == strides and all(p == (0, 0) for p in pads)
      and all(d <= n for d, n in zip(dims[1:-1], x.shape[1:-1]))
      and current_impl() != "lax"):  # jaxcnn.arithmetic traces with "lax": one measurable op
    # in a program compiled for the CPU only (jaxcnn.conv.nd.on_cpu); a default_impl block naming
    # XLA:CPU's formulations takes them on any platform. None: the backend keeps XLA's own.
    impl = "auto" if current_impl() == "auto" else "xla_cpu"
    tiles = cpu_form("max_pool", impl, x.shape, dims[1:-1])
    if tiles is not None:
      return on_cpu(tiles, reduce_window, x) if impl == "auto" else tiles(x)
  return reduce_window(x)


def avg_pool(x: jax.Array, window, stride=None, padding: Padding = "VALID") -> jax.Array:
  """Mean over each window; padded positions are not counted (TensorFlow's "SAME" average)."""
  dims, strides, pads = _window(x, window, stride, padding)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, pads)
  count = jax.lax.reduce_window(jnp.ones((1, *x.shape[1:-1], 1), x.dtype), 0.0, jax.lax.add, dims,
                                strides, pads)
  return total / count


def global_avg_pool(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Global average pooling (Lin et al. 2014): `[batch, *spatial, channels]` -> `[batch, channels]`.

  One number per feature map, so a classifier on top needs `channels x classes` weights instead of
  `channels x H x W x classes` (256 maps of 100x100, 10 classes: 2,560 instead of 25,600,000).
  With `mask` (boolean `[batch, *spatial]`), only valid positions are averaged (variable-length series).
  """
  axes = tuple(range(1, x.ndim - 1))
  if mask is None:
    return jnp.mean(x, axis=axes)
  w = mask.astype(x.dtype)[..., None]
  return jnp.sum(x * w, axis=axes) / jnp.maximum(jnp.sum(w, axis=axes), 1)


def adaptive_bins(size_in: int, size_out: int) -> list[tuple[int, int]]:
  """PyTorch's adaptive pooling bins: output `i` averages inputs `[floor(i*n/m), ceil((i+1)*n/m))`."""
  return [((i * size_in) // size_out, -(-((i + 1) * size_in) // size_out)) for i in range(size_out)]


def adaptive_avg_pool(x: jax.Array, output_size: int | Sequence[int]) -> jax.Array:
  """Average pooling to a fixed output size, whatever the input size (torchvision's
  `AdaptiveAvgPool2d`, used before AlexNet's and VGG's classifiers so any input size works).

  A mean over a rectangle of bins is a product of 1D means, so this is one small averaging matrix
  per spatial axis; when the output divides the input it is plain non-overlapping average pooling.
  """
  n = x.ndim - 2
  out = ntuple(output_size, n, "output_size")
  for axis, (size_in, size_out) in enumerate(zip(x.shape[1:-1], out)):
    if size_in == size_out:
      continue
    a = np.zeros((size_out, size_in), np.float32)
    for i, (lo, hi) in enumerate(adaptive_bins(size_in, size_out)):
      a[i, lo:hi] = 1.0 / (hi - lo)
    x = jnp.moveaxis(jnp.tensordot(x, jnp.asarray(a, x.dtype), axes=[[axis + 1], [1]]), -1, axis + 1)
  return x


def global_max_pool(x: jax.Array) -> jax.Array:
  """`[batch, *spatial, channels]` -> `[batch, channels]`, the maximum of each feature map."""
  return jnp.max(x, axis=tuple(range(1, x.ndim - 1)))


def squeeze_excite(x: jax.Array, reduce: Callable, expand: Callable,
                   mask: jax.Array | None = None) -> jax.Array:
  """Squeeze-and-excitation (Hu et al. 2018): `x * sigmoid(expand(relu(reduce(GAP(x)))))`.

  `reduce` maps `[batch, C] -> [batch, C/r]` and `expand` back to `[batch, C]` (dense layers); the
  channel weights in (0, 1) rescale every feature map of `x`.
  """
  s = global_avg_pool(x, mask)
  e = jax.nn.sigmoid(expand(jax.nn.relu(reduce(s))))
  return x * e.reshape((x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)).astype(x.dtype)


class SqueezeExcite(nn.Module):
  """Thin module over `squeeze_excite`, reduction ratio `ratio` (16 in the paper)."""
  ratio: int = 16

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    c = x.shape[-1]
    return squeeze_excite(x, nn.Dense(max(c // self.ratio, 1), name="reduce"),
                          nn.Dense(c, name="expand"), mask)


class MaxPool(nn.Module):
  """Thin module over `max_pool` (a named layer for summaries)."""
  window: int | Sequence[int]
  stride: int | Sequence[int] | None = None
  padding: Padding = "VALID"

  def __call__(self, x):
    return max_pool(x, self.window, self.stride, self.padding)


class AvgPool(nn.Module):
  """Thin module over `avg_pool`."""
  window: int | Sequence[int]
  stride: int | Sequence[int] | None = None
  padding: Padding = "VALID"

  def __call__(self, x):
    return avg_pool(x, self.window, self.stride, self.padding)
