"""XLA:CPU's formulations, given to the typology through its one hook (`jaxcnn.conv.nd.register_cpu_formulations`).

The typology (`jaxcnn.conv`) imports no backend; this module depends on it and registers, for `conv`,
`conv_transpose` and `max_pool`, the function that computes the same numbers the way XLA:CPU runs them
fastest, chosen for the process's `policy.current()` (which kernels run convolutions, huge pages,
whether this jaxlib is one the formulations were measured on). `import jaxcnn` imports it.
"""
from __future__ import annotations

from jaxcnn.backends.xla_cpu import convolution, policy, pooling, transposed
from jaxcnn.conv import nd


def conv_form(impl, x_shape, kernel_shape, strides, pads, dilations, groups):
  """`f(x, kernel)` for this convolution with formulation `impl` ("auto"/"xla_cpu": `convolution.choose`'s
  for the policy), or None when that is XLA's own."""
  if impl in ("auto", "xla_cpu"):
    impl = convolution.choose(x_shape, kernel_shape, pads, dilations, groups)
  if impl == "lax":
    return None

  def form(x, kernel):
    return convolution.conv(x, kernel, strides, pads, dilations, groups, impl)
  return form


def conv_transpose_form(impl, x_shape, kernel_size, strides, dilations, crops):
  """`f(x, kernel)`: the sub-pixel transposed convolution where it applies, else None (XLA's own); with
  `impl="subpixel"` (by name) an error where it does not."""
  if not transposed.subpixel_fits(x_shape, kernel_size, strides, dilations, crops):
    if impl == "subpixel":
      raise ValueError("impl='subpixel' needs dilation 1 and non-negative padding no larger than the "
                       "output; use impl='lax' (or 'auto') for this transposed convolution")
    return None
  if impl != "subpixel" and not policy.current().known:
    return None

  def form(x, kernel):
    return transposed.subpixel(x, kernel, strides, crops)
  return form


def max_pool_form(impl, x_shape, window):
  """`f(x)`: non-overlapping unpadded max pooling as a reshape + max (the caller checked the window), or
  None on a jaxlib the formulation was not measured on."""
  if not policy.current().known:
    return None

  def form(x):
    return pooling.max_pool_tiles(x, tuple(window))
  return form


nd.register_cpu_formulations(conv=conv_form, conv_transpose=conv_transpose_form, max_pool=max_pool_form)
