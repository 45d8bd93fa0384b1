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

`conv` is XLA's convolution (`xla_conv`, four lines). With `impl="auto"`, a program compiled for the CPU
computes the same convolution in the form XLA:CPU runs fastest (jaxcnn/backends/xla_cpu/); a program
compiled for a TPU or GPU holds XLA's own convolution. The choice follows the platform the program is
*compiled for* (`jax.lax.platform_dependent`), not the platform of the host that traces it: a TPU
program compiled on a CPU-only machine (`--mode=compile`) holds no CPU formulation.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Padding = str | int | Sequence[tuple[int, int]]

# "auto": in a program compiled for the CPU the formulation measured fastest on XLA:CPU
# (jaxcnn/backends/xla_cpu/convolution.py), in a program compiled for anything else XLA's own convolution;
# "lax": XLA's own convolution everywhere; "xla_cpu": the XLA:CPU choice whatever the program is compiled
# for; the other names: one XLA:CPU formulation (the same sums), for tests and benchmarks.
IMPLS = ("auto", "lax", "xla_cpu", "prepadded", "as_2d", "lead_taps", "out_taps", "depthwise",
         "depthwise_taps", "pointwise")
_DEFAULT_IMPL = contextvars.ContextVar("jaxcnn_conv_impl", default="auto")


def current_impl() -> str:
  """The `impl` that `impl="auto"` stands for here: "auto" unless a `default_impl` block says otherwise
  (the typology's other operations with an XLA:CPU formulation, transposed convolution and max pooling,
  follow it too)."""
  return _DEFAULT_IMPL.get()


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


def on_cpu(cpu_fn, other_fn, *args):
  """`cpu_fn(*args)` in a program compiled for the CPU, `other_fn(*args)` in one compiled for anything
  else (TPU, GPU). Both are traced; lowering keeps only the target platform's
  (`jax.lax.platform_dependent`), so the decision is the compile target's, not the tracing host's
  `jax.default_backend()`. The typology's operations that have an XLA:CPU formulation (`conv`,
  `conv_transpose`, `max_pool`) choose through this one function."""
  return jax.lax.platform_dependent(*args, cpu=cpu_fn, default=other_fn)


# The hook through which a CPU backend gives the typology its formulations (jaxcnn/backends/xla_cpu/
# registers XLA:CPU's when `jaxcnn` is imported). The typology imports no backend: it states each
# operation, and asks here for the CPU's way of computing the same numbers.
CPU_OPS = ("conv", "conv_transpose", "max_pool")
_CPU_FORMULATIONS: dict = {}


def register_cpu_formulations(**forms) -> None:
  """Register a CPU backend's formulations, by operation: `conv(impl, x_shape, kernel_shape, strides,
  pads, dilations, groups)`, `conv_transpose(impl, x_shape, kernel_size, strides, dilations, crops)`,
  `max_pool(impl, x_shape, window)`. Each returns the function computing that operation on the CPU
  (`f(x, kernel)`, `f(x, kernel)`, `f(x)`; the same numbers as the typology's definition), or None to
  keep XLA's own. `impl` is "auto" (the backend's choice for this process), "xla_cpu" (the same, for
  a program compiled for any platform) or a formulation's name."""
  unknown = sorted(set(forms) - set(CPU_OPS))
  if unknown:
    raise ValueError(f"unknown operations {unknown}: a CPU backend registers some of {', '.join(CPU_OPS)}")
  _CPU_FORMULATIONS.update(forms)


def cpu_form(op: str, impl: str, *shapes):
  """The registered CPU backend's function for `op` with `impl` and these shapes, or None: XLA's own."""
  choose = _CPU_FORMULATIONS.get(op)
  if choose is None:
    if impl in ("auto", "xla_cpu"):
      return None
    raise ValueError(f"impl={impl!r} names an XLA:CPU formulation of {op}, and no CPU backend has "
                     "registered one (import jaxcnn registers jaxcnn/backends/xla_cpu/)")
  return choose(impl, *shapes)


def ntuple(v, n: int, what: str) -> tuple[int, ...]:
  """`v` (an int, or one int per axis) as `n` ints; a clear error when the count is wrong."""
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
  ks, ss, ds = kernel_sizes, ntuple(stride, n, "stride"), ntuple(dilation, n, "dilation")
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


def dimension_numbers(n: int):
  """XLA's channels-last layout names for `n` spatial axes: ("NWC", "WIO", "NWC"), ("NHWC", ...)."""
  spatial = "DHW"[-n:] if n > 1 else "W"
  return ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")


def xla_conv(x, kernel, strides, pads, dilations, groups):
  """XLA's N-d convolution with resolved arguments (per-axis tuples, `(low, high)` pads): the definition
  of `conv`, what it computes on GPU and TPU, and the reference every XLA:CPU formulation equals."""
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=strides, padding=pads, rhs_dilation=dilations,
      dimension_numbers=dimension_numbers(x.ndim - 2), feature_group_count=groups)


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
    impl: "auto": XLA's own convolution (`xla_conv`) in a program compiled for GPU/TPU; in one compiled
      for the CPU the same convolution in the formulation XLA:CPU runs fastest
      (jaxcnn/backends/xla_cpu/convolution.py, measurements in bench/README.md): both are staged out
      with `jax.lax.platform_dependent`, and lowering keeps the one of the target platform. "lax":
      `xla_conv` everywhere. "xla_cpu": the XLA:CPU choice on any platform. Or one XLA:CPU formulation
      by name ("prepadded", "as_2d", "lead_taps", "out_taps", "depthwise", "depthwise_taps",
      "pointwise").
  Returns:
    `[batch, *out_spatial, out_channels]`, `out = floor((n + lo + hi - d (k - 1) - 1) / s) + 1` per axis.
  """
  n = _check(x, kernel, groups, "conv")
  strides, dilations = ntuple(stride, n, "stride"), ntuple(dilation, n, "dilation")
  pads = resolve_padding(padding, x.shape[1:-1], kernel.shape[:n], strides, dilations)
  pads = tuple(tuple(p) for p in pads)
  kernel = kernel.astype(x.dtype)
  if impl not in IMPLS:
    raise ValueError(f"unknown impl {impl!r}: use one of {', '.join(IMPLS)}")
  if impl == "auto":
    impl = current_impl()
    if impl == "as_2d" and n != 3:
      impl = "auto"
  def lax_conv(x, kernel):
    return xla_conv(x, kernel, strides, pads, dilations, groups)

  # the same convolution, as the CPU backend runs it fastest (or one formulation by name); None: XLA's own
  cpu_conv = None if impl == "lax" else cpu_form("conv", impl, x.shape, kernel.shape, strides, pads,
                                                  dilations, groups)
  if cpu_conv is None:
    y = lax_conv(x, kernel)
  elif impl == "auto":
    y = on_cpu(cpu_conv, lax_conv, x, kernel)
  else:
    y = cpu_conv(x, kernel)
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
    ks = ntuple(self.kernel_size, n, "kernel_size")
    if x.shape[-1] % self.groups:
      raise ValueError(f"{x.shape[-1]} input channels are not divisible by groups={self.groups}")
    kernel = self.param("kernel", self.kernel_init, ks + (x.shape[-1] // self.groups, self.features))
    bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
    if self.dtype is not None:
      x = x.astype(self.dtype)
    return conv(x, kernel, bias if add_bias else None, stride=self.stride, padding=self.padding,
                dilation=self.dilation, groups=self.groups)
