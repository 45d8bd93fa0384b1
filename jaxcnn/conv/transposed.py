"""Transposed convolution ("deconvolution", fractionally strided convolution) and its matrix view.

A convolution is a linear map, `y = K x` with `K` a sparse matrix built from the kernel
(`conv_matrix`). Its transpose `z = K^T y` maps the output shape back to the input shape: every input
value `y[i]` *scatters* a copy of the kernel, scaled by `y[i]`, onto `z[i*s - p : i*s - p + d(k-1) + 1]`,
and overlapping copies add up:

    z[j] = sum_i sum_k y[i] w[k]   over   j = i*s + k*d - p          (1D; one term per axis in N-d)

That is `conv_transpose` (PyTorch's `ConvTranspose` semantics, channels-last, kernel
`[*kernel_size, in_channels, out_channels]`). The output length is
`(n - 1) s - 2p + d (k - 1) + output_padding + 1`; e.g. 2x2 -> 4x4 with k=3, s=1, p=0 (the lecture's
"upsampling" picture) and 3x3 -> 5x5 with k=3, s=2, p=1.

It is computed as a stride-1 convolution of the input dilated by `s` (zeros between samples), padded by
`d (k - 1) - p`, with the spatially flipped kernel. When `k` is not divisible by `s`, output positions
receive different numbers of kernel copies: the checkerboard artifact (Odena et al. 2016, "Deconvolution
and Checkerboard Artifacts"; see `overlap_counts` and `jaxcnn.conv.checkerboard`).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import math

from jaxcnn.conv.nd import _DEFAULT_IMPL, _dimension_numbers, _tuple, conv, output_size


def transposed_output_size(n: int, kernel_size: int, stride: int = 1, padding: int = 0,
                           output_padding: int = 0, dilation: int = 1) -> int:
  """`(n - 1) s - 2p + d (k - 1) + output_padding + 1` (PyTorch's formula)."""
  return (n - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1


def _transpose_pads(padding, n_axes, ks, ss, ds, output_padding):
  """Crop `(low, high)` per axis of the full scatter output `(n-1)s + d(k-1) + 1`."""
  ops = _tuple(output_padding, n_axes, "output_padding")
  if isinstance(padding, str):
    mode = padding.upper()
    if mode == "VALID":
      crops = [(0, 0)] * n_axes
    elif mode == "SAME":  # adjoint of the SAME strided convolution: output = n * s
      crops = []
      for k, s, d in zip(ks, ss, ds):
        total = d * (k - 1) + 1 - s
        crops.append((total // 2, total - total // 2))
    else:
      raise ValueError(f"unknown padding {padding!r} for a transposed convolution: use 'SAME', "
                       f"'VALID', an int or [(low, high), ...]")
  elif isinstance(padding, int):
    crops = [(padding, padding)] * n_axes
  else:
    crops = [tuple(int(v) for v in p) for p in padding]
    if len(crops) != n_axes:
      raise ValueError(f"padding needs {n_axes} (low, high) pairs; got {padding!r}")
  for op, s, d in zip(ops, ss, ds):
    if not 0 <= op < max(s, d):
      raise ValueError(f"output_padding {op} must be smaller than the stride or the dilation")
  return [(lo, hi - op) for (lo, hi), op in zip(crops, ops)]


def _conv_transpose_subpixel(x, kernel, strides, crops):
  """Transposed convolution as ONE stride-1 convolution with `prod(stride)` output phases, interleaved.

  Output position `j = q s + r` only receives the kernel taps `w[m s + r]`, so phase `r` is the true
  (flipped) convolution of the input with the sub-kernel `w_r[m] = w[m s + r]`, `m < ceil(k / s)`
  (zero-padded). All phases are the output channels of one convolution; a depth-to-space interleave and
  the crop give the result. No zeros are inserted into the input, and both the value and the
  derivatives are those of a plain convolution (XLA:CPU's derivatives of the zero-inserted form are
  ~50x slower than PyTorch's).
  """
  n = x.ndim - 2
  ks, (ci, co) = kernel.shape[:n], kernel.shape[-2:]
  ms = [-(-k // s) for k, s in zip(ks, strides)]
  kp = jnp.pad(kernel, [(0, m * s - k) for m, s, k in zip(ms, strides, ks)] + [(0, 0), (0, 0)])
  kp = kp.reshape(tuple(v for m, s in zip(ms, strides) for v in (m, s)) + (ci, co))
  kp = jnp.flip(kp, axis=tuple(2 * a for a in range(n)))
  # [m0, s0, m1, s1, ..., ci, co] -> [m0, m1, ..., ci, co, s0, s1, ...] -> [m..., ci, co * prod(s)]
  perm = [2 * a for a in range(n)] + [2 * n, 2 * n + 1] + [2 * a + 1 for a in range(n)]
  kp = jnp.transpose(kp, perm).reshape(tuple(ms) + (ci, co * math.prod(strides)))
  y = conv(x, kp, padding=[(m - 1, m - 1) for m in ms])
  b, qs = y.shape[0], y.shape[1:-1]
  y = y.reshape((b, *qs, co, *strides))
  # interleave: [b, q0, ..., co, s0, ...] -> [b, q0, s0, q1, s1, ..., co]
  perm = [0] + [v for a in range(n) for v in (1 + a, 2 + n + a)] + [1 + n]
  y = jnp.transpose(y, perm).reshape((b, *(q * s for q, s in zip(qs, strides)), co))
  full = [(size - 1) * s + k for size, s, k in zip(x.shape[1:-1], strides, ks)]
  idx = tuple(slice(lo, f - hi) for (lo, hi), f in zip(crops, full))
  return y[(slice(None), *idx, slice(None))]


def conv_transpose(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, *, stride=1,
                   padding: str | int | Sequence[tuple[int, int]] = 0, output_padding=0,
                   dilation=1, impl: str = "auto") -> jax.Array:
  """Transposed convolution, channels-last, 1-3 spatial axes.

  Args:
    x: `[batch, *spatial, in_channels]`.
    kernel: `[*kernel_size, in_channels, out_channels]`. With the kernel reshaped, this is exactly
      `torch.nn.functional.conv_transpose{1,2,3}d(x, weight.permute(...))`.
    stride, dilation, output_padding: int or one per axis. `output_padding` (< stride) adds rows at the
      high end, to pick among the input sizes a strided convolution maps to the same output size.
    padding: int `p` (crop `p` on both sides, PyTorch), `[(low, high), ...]`, "VALID" (no crop) or
      "SAME" (output `n * stride`, the adjoint of the "SAME" strided convolution).
    impl: "auto" (on CPU, for dilation 1: one stride-1 convolution over `prod(stride)` interleaved
      output phases, `_conv_transpose_subpixel`, the same numbers much faster to differentiate; else
      "lax") or "lax" (XLA's convolution of the zero-inserted input).
  Returns:
    `[batch, *out_spatial, out_channels]` (sizes from `transposed_output_size`).
  """
  n = x.ndim - 2
  if n not in (1, 2, 3) or kernel.ndim != n + 2:
    raise ValueError(f"conv_transpose expects x [batch, *spatial, channels] with 1-3 spatial axes and a "
                     f"kernel [*kernel_size, in, out]; got x {x.shape}, kernel {kernel.shape}")
  if x.shape[-1] != kernel.shape[-2]:
    raise ValueError(f"input has {x.shape[-1]} channels but the kernel expects {kernel.shape[-2]}")
  ks = kernel.shape[:n]
  ss, ds = _tuple(stride, n, "stride"), _tuple(dilation, n, "dilation")
  crops = _transpose_pads(padding, n, ks, ss, ds, output_padding)
  # The phase decomposition covers dilation 1 and crops inside its (n - 1 + ceil(k/s)) s outputs.
  phases_fit = all(d == 1 for d in ds) and all(
      lo >= 0 and (size - 1) * s + k - hi <= (size - 1 + -(-k // s)) * s
      for (lo, hi), size, s, k in zip(crops, x.shape[1:-1], ss, ks))
  if impl == "auto":
    impl = _DEFAULT_IMPL.get()
    fast = jax.default_backend() == "cpu" and phases_fit
    impl = "subpixel" if impl != "lax" and fast else "lax"
  if impl == "subpixel":
    if not phases_fit:
      raise ValueError("impl='subpixel' needs dilation 1 and non-negative padding no larger than the "
                       "output; use impl='lax' (or 'auto') for this transposed convolution")
    y = _conv_transpose_subpixel(x, kernel.astype(x.dtype), ss, crops)
    return y if bias is None else y + bias.astype(y.dtype)
  if impl != "lax":
    raise ValueError(f"unknown impl {impl!r}: use 'auto', 'lax' or 'subpixel'")
  pads = [(d * (k - 1) - lo, d * (k - 1) - hi) for (lo, hi), k, d in zip(crops, ks, ds)]
  flipped = jnp.flip(kernel, axis=tuple(range(n))).astype(x.dtype)
  y = jax.lax.conv_general_dilated(x, flipped, window_strides=(1,) * n, padding=pads, lhs_dilation=ss,
                                   rhs_dilation=ds, dimension_numbers=_dimension_numbers(n))
  if bias is not None:
    y = y + bias.astype(y.dtype)
  return y


def conv_matrix(w: np.ndarray, n: int, stride: int = 1, padding: int = 0) -> np.ndarray:
  """The convolution as a matrix: `conv(x, w) == conv_matrix(w, len(x)) @ x` (1D, one channel).

  Row `i` holds the kernel at columns `i*s - p + k`: `K[i, i*s - p + k] = w[k]`. Built with numpy loops,
  independently of `conv`, so that tests can check `conv` against `K` and `conv_transpose` against `K^T`.
  """
  w = np.asarray(w)
  out = output_size(n, len(w), stride, (padding, padding))
  mat = np.zeros((out, n), w.dtype)
  for i in range(out):
    for k, wk in enumerate(w):
      j = i * stride - padding + k
      if 0 <= j < n:
        mat[i, j] += wk
  return mat


def overlap_counts(in_shape: Sequence[int], kernel_size, stride, padding=0) -> jax.Array:
  """How many kernel copies land on each output position of a transposed convolution.

  The transposed convolution of an all-ones input with an all-ones kernel, `[*out_spatial]`. Uneven
  counts (a checkerboard in 2D) appear when the kernel size is not divisible by the stride.
  """
  n = len(in_shape)
  ks = _tuple(kernel_size, n, "kernel_size")
  ones = jnp.ones((1, *in_shape, 1))
  return conv_transpose(ones, jnp.ones(ks + (1, 1)), stride=stride, padding=padding)[0, ..., 0]


def resize_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, *, scale=2,
                method: str = "nearest") -> jax.Array:
  """Upsample by `scale` (nearest or linear resize), then a stride-1 "SAME" convolution.

  Odena et al.'s remedy for checkerboard artifacts: every output position sums the same number of terms.
  """
  n = x.ndim - 2
  scales = _tuple(scale, n, "scale")
  shape = (x.shape[0], *(s * f for s, f in zip(x.shape[1:-1], scales)), x.shape[-1])
  up = jax.image.resize(x, shape, method=method)
  return conv(up, kernel, bias, padding="SAME")


class ConvTranspose(nn.Module):
  """Thin module over `conv_transpose`."""
  features: int
  kernel_size: int | Sequence[int]
  stride: int | Sequence[int] = 1
  padding: str | int | Sequence[tuple[int, int]] = 0
  output_padding: int | Sequence[int] = 0
  dilation: int | Sequence[int] = 1
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.glorot_uniform()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ks = _tuple(self.kernel_size, x.ndim - 2, "kernel_size")
    kernel = self.param("kernel", self.kernel_init, ks + (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,)) if self.use_bias else None
    return conv_transpose(x, kernel, bias, stride=self.stride, padding=self.padding,
                          output_padding=self.output_padding, dilation=self.dilation)


class ResizeConv(nn.Module):
  """Thin module over `resize_conv`."""
  features: int
  kernel_size: int | Sequence[int] = 3
  scale: int | Sequence[int] = 2
  method: str = "nearest"
  kernel_init: nn.initializers.Initializer = nn.initializers.glorot_uniform()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ks = _tuple(self.kernel_size, x.ndim - 2, "kernel_size")
    kernel = self.param("kernel", self.kernel_init, ks + (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    return resize_conv(x, kernel, bias, scale=self.scale, method=self.method)
