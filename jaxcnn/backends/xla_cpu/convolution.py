"""XLA:CPU formulations of `jaxcnn.conv.conv`: the same convolution, computed the way XLA:CPU runs fastest.

`jaxcnn.conv.conv(impl="auto")` calls `conv` here in a program compiled for the CPU; every formulation computes
the same sums as `jaxcnn.conv.nd.xla_conv` (XLA's N-d convolution), equal up to float summation order
(tests/test_conv_nd.py checks each one and its derivatives against it). Which one `choose` picks depends
on the kernels XLA:CPU uses for convolutions (`xla_setup`: jaxlib's YNNPACK, one thread, or Eigen,
multi-threaded) and on the shapes; the measurements behind each choice are in bench/README.md
("Why each XLA:CPU formulation").

| name | what it computes | picked |
|---|---|---|
| `prepadded` | XLA's convolution of the explicitly zero-padded input, itself unpadded | Eigen, padding beyond "SAME" |
| `as_2d` | 3D as a sum over kernel depth of 2D convolutions, depth folded into the batch | Eigen, 3D |
| `lead_taps` | one 1D convolution along the last axis, the leading kernel taps gathered into channels | YNNPACK, 2D/3D derivatives (and most 2D forwards) |
| `out_taps` | one 1D convolution whose output channels are the leading taps, then a sum of shifted slices | YNNPACK, 2D forward with O <= C on large images |
| `depthwise` | a sum over taps of shifted inputs times per-channel weights, with a hand-written JVP | groups == in_channels |
| `depthwise_taps` | the same sums, differentiated as they are | by name only |
| `pointwise` | a 1x1 convolution as one matrix product | 1x1 kernels, no padding, groups 1 |
| `lax` | XLA's own convolution | GPU/TPU; 1D under YNNPACK; 1D/2D under Eigen |
"""
from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp

from jaxcnn.backends.xla_cpu import policy
from jaxcnn.conv.nd import output_size, xla_conv

FORMULATIONS = ("prepadded", "as_2d", "lead_taps", "out_taps", "depthwise", "depthwise_taps", "pointwise")


def prepadded(x, kernel, strides, pads, dilations, groups):
  """XLA's convolution of the explicitly zero-padded input, itself unpadded: XLA:CPU's derivatives of a
  padded convolution leave its fast path for some paddings (a 2x2 kernel with padding 1)."""
  if any(p != (0, 0) for p in pads):
    x = jnp.pad(x, [(0, 0), *pads, (0, 0)])
  return xla_conv(x, kernel, strides, ((0, 0),) * len(pads), dilations, groups)


def tap_windows(x, ks, strides, pads, dilations):
  """For each tap `off` of a kernel of size `ks` over the first `len(ks)` spatial axes of `x`, the slices
  of the zero-padded input that it meets, one per output position: `slice(t d, t d + (m - 1) s + 1, s)`
  per axis, `m` the output size."""
  outs = [output_size(x.shape[1 + a], k, strides[a], pads[a], dilations[a]) for a, k in enumerate(ks)]
  for off in itertools.product(*[range(k) for k in ks]):
    yield off, tuple(slice(t * d, t * d + (m - 1) * s + 1, s)
                     for t, d, s, m in zip(off, dilations, strides, outs))


def as_2d(x, kernel, strides, pads, dilations, groups, conv2d=None):
  """3D convolution as a sum over kernel depth of 2D convolutions with depth folded into the batch.

  `y[:, t] = sum_i conv2d(x_pad[:, t*s + i*d], kernel[i])`: each depth tap is one 2D convolution of the
  depth-strided slice `[batch * out_depth, h, w, c]`. Same arithmetic as the direct 3D convolution;
  XLA:CPU runs 2D convolutions faster than 3D ones. `conv2d` computes each 2D one (default: `prepadded`).
  """
  conv2d = conv2d or prepadded
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


def lead_taps(x, kernel, strides, pads, dilations, groups):
  """The convolution as *one 1D convolution* along the last spatial axis.

  The taps of the leading kernel axes (3 for a 3x3 kernel, 9 for 3x3x3) are gathered into channels:
  `xs[b, *lead, w, (t, c)] = x_pad[b, lead*s + off_t*d, w, c]` and the kernel becomes
  `[k_w, taps * C / groups, out]`. Same sums as the N-d convolution. Its derivatives are what XLA:CPU
  computes fastest under YNNPACK (its N-d weight gradients are slow), so `auto` uses it for the backward
  pass.
  """
  n = x.ndim - 2
  b, c, o = x.shape[0], x.shape[-1], kernel.shape[-1]
  lead_k = kernel.shape[:n - 1]
  # Explicit zero padding + an unpadded convolution (see `prepadded`).
  xp = jnp.pad(x, [(0, 0), *pads, (0, 0)])
  taps = [xp[(slice(None), *idx)] for _, idx in tap_windows(x, lead_k, strides, pads, dilations)]
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
  y = xla_conv(xs, kw, strides[-1:], ((0, 0),), dilations[-1:], groups)
  return y.reshape((b, *out_lead) + y.shape[1:])


def out_taps(x, kernel, strides, pads, dilations, groups):
  """The convolution as *one 1D convolution* along the last spatial axis whose output channels are the
  taps of the leading kernel axes, then a sum of shifted slices.

  `z[b, *p, w, (t, o)] = sum_{j, c} x_pad[b, *p, w*s + j*d, c] kernel[t, j, c, o]` at every padded
  position `p` of the leading axes, and `y[b, *i, w, o] = sum_t z[b, *(i*s + off_t*d), w, t, o]`. Same
  sums as `lead_taps`, which copies the input once per leading tap (`taps x C` channels); this writes
  the 1D convolution's output once per tap instead (`taps x O`), and computes it at the padded leading
  positions too (`(n + k - 1) / n` the work for stride 1; strided, at every position).
  """
  n = x.ndim - 2
  c, o = x.shape[-1], kernel.shape[-1]
  lead_k = kernel.shape[:n - 1]
  t = math.prod(lead_k)
  xp = jnp.pad(x, [(0, 0), *pads, (0, 0)])
  # [t, k_w, C/G, (G, O/G)] -> [k_w, C/G, (G, t, O/G)]: each group's output channels stay contiguous
  kw = kernel.reshape((t, kernel.shape[n - 1], c // groups, groups, o // groups))
  kw = jnp.transpose(kw, (1, 2, 3, 0, 4)).reshape(kernel.shape[n - 1], c // groups, groups * t * (o // groups))
  z = xla_conv(xp.reshape((-1,) + xp.shape[n:]), kw, strides[-1:], ((0, 0),), dilations[-1:], groups)
  z = z.reshape(xp.shape[:n] + z.shape[1:2] + (groups, t, o // groups))
  y = None
  for j, (_, idx) in enumerate(tap_windows(x, lead_k, strides, pads, dilations)):
    term = z[(slice(None), *idx, slice(None), slice(None), j)]
    y = term if y is None else y + term
  return y.reshape(y.shape[:-2] + (o,))


def forward_form(x_shape, kernel_shape, strides, pads, dilations, groups) -> str:
  """"out_taps" or "lead_taps": the faster 1D form of an undifferentiated 2D convolution under YNNPACK.

  "out_taps" where the output has no more channels than the input, the leading strides are 1, no
  groups, and the padded leading positions are at most 1.1x the output's (its extra work); else
  "lead_taps" (measurements: bench/README.md).
  """
  n = len(x_shape) - 2
  if n < 2 or groups != 1 or kernel_shape[-1] > x_shape[-1] or any(s != 1 for s in strides[:-1]):
    return "lead_taps"
  padded = math.prod(x_shape[1 + a] + lo + hi for a, (lo, hi) in enumerate(pads[:-1]))
  out = math.prod(output_size(x_shape[1 + a], kernel_shape[a], 1, pads[a], dilations[a])
                  for a in range(n - 1))
  return "out_taps" if padded <= 1.1 * out else "lead_taps"


def depthwise_taps(x, kernel, strides, pads, dilations):
  """Depthwise convolution (`groups == in_channels`) as a sum over kernel taps of shifted inputs times
  per-channel weights: `y[..., c*m + j] = sum_t x_pad[shift_t][..., c] w[t, 0, c*m + j]`. Element-wise
  work that XLA fuses into one loop (its grouped convolution on CPU is much slower)."""
  n = x.ndim - 2
  c, o = x.shape[-1], kernel.shape[-1]
  m = o // c
  xp = jnp.pad(x, [(0, 0), *pads, (0, 0)])
  ks = kernel.shape[:n]
  y = None
  for off, idx in tap_windows(x, ks, strides, pads, dilations):
    term = xp[(slice(None), *idx)][..., :, None] * kernel[off].reshape(c, m)
    y = term if y is None else y + term
  return y.reshape(y.shape[:-2] + (o,))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def depthwise(x, kernel, strides, pads, dilations, grouped):
  """`depthwise_taps` with derivatives that XLA:CPU runs well.

  Differentiated as is, the weight gradient is one multiply-reduction per tap, and XLA fuses the
  producer of the incoming gradient into each of them: an element-wise tail (a loss, BatchNorm's
  backward, a ReLU mask) is recomputed once per tap. The JVP rule below puts an optimisation barrier on
  the tangent, whose transpose makes the incoming gradient one materialised array. With `grouped`
  (under the Eigen kernels when the process runs without glibc's huge pages, `host_memory`) the weight
  tangent is XLA's grouped convolution, whose transpose was faster there than the per-tap reductions
  while those paid a page fault per 4 KB of their temporaries. A custom JVP: forward and reverse mode
  and higher derivatives all work.
  """
  del grouped
  return depthwise_taps(x, kernel, strides, pads, dilations)


# Inputs of at least this many bytes have their depthwise weight gradient computed two images at a time.
DEPTHWISE_PAIRS_MIN_BYTES = 4 << 20


def _depthwise_weight_tangent(x, dk, strides, pads, dilations):
  """`depthwise_taps(x, dk)`, linear in `dk`, written so that its transpose (the weight gradient) runs
  well on XLA:CPU: mapped over pairs of images (`lax.map`; its transpose is a loop that accumulates the
  per-tap sums pair by pair), the passes of a pair reuse what the first one brought into the caches.
  `jax.checkpoint` keeps the input itself as the loop's residual rather than its shifted copies. Small
  inputs (under `DEPTHWISE_PAIRS_MIN_BYTES`) gain nothing and take the plain form."""
  b = x.shape[0]
  if b < 4 or b % 2 or x.size * x.dtype.itemsize < DEPTHWISE_PAIRS_MIN_BYTES:
    return depthwise_taps(x, dk, strides, pads, dilations)
  pairs = x.reshape((b // 2, 2) + x.shape[1:])
  y = jax.lax.map(jax.checkpoint(lambda xc: depthwise_taps(xc, dk, strides, pads, dilations)), pairs)
  return y.reshape((b,) + y.shape[2:])


def _depthwise_jvp(strides, pads, dilations, grouped, primals, tangents):
  x, kernel = primals
  dx, dk = tangents
  zero = lambda t: isinstance(t, jax.custom_derivatives.SymbolicZero)  # noqa: E731
  y = depthwise_taps(x, kernel, strides, pads, dilations)
  terms = []
  if not zero(dx):
    terms.append(depthwise_taps(dx, kernel, strides, pads, dilations))
  if not zero(dk):
    terms.append(xla_conv(x, dk, strides, pads, dilations, x.shape[-1]) if grouped
                 else _depthwise_weight_tangent(x, dk, strides, pads, dilations))
  if not terms:
    return y, jnp.zeros_like(y)
  return y, jax.lax.optimization_barrier(functools.reduce(jnp.add, terms))


depthwise.defjvp(_depthwise_jvp, symbolic_zeros=True)


def pointwise(x, kernel, strides):
  """A 1x1 convolution (no padding, groups 1) as one matrix product: a strided one reads every s-th
  position, then `[positions, in] x [in, out]`. Not an einsum over "...c,co->...o", whose weight
  gradient contracts three axes at once, which XLA:CPU runs as a transpose copy and a plain dot."""
  n = x.ndim - 2
  if any(s != 1 for s in strides):
    x = x[(slice(None), *(slice(None, None, s) for s in strides))]
  k2 = kernel.reshape(kernel.shape[n:])
  return (x.reshape(-1, x.shape[-1]) @ k2).reshape(x.shape[:-1] + k2.shape[-1:])


def forward(x, kernel, strides, pads, dilations, groups):
  """The undifferentiated convolution under YNNPACK (which runs a 2D convolution on one thread, a 1D one
  on XLA's multi-threaded Eigen kernel): a 1D form (`forward_form`), 3D as the sum over depth of those."""
  if x.ndim == 5:
    return as_2d(x, kernel, strides, pads, dilations, groups, conv2d=forward)
  if forward_form(x.shape, kernel.shape, strides, pads, dilations, groups) == "out_taps":
    return out_taps(x, kernel, strides, pads, dilations, groups)
  return lead_taps(x, kernel, strides, pads, dilations, groups)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def taps(x, kernel, strides, pads, dilations, groups):
  """Evaluated: `forward`. Differentiated: `lead_taps` (forward and tangent), so under `jax.grad` the
  whole convolution, forward and backward, is the lead-taps one, whose weight and input gradients
  XLA:CPU runs fastest under YNNPACK. A custom JVP (not VJP): forward mode, reverse mode and higher
  derivatives all work."""
  return forward(x, kernel, strides, pads, dilations, groups)


def _taps_jvp(strides, pads, dilations, groups, primals, tangents):
  x, kernel = primals
  dx, dk = tangents
  lin = functools.partial(lead_taps, strides=strides, pads=pads, dilations=dilations, groups=groups)
  zero = lambda t: isinstance(t, jax.custom_derivatives.SymbolicZero)  # noqa: E731
  if zero(dx) and zero(dk):
    y = taps(x, kernel, strides, pads, dilations, groups)
    return y, jnp.zeros_like(y)
  if zero(dx):
    return jax.jvp(lambda k: lin(x, k), (kernel,), (dk,))
  if zero(dk):
    return jax.jvp(lambda a: lin(a, kernel), (x,), (dx,))
  return jax.jvp(lin, (x, kernel), (dx, dk))


taps.defjvp(_taps_jvp, symbolic_zeros=True)


def choose(x_shape, kernel_shape, pads, dilations, groups) -> str:
  """The formulation `conv` uses for this convolution on XLA:CPU under the process's policy
  (`policy.current()`: the kernels in use; "lax" on a jaxlib the formulations were not measured on)."""
  n = len(x_shape) - 2
  if not policy.current().known:
    return "lax"
  if groups > 1 and groups == x_shape[-1]:
    return "depthwise"
  if groups == 1 and all(k == 1 for k in kernel_shape[:n]) and all(p == (0, 0) for p in pads):
    return "pointwise"
  if policy.current().eigen:
    # XLA's multi-threaded Eigen convolution: its own 1D/2D convolution and derivatives, except with
    # more padding than "SAME" (the transposed convolution's phases), 3D as sums of 2D ones.
    over = any(lo + hi > (k - 1) * d for (lo, hi), k, d in zip(pads, kernel_shape[:n], dilations))
    return "as_2d" if n == 3 else ("prepadded" if over else "lax")
  return "lax" if n == 1 else "taps"


def conv(x, kernel, strides, pads, dilations, groups, impl: str = "auto"):
  """The convolution `jaxcnn.conv.conv` defines, through formulation `impl` ("auto": `choose`'s).
  Arguments are resolved: per-axis `strides`, `pads` ((low, high) pairs) and `dilations` tuples."""
  n = x.ndim - 2
  if impl == "auto":
    impl = choose(x.shape, kernel.shape, pads, dilations, groups)
  if impl == "taps":
    return taps(x, kernel, strides, pads, dilations, groups)
  if impl == "lax":
    return xla_conv(x, kernel, strides, pads, dilations, groups)
  if impl == "pointwise":
    if groups != 1 or any(k != 1 for k in kernel.shape[:n]) or any(p != (0, 0) for p in pads):
      raise ValueError(f"impl='pointwise' is for 1x1 kernels with no padding and groups=1; got kernel "
                       f"{kernel.shape}, padding {pads}, groups={groups}")
    return pointwise(x, kernel, strides)
  if impl in ("depthwise", "depthwise_taps"):
    if groups != x.shape[-1]:
      raise ValueError(f"impl='{impl}' needs groups == in_channels ({x.shape[-1]}), got {groups}")
    if impl == "depthwise_taps":
      return depthwise_taps(x, kernel, strides, pads, dilations)
    # XLA's grouped convolution for the weight tangent only under Eigen without huge pages.
    grouped = policy.current().eigen and policy.current().host_malloc == "system"
    return depthwise(x, kernel, strides, pads, dilations, grouped)
  if impl == "lead_taps":
    return lead_taps(x, kernel, strides, pads, dilations, groups)
  if impl == "out_taps":
    return out_taps(x, kernel, strides, pads, dilations, groups)
  if impl == "prepadded":
    return prepadded(x, kernel, strides, pads, dilations, groups)
  if impl == "as_2d":
    if n != 3:
      raise ValueError(f"impl='as_2d' is for 3D convolutions; this one has {n} spatial axes")
    return as_2d(x, kernel, strides, pads, dilations, groups)
  raise ValueError(f"unknown impl {impl!r}: use 'auto', 'lax' or one of {', '.join(FORMULATIONS)}")
