"""N-dimensional convolution (1D, 2D, 3D) through one API, and true (flipped-kernel) convolution.

Convolution vs cross-correlation. The mathematical convolution of an image `I` with a kernel `G` flips
the kernel: in 3D, `H(i, j, k) = sum_x sum_y sum_z I(x, y, z) G(i - x, j - y, k - z)` (`convolve`).
Deep-learning layers compute the cross-correlation `y[i] = sum_k x[i*s + k*d] w[k]`, without the flip
(`conv`). The two differ only by flipping the kernel along every spatial axis; since the kernel is learnt,
networks use the cheaper-to-write cross-correlation and still call it convolution.

Kernel layout: `[*kernel_size, in_channels // groups, out_channels]` (Flax/TensorFlow, "HWIO").
Padding: "SAME" (output `ceil(n / stride)`, TensorFlow's split with the extra pad after), "VALID"
(none), "CAUSAL" (1D only: `(k - 1) * dilation` before, none after, so `y[t]` never sees `x[t + 1:]`),
an int `p` (`p` on both sides of every axis, as in PyTorch) or explicit `[(low, high), ...]`.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import math
from typing import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import host_memory, xla_setup

Padding = str | int | Sequence[tuple[int, int]]

IMPLS = ("auto", "lax", "prepadded", "as_2d", "lead_taps", "out_taps", "depthwise", "depthwise_taps",
         "pointwise")
_DEFAULT_IMPL = contextvars.ContextVar("jaxcnn_conv_impl", default="auto")


@contextlib.contextmanager
def default_impl(impl: str) -> Iterator[None]:
  """Within the block, `conv(..., impl="auto")` means `impl`. Only affects tracing (what XLA is given):
  `jaxcnn.arithmetic` traces with "lax" so that every convolution is one operation it can measure."""
  if impl not in IMPLS:
    raise ValueError(f"unknown impl {impl!r}: use one of {', '.join(IMPLS)}")
  token = _DEFAULT_IMPL.set(impl)
  try:
    yield
  finally:
    _DEFAULT_IMPL.reset(token)


def _tuple(v, n: int, what: str) -> tuple[int, ...]:
  if isinstance(v, int):
    return (v,) * n
  v = tuple(int(i) for i in v)
  if len(v) != n:
    raise ValueError(f"{what} has {len(v)} entries but the convolution is {n}-dimensional")
  return v


def resolve_padding(padding: Padding, in_sizes: Sequence[int], kernel_sizes: Sequence[int],
                    stride=1, dilation=1) -> list[tuple[int, int]]:
  """Explicit `[(low, high), ...]` padding per spatial axis for any padding spec (see module doc)."""
  n = len(in_sizes)
  ks, ss, ds = kernel_sizes, _tuple(stride, n, "stride"), _tuple(dilation, n, "dilation")
  if isinstance(padding, int):
    return [(padding, padding)] * n
  if isinstance(padding, str):
    mode = padding.upper()
    if mode == "VALID":
      return [(0, 0)] * n
    if mode == "SAME":
      pads = []
      for size, k, s, d in zip(in_sizes, ks, ss, ds):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
      return pads
    if mode == "CAUSAL":
      if n != 1:
        raise ValueError(f"CAUSAL padding is for 1D (temporal) convolutions; got {n} spatial axes")
      return [((ks[0] - 1) * ds[0], 0)]
    raise ValueError(f"unknown padding {padding!r}: use 'SAME', 'VALID', 'CAUSAL', an int or "
                     f"[(low, high), ...] per spatial axis")
  pads = [tuple(int(v) for v in p) for p in padding]
  if len(pads) != n or any(len(p) != 2 for p in pads):
    raise ValueError(f"explicit padding must be {n} (low, high) pairs, one per spatial axis; "
                     f"got {padding!r}")
  return pads


def output_size(n: int, kernel_size: int, stride: int = 1, padding: tuple[int, int] = (0, 0),
                dilation: int = 1) -> int:
  """Length of a convolution's output along one axis: floor((n + lo + hi - d (k - 1) - 1) / s) + 1."""
  return (n + padding[0] + padding[1] - dilation * (kernel_size - 1) - 1) // stride + 1


def _check(x: jax.Array, kernel: jax.Array, groups: int, name: str) -> int:
  n = x.ndim - 2
  if n not in (1, 2, 3) or kernel.ndim != n + 2:
    raise ValueError(f"{name} expects x [batch, *spatial, channels] with 1-3 spatial axes and a kernel "
                     f"[*kernel_size, in/groups, out] of rank x.ndim; got x {x.shape} and kernel "
                     f"{kernel.shape}")
  if x.shape[-1] != kernel.shape[-2] * groups:
    raise ValueError(f"input has {x.shape[-1]} channels but the kernel expects "
                     f"{kernel.shape[-2]} x {groups} groups = {kernel.shape[-2] * groups}")
  if kernel.shape[-1] % groups:
    raise ValueError(f"out_channels {kernel.shape[-1]} is not divisible by groups={groups}")
  return n


def _dimension_numbers(n: int):
  spatial = "DHW"[-n:] if n > 1 else "W"
  return ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")


def _conv_lax(x, kernel, strides, pads, dilations, groups):
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=strides, padding=pads, rhs_dilation=dilations,
      dimension_numbers=_dimension_numbers(x.ndim - 2), feature_group_count=groups)


def _conv_prepadded(x, kernel, strides, pads, dilations, groups):
  """XLA's convolution of the explicitly zero-padded input, itself unpadded: XLA:CPU's derivatives
  of a padded convolution leave its fast path for some paddings (a 2x2 kernel with padding 1: 70x
  slower), and the 3x3 'SAME' case is as fast either way."""
  if any(p != (0, 0) for p in pads):
    x = jnp.pad(x, [(0, 0), *pads, (0, 0)])
  return _conv_lax(x, kernel, strides, ((0, 0),) * len(pads), dilations, groups)


def _tap_windows(x, ks, strides, pads, dilations):
  """For each tap `off` of a kernel of size `ks` over the first `len(ks)` spatial axes of `x`, the slices
  of the zero-padded input that it meets, one per output position: `slice(t d, t d + (m - 1) s + 1, s)`
  per axis, `m` the output size."""
  outs = [output_size(x.shape[1 + a], k, strides[a], pads[a], dilations[a]) for a, k in enumerate(ks)]
  for off in itertools.product(*[range(k) for k in ks]):
    yield off, tuple(slice(t * d, t * d + (m - 1) * s + 1, s)
                     for t, d, s, m in zip(off, dilations, strides, outs))


def _conv3d_as_2d(x, kernel, strides, pads, dilations, groups, conv2d=None):
  """3D convolution as a sum over kernel depth of 2D convolutions with depth folded into the batch.

  `y[:, t] = sum_i conv2d(x_pad[:, t*s + i*d], kernel[i])`: each depth tap is one 2D convolution of
  the depth-strided slice `[batch * out_depth, h, w, c]`. Same arithmetic as the direct 3D convolution
  (equal to it up to float summation order), but XLA:CPU runs 2D convolutions about 3x faster than 3D
  ones (see bench/README.md). `conv2d` computes each 2D one (default: XLA's, pre-padded).
  """
  conv2d = conv2d or _conv_prepadded
  b, depth = x.shape[0], x.shape[1]
  kd, sd, dd = kernel.shape[0], strides[0], dilations[0]
  xp = jnp.pad(x, [(0, 0), pads[0], (0, 0), (0, 0), (0, 0)])
  out_depth = output_size(depth, kd, sd, pads[0], dd)
  y = None
  for i in range(kd):
    start = i * dd
    xs = jax.lax.slice_in_dim(xp, start, start + (out_depth - 1) * sd + 1, stride=sd, axis=1)
    yi = conv2d(xs.reshape((b * out_depth,) + xs.shape[2:]), kernel[i], strides[1:], pads[1:],
                dilations[1:], groups)
    y = yi if y is None else y + yi
  return y.reshape((b, out_depth) + y.shape[1:])


def _conv_lead_taps(x, kernel, strides, pads, dilations, groups):
  """The convolution as *one 1D convolution* along the last spatial axis.

  The taps of the leading kernel axes (3 for a 3x3 kernel, 9 for 3x3x3) are gathered into channels:
  `xs[b, *lead, w, (t, c)] = x_pad[b, lead*s + off_t*d, w, c]` and the kernel becomes
  `[k_w, taps * C / groups, out]`. Same sums as the N-d convolution. Its derivatives are what XLA:CPU
  computes fastest (its N-d weight gradients are slow), so `conv` uses it for the backward pass.
  """
  n = x.ndim - 2
  b, c, o = x.shape[0], x.shape[-1], kernel.shape[-1]
  lead_k = kernel.shape[:n - 1]
  # Explicit zero padding + an unpadded convolution: XLA:CPU's derivatives of padded convolutions leave
  # its fast path for some paddings (a 2x2 kernel with padding 1: 70x slower).
  xp = jnp.pad(x, [(0, 0), *pads, (0, 0)])
  taps = [xp[(slice(None), *idx)] for _, idx in _tap_windows(x, lead_k, strides, pads, dilations)]
  out_lead = taps[0].shape[1:n]
  t = len(taps)
  width = xp.shape[-2]
  xs = jnp.stack(taps, axis=-2)  # [b, *out_lead, w, t, c]
  if groups > 1:  # each group's channels must stay contiguous: (g, t, c/g)
    xs = xs.reshape(xs.shape[:-1] + (groups, c // groups))
    xs = jnp.swapaxes(xs, -3, -2)
  xs = xs.reshape(-1, width, t * c)
  kw = kernel.reshape((t, kernel.shape[n - 1], c // groups, o))
  kw = jnp.transpose(kw, (1, 0, 2, 3)).reshape(kernel.shape[n - 1], t * c // groups, o)
  y = _conv_lax(xs, kw, strides[-1:], ((0, 0),), dilations[-1:], groups)
  return y.reshape((b, *out_lead) + y.shape[1:])


def _conv_out_taps(x, kernel, strides, pads, dilations, groups):
  """The convolution as *one 1D convolution* along the last spatial axis whose output channels are the
  taps of the leading kernel axes, then a sum of shifted slices.

  `z[b, *p, w, (t, o)] = sum_{j, c} x_pad[b, *p, w*s + j*d, c] kernel[t, j, c, o]` at every padded
  position `p` of the leading axes, and `y[b, *i, w, o] = sum_t z[b, *(i*s + off_t*d), w, t, o]`. Same
  sums as `_conv_lead_taps`, which copies the input once per leading tap (`taps x C` channels); this
  writes the 1D convolution's output once per tap instead (`taps x O`), and computes it at the padded
  leading positions too (`(n + k - 1) / n` the work for stride 1; strided, at every position). XLA:CPU
  runs it faster for a forward pass with `O <= C` on large images (`_forward_impl`).
  """
  n = x.ndim - 2
  c, o = x.shape[-1], kernel.shape[-1]
  lead_k = kernel.shape[:n - 1]
  t = math.prod(lead_k)
  xp = jnp.pad(x, [(0, 0), *pads, (0, 0)])
  # [t, k_w, C/G, (G, O/G)] -> [k_w, C/G, (G, t, O/G)]: each group's output channels stay contiguous
  kw = kernel.reshape((t, kernel.shape[n - 1], c // groups, groups, o // groups))
  kw = jnp.transpose(kw, (1, 2, 3, 0, 4)).reshape(kernel.shape[n - 1], c // groups, groups * t * (o // groups))
  z = _conv_lax(xp.reshape((-1,) + xp.shape[n:]), kw, strides[-1:], ((0, 0),), dilations[-1:], groups)
  z = z.reshape(xp.shape[:n] + z.shape[1:2] + (groups, t, o // groups))
  y = None
  for j, (_, idx) in enumerate(_tap_windows(x, lead_k, strides, pads, dilations)):
    term = z[(slice(None), *idx, slice(None), slice(None), j)]
    y = term if y is None else y + term
  return y.reshape(y.shape[:-2] + (o,))


def _forward_impl(x_shape, kernel_shape, strides, pads, dilations, groups) -> str:
  """"out_taps" or "lead_taps": the faster 1D form of an undifferentiated 2D convolution under YNNPACK.

  Measured forward, 3x3 "SAME", batch x size² x C -> O, ms lead / out (bench/README.md):
  16x56²x64->64 32-37 / 27, 8x64²x128->64 43 / 33-34, 8x224²x64->64 240 / 209-214, 16x28²x128->128 25 /
  23; but 16x14²x256->256 23.5-23.9 / 24.0-24.2, 16x7²x512->512 23 / 28-29 (the padded rows are 1.3x
  the work) and 16x56²x64->128 50 / 51 (the output is the larger copy). So "out_taps" where the output
  has no more channels than the input, the leading strides are 1, no groups, and the padded leading
  positions are at most 1.1x the output's.
  """
  n = len(x_shape) - 2
  if n < 2 or groups != 1 or kernel_shape[-1] > x_shape[-1] or any(s != 1 for s in strides[:-1]):
    return "lead_taps"
  padded = math.prod(x_shape[1 + a] + lo + hi for a, (lo, hi) in enumerate(pads[:-1]))
  out = math.prod(output_size(x_shape[1 + a], kernel_shape[a], 1, pads[a], dilations[a])
                  for a in range(n - 1))
  return "out_taps" if padded <= 1.1 * out else "lead_taps"


def _conv_depthwise_taps(x, kernel, strides, pads, dilations):
  """Depthwise convolution (`groups == in_channels`) as a sum over kernel taps of shifted inputs times
  per-channel weights: `y[..., c*m + j] = sum_t x_pad[shift_t][..., c] w[t, 0, c*m + j]`.

  Element-wise work that XLA fuses into one loop; its grouped convolution on CPU is ~40x slower.
  """
  n = x.ndim - 2
  c, o = x.shape[-1], kernel.shape[-1]
  m = o // c
  xp = jnp.pad(x, [(0, 0), *pads, (0, 0)])
  ks = kernel.shape[:n]
  y = None
  for off, idx in _tap_windows(x, ks, strides, pads, dilations):
    term = xp[(slice(None), *idx)][..., :, None] * kernel[off].reshape(c, m)
    y = term if y is None else y + term
  return y.reshape(y.shape[:-2] + (o,))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _conv_depthwise_auto(x, kernel, strides, pads, dilations, grouped):
  """The depthwise convolution `_conv_depthwise_taps` with derivatives that XLA:CPU runs well.

  Differentiated as is, the weight gradient is one multiply-reduction per tap, and XLA fuses the
  producer of the incoming gradient into each of them: an element-wise tail (a loss, BatchNorm's
  backward, a ReLU mask) is recomputed once per tap. The JVP rule below puts an optimisation barrier on
  the tangent, whose transpose makes the incoming gradient one materialised array. With `grouped`
  (`conv` sets it under the Eigen kernels, jaxcnn/xla_setup.py, when the process runs without glibc's
  huge pages, jaxcnn/host_memory.py) the weight tangent is XLA's grouped convolution, whose transpose
  (a batch-grouped convolution) was 2x faster there than the per-tap reductions while those paid a page
  fault per 4 KB of their temporaries; with huge pages the taps win under both kernels (the block
  below: 42-43 vs 53-54 ms under Eigen, 41-46 vs 167-171 under YNNPACK). A custom JVP: forward and
  reverse mode and higher derivatives all work. This change alone, on the depthwise-separable block
  16x56x56x64 (3x3 depthwise + 1x1 to 128) forward+backward, before huge pages: 184 -> 112 ms
  (YNNPACK), 222 -> 92 ms (Eigen); with the 1x1 change and huge pages, bench/README.md's table.
  """
  del grouped
  return _conv_depthwise_taps(x, kernel, strides, pads, dilations)


# Inputs of at least this many bytes have their depthwise weight gradient computed two images at a time.
DEPTHWISE_PAIRS_MIN_BYTES = 4 << 20


def _depthwise_weight_tangent(x, dk, strides, pads, dilations):
  """`_conv_depthwise_taps(x, dk)`, linear in `dk`, written so that its transpose (the weight gradient)
  runs well on XLA:CPU.

  Transposed as is, the weight gradient is one multiply-reduction over the whole batch per tap: nine
  passes over the input and the incoming gradient, each bound by memory traffic. Mapped over pairs of
  images (`lax.map`; its transpose is a loop that accumulates the nine sums pair by pair), the passes
  of a pair reuse what the first one brought into the caches: 16x56x56x64 3x3, forward+backward of
  the depthwise convolution 18.7 -> 11.9 ms, 32x28x28x256 35.0 -> 19.5, 64x7x7x1024 19.5-26.4 ->
  11.0-13.0, 16x112x112x32 35.4 -> 27.3 (single images or groups of 4: less or no gain; inputs under
  4 MB: none or a loss, 8x14x14x512 2.7 -> 4.6 ms). `jax.checkpoint` keeps the input itself as the
  loop's residual rather than its nine shifted copies (without it: 117 ms).
  """
  b = x.shape[0]
  if b < 4 or b % 2 or x.size * x.dtype.itemsize < DEPTHWISE_PAIRS_MIN_BYTES:
    return _conv_depthwise_taps(x, dk, strides, pads, dilations)
  pairs = x.reshape((b // 2, 2) + x.shape[1:])
  y = jax.lax.map(jax.checkpoint(lambda xc: _conv_depthwise_taps(xc, dk, strides, pads, dilations)),
                  pairs)
  return y.reshape((b,) + y.shape[2:])


def _conv_depthwise_auto_jvp(strides, pads, dilations, grouped, primals, tangents):
  x, kernel = primals
  dx, dk = tangents
  zero = lambda t: isinstance(t, jax.custom_derivatives.SymbolicZero)
  y = _conv_depthwise_taps(x, kernel, strides, pads, dilations)
  terms = []
  if not zero(dx):
    terms.append(_conv_depthwise_taps(dx, kernel, strides, pads, dilations))
  if not zero(dk):
    terms.append(_conv_lax(x, dk, strides, pads, dilations, x.shape[-1]) if grouped
                 else _depthwise_weight_tangent(x, dk, strides, pads, dilations))
  if not terms:
    return y, jnp.zeros_like(y)
  return y, jax.lax.optimization_barrier(functools.reduce(jnp.add, terms))


_conv_depthwise_auto.defjvp(_conv_depthwise_auto_jvp, symbolic_zeros=True)


def _conv_forward(x, kernel, strides, pads, dilations, groups):
  # YNNPACK runs a 2D convolution on one thread, while a 1D one goes to XLA's multi-threaded Eigen
  # kernel: with huge pages (jaxcnn/host_memory.py) a 1D form is the faster forward, the lead-taps
  # one or, with O <= C on large images, the out-taps one (`_forward_impl`; 16x56x56x64 3x3: 43 ->
  # 31 -> 27 ms); 3D as the sum over depth of those (4x16x32x32x32 3x3x3: 50 -> 39 -> 32 ms; all
  # nine taps in one 1D convolution: 48-53 ms).
  if x.ndim == 5:
    return _conv3d_as_2d(x, kernel, strides, pads, dilations, groups, conv2d=_conv_forward)
  if _forward_impl(x.shape, kernel.shape, strides, pads, dilations, groups) == "out_taps":
    return _conv_out_taps(x, kernel, strides, pads, dilations, groups)
  return _conv_lead_taps(x, kernel, strides, pads, dilations, groups)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _conv_auto(x, kernel, strides, pads, dilations, groups):
  """Evaluated: 2D through the lead-taps 1D convolution, 3D as sums of 2D. Differentiated: lead taps.

  The JVP rule differentiates `_conv_lead_taps` (forward and tangent), so under `jax.grad` the whole
  convolution, forward and backward, is the lead-taps one, whose weight and input gradients XLA:CPU
  runs fastest. A custom JVP (not VJP): forward mode, reverse mode and higher derivatives all work.
  """
  return _conv_forward(x, kernel, strides, pads, dilations, groups)


def _conv_auto_jvp(strides, pads, dilations, groups, primals, tangents):
  x, kernel = primals
  dx, dk = tangents
  lin = functools.partial(_conv_lead_taps, strides=strides, pads=pads, dilations=dilations,
                          groups=groups)
  zero = lambda t: isinstance(t, jax.custom_derivatives.SymbolicZero)
  if zero(dx) and zero(dk):
    y = _conv_auto(x, kernel, strides, pads, dilations, groups)
    return y, jnp.zeros_like(y)
  if zero(dx):
    return jax.jvp(lambda k: lin(x, k), (kernel,), (dk,))
  if zero(dk):
    return jax.jvp(lambda a: lin(a, kernel), (x,), (dx,))
  return jax.jvp(lin, (x, kernel), (dx, dk))


_conv_auto.defjvp(_conv_auto_jvp, symbolic_zeros=True)


def conv(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, *, stride=1,
         padding: Padding = "SAME", dilation=1, groups: int = 1, impl: str = "auto") -> jax.Array:
  """Channels-last N-d convolution (cross-correlation, as in every deep-learning library).

  `y[n, i, o] = b[o] + sum_k sum_c x[n, i*s + k*d - pad_low, g(o)*C/G + c] w[k, c, o]` with the sums over
  the kernel window `k` (one index per spatial axis) and the input channels `c` of the output's group.

  Args:
    x: `[batch, *spatial, in_channels]`, with 1, 2 or 3 spatial axes.
    kernel: `[*kernel_size, in_channels // groups, out_channels]`.
    bias: optional `[out_channels]`.
    stride, dilation: int or one int per spatial axis. Dilation `d` spaces the kernel taps `d` apart
      (atrous convolution): the window covers `d (k - 1) + 1` inputs with `k` weights.
    padding: see the module docstring.
    groups: feature groups. `groups == in_channels` is a depthwise convolution.
    impl: "auto" (on CPU the fastest formulation measured, numerically the same convolution; see
      bench/README.md). With XLA:CPU's Eigen convolutions (`JAXCNN_CPU_CONVOLUTIONS=eigen` or
      `launch.py --cpu_convolutions=eigen`, jaxcnn/xla_setup.py): XLA's own convolution (of the
      zero-padded input where the padding exceeds "SAME"), 3D as a sum of 2D convolutions. With its
      single-threaded YNNPACK ones (jaxlib's default): all 2D and 3D derivatives through one 1D
      convolution with the leading kernel taps gathered into channels, 2D forward through it or (O <= C,
      large images) through one with the leading taps in its output channels, 3D forward as a sum of
      2D convolutions.
      Either way depthwise as a sum of shifted inputs times per-channel weights ("depthwise": its
      derivatives as `_conv_depthwise_auto` says) and 1x1 as a matrix product; any GPU/TPU backend:
      "lax". Or one formulation by name: "lax" (XLA's N-d convolution and its own derivatives),
      "prepadded", "as_2d" (3D only), "lead_taps", "out_taps", "depthwise", "depthwise_taps" (the
      same sums, differentiated as they are), "pointwise" (1x1 kernels, any stride).
  Returns:
    `[batch, *out_spatial, out_channels]`, `out = floor((n + lo + hi - d (k - 1) - 1) / s) + 1` per axis.
  """
  n = _check(x, kernel, groups, "conv")
  strides, dilations = _tuple(stride, n, "stride"), _tuple(dilation, n, "dilation")
  pads = resolve_padding(padding, x.shape[1:-1], kernel.shape[:n], strides, dilations)
  kernel = kernel.astype(x.dtype)
  if impl == "auto":
    impl = _DEFAULT_IMPL.get()
    if impl == "as_2d" and n != 3:
      impl = "auto"
    if impl == "auto" and jax.default_backend() != "cpu":
      impl = "lax"  # the reformulations only pay off on XLA:CPU; GPU/TPU convolutions are native
    elif impl == "auto" and groups > 1 and groups == x.shape[-1]:
      impl = "depthwise"
    elif (impl == "auto" and groups == 1 and all(k == 1 for k in kernel.shape[:n])
          and all(p == (0, 0) for p in pads)):
      impl = "pointwise"  # a 1x1 convolution is a matrix product over the channels
    elif impl == "auto" and xla_setup.eigen_convolutions():
      # XLA's multi-threaded Eigen convolution (jaxcnn/xla_setup.py): its own 1D/2D convolution and
      # derivatives are the fastest measured, except with more padding than "SAME" (the transposed
      # convolution's phases: 318 ms, pre-padded 20 ms); 3D as sums of 2D ones (114 -> 27 ms).
      over = any(lo + hi > (k - 1) * d for (lo, hi), k, d in zip(pads, kernel.shape[:n], dilations))
      impl = "as_2d" if n == 3 else ("prepadded" if over else "lax")
    elif impl == "auto" and n == 1:
      impl = "lax"
  pads = tuple(tuple(p) for p in pads)
  if impl == "auto":
    y = _conv_auto(x, kernel, strides, pads, dilations, groups)
  elif impl == "pointwise":
    if groups != 1 or any(k != 1 for k in kernel.shape[:n]) or any(p != (0, 0) for p in pads):
      raise ValueError(f"impl='pointwise' is for 1x1 kernels with no padding and groups=1; got kernel "
                       f"{kernel.shape}, padding {pads}, groups={groups}")
    # A strided 1x1 convolution reads every s-th position. Then one [positions, in] x [in, out] matrix
    # product: not an einsum over "...c,co->...o", whose weight gradient contracts three axes at once,
    # which XLA:CPU runs as a transpose copy and a plain dot instead of a YNNPACK matrix product
    # (16x56x56x64 -> 128: forward+backward 76 -> 20 ms).
    if any(s != 1 for s in strides):
      x = x[(slice(None), *(slice(None, None, s) for s in strides))]
    k2 = kernel.reshape(kernel.shape[-2:])
    y = (x.reshape(-1, x.shape[-1]) @ k2).reshape(x.shape[:-1] + k2.shape[-1:])
  elif impl in ("depthwise", "depthwise_taps"):
    if groups != x.shape[-1]:
      raise ValueError(f"impl='{impl}' needs groups == in_channels ({x.shape[-1]}), got {groups}")
    if impl == "depthwise":
      # XLA's grouped convolution for the weight tangent only under Eigen without huge pages (see
      # `_conv_depthwise_auto`); the taps are faster everywhere else.
      grouped = xla_setup.eigen_convolutions() and host_memory.policy() == "system"
      y = _conv_depthwise_auto(x, kernel, strides, pads, dilations, grouped)
    else:
      y = _conv_depthwise_taps(x, kernel, strides, pads, dilations)
  elif impl == "lead_taps":
    y = _conv_lead_taps(x, kernel, strides, pads, dilations, groups)
  elif impl == "out_taps":
    y = _conv_out_taps(x, kernel, strides, pads, dilations, groups)
  elif impl == "lax":
    y = _conv_lax(x, kernel, strides, pads, dilations, groups)
  elif impl == "prepadded":
    y = _conv_prepadded(x, kernel, strides, pads, dilations, groups)
  elif impl == "as_2d":
    if n != 3:
      raise ValueError(f"impl='as_2d' is for 3D convolutions; this one has {n} spatial axes")
    y = _conv3d_as_2d(x, kernel, strides, pads, dilations, groups)
  else:
    raise ValueError(f"unknown impl {impl!r}: use one of {', '.join(IMPLS)}")
  if bias is not None:
    y = y + bias.astype(y.dtype)
  return y


def convolve(x: jax.Array, kernel: jax.Array, mode: str = "full") -> jax.Array:
  """True convolution (kernel flipped), single channel: `H(i,j,k) = sum I(x,y,z) G(i-x, j-y, k-z)`.

  Args:
    x: `[*spatial]` (1-3 axes), e.g. a 3D image `I`.
    kernel: `[*kernel_size]`, the same number of axes, e.g. `G`.
    mode: "full" (every `i` where the sum has a term: size `n + k - 1`), "valid" (`n - k + 1`) or
      "same" (size `n`, centred as `scipy.signal.convolve`).
  """
  if x.ndim != kernel.ndim or x.ndim not in (1, 2, 3):
    raise ValueError(f"convolve expects x and kernel with the same 1-3 axes; got {x.shape}, {kernel.shape}")
  ks = kernel.shape
  if mode == "full":
    pads = [(k - 1, k - 1) for k in ks]
  elif mode == "valid":
    pads = [(0, 0)] * x.ndim
  elif mode == "same":
    pads = [((k - 1) - (k - 1) // 2, (k - 1) // 2) for k in ks]
  else:
    raise ValueError(f"unknown mode {mode!r}: use 'full', 'valid' or 'same'")
  flipped = jnp.flip(kernel, axis=tuple(range(kernel.ndim)))
  y = conv(x[None, ..., None], flipped[..., None, None], padding=pads, impl="lax")
  return y[0, ..., 0]


class Conv(nn.Module):
  """Thin module over `conv`: owns `kernel` and `bias`, nothing else. `add_bias=False` returns the
  convolution without its bias (for `BatchNorm(input_bias=...)`, which takes the bias apart)."""
  features: int
  kernel_size: int | Sequence[int]
  stride: int | Sequence[int] = 1
  padding: Padding = "SAME"
  dilation: int | Sequence[int] = 1
  groups: int = 1
  use_bias: bool = True
  dtype: jnp.dtype | None = None
  kernel_init: nn.initializers.Initializer = nn.initializers.glorot_uniform()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array, *, add_bias: bool = True) -> jax.Array:
    n = x.ndim - 2
    ks = _tuple(self.kernel_size, n, "kernel_size")
    if x.shape[-1] % self.groups:
      raise ValueError(f"{x.shape[-1]} input channels are not divisible by groups={self.groups}")
    kernel = self.param("kernel", self.kernel_init, ks + (x.shape[-1] // self.groups, self.features))
    bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
    if self.dtype is not None:
      x = x.astype(self.dtype)
    return conv(x, kernel, bias if add_bias else None, stride=self.stride, padding=self.padding,
                dilation=self.dilation, groups=self.groups)
