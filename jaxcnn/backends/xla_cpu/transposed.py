"""XLA:CPU formulation of `jaxcnn.conv.conv_transpose`: the transposed convolution as one stride-1
convolution over interleaved output phases ("sub-pixel"), the same numbers as the zero-inserted form
(`jaxcnn.conv.transposed`), whose derivatives XLA:CPU runs slowly (bench/README.md)."""
from __future__ import annotations

import math

import jax.numpy as jnp

from jaxcnn.conv.nd import conv


def subpixel_fits(x_shape, ks, strides, dilations, crops) -> bool:
  """Whether the phase decomposition covers this transposed convolution: dilation 1 and crops inside
  its `(n - 1 + ceil(k / s)) s` outputs."""
  return all(d == 1 for d in dilations) and all(
      lo >= 0 and (size - 1) * s + k - hi <= (size - 1 + -(-k // s)) * s
      for (lo, hi), size, s, k in zip(crops, x_shape[1:-1], strides, ks))


def subpixel(x, kernel, strides, crops):
  """Transposed convolution as ONE stride-1 convolution with `prod(stride)` output phases, interleaved.

  Output position `j = q s + r` only receives the kernel taps `w[m s + r]`, so phase `r` is the true
  (flipped) convolution of the input with the sub-kernel `w_r[m] = w[m s + r]`, `m < ceil(k / s)`
  (zero-padded). All phases are the output channels of one convolution; a depth-to-space interleave and
  the crop give the result. No zeros are inserted into the input, and both the value and the
  derivatives are those of a plain convolution (XLA:CPU differentiates the zero-inserted form slowly:
  bench/README.md).
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
