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

from jaxcnn.conv.nd import (conv, cpu_form, current_impl, dimension_numbers, ntuple, on_cpu,
                            output_size)


def transposed_output_size(n: int, kernel_size: int, stride: int = 1, padding: int = 0,
                           output_padding: int = 0, dilation: int = 1) -> int:
  """`(n - 1) s - 2p + d (k - 1) + output_padding + 1` (PyTorch's formula)."""
  return (n - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1


def _transpose_pads(padding, n_axes, ks, ss, ds, output_padding):
  """Crop `(low, high)` per axis of the full scatter output `(n-1)s + d(k-1) + 1`."""
  ops = ntuple(output_padding, n_axes, "output_padding")
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
    impl: "lax" (XLA's convolution of the zero-inserted input, below), "auto" (in a program compiled
      for the CPU, where it applies, the same numbers as one stride-1 convolution over interleaved
      output phases: jaxcnn/backends/xla_cpu/transposed.py; else "lax"; `jaxcnn.conv.nd.on_cpu`) or
      "subpixel" (that form, by name, on any platform).
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
  ss, ds = ntuple(stride, n, "stride"), ntuple(dilation, n, "dilation")
  crops = _transpose_pads(padding, n, ks, ss, ds, output_padding)
  if impl not in ("auto", "lax", "subpixel"):
    raise ValueError(f"unknown impl {impl!r}: use 'auto', 'lax' or 'subpixel'")
  if impl == "auto" and current_impl() == "lax":
    impl = "lax"
  elif impl == "auto" and current_impl() != "auto":  # a default_impl block naming XLA:CPU's forms
    impl = "xla_cpu"

  def lax_form(x, kernel):  # XLA's convolution of the zero-inserted input: the definition
    flipped = jnp.flip(kernel, axis=tuple(range(n)))
    pads = [(d * (k - 1) - lo, d * (k - 1) - hi) for (lo, hi), k, d in zip(crops, ks, ds)]
    return jax.lax.conv_general_dilated(x, flipped, window_strides=(1,) * n, padding=pads, lhs_dilation=ss,
                                        rhs_dilation=ds, dimension_numbers=dimension_numbers(n))

  kernel = kernel.astype(x.dtype)
  # the CPU backend's form (one stride-1 convolution over interleaved phases), where it applies; None:
  # XLA's own. "auto": in a program compiled for the CPU only (jaxcnn.conv.nd.on_cpu).
  cpu = None if impl == "lax" else cpu_form("conv_transpose", impl, x.shape, ks, ss, ds, crops)
  if cpu is None:
    y = lax_form(x, kernel)
  else:
    y = on_cpu(cpu, lax_form, x, kernel) if impl == "auto" else cpu(x, kernel)
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
  ks = ntuple(kernel_size, n, "kernel_size")
  ones = jnp.ones((1, *in_shape, 1))
  return conv_transpose(ones, jnp.ones(ks + (1, 1)), stride=stride, padding=padding)[0, ..., 0]


def resize_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, *, scale=2,
                method: str = "nearest") -> jax.Array:
  """Upsample by `scale` (nearest or linear resize), then a stride-1 "SAME" convolution.

  Odena et al.'s remedy for checkerboard artifacts: every output position sums the same number of terms.
  """
  n = x.ndim - 2
  scales = ntuple(scale, n, "scale")
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
    ks = ntuple(self.kernel_size, x.ndim - 2, "kernel_size")
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
    ks = ntuple(self.kernel_size, x.ndim - 2, "kernel_size")
    kernel = self.param("kernel", self.kernel_init, ks + (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    return resize_conv(x, kernel, bias, scale=self.scale, method=self.method)
