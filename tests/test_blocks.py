"""Inception, separable, residual, pooling and squeeze-and-excitation against numpy references."""
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jit_init
from jaxcnn.conv import (BasicBlock, BottleneckBlock, DepthwiseSeparableConv, InceptionAsymmetric,
                         InceptionFactorized, InceptionNaive, InceptionReduced, SqueezeExcite, avg_pool,
                         conv, depthwise_separable_conv, global_avg_pool, global_max_pool, inception,
                         max_pool, residual, sobel_kernels, spatially_separable_conv)

KEY = jax.random.PRNGKey(0)


def init_apply(module, x, **kw):
  v = jit_init(module, KEY, x, **kw)
  return v, jax.jit(lambda v, x: module.apply(v, x, **kw))(v, x)


def test_inception_naive_output_is_28x28x672():
  x = jnp.ones((1, 28, 28, 256))
  v, y = init_apply(InceptionNaive(128, 192, 96), x)
  assert y.shape == (1, 28, 28, 128 + 192 + 96 + 256)
  # The pooled branch is the input's 3x3 max: concatenated last, unchanged channels.
  np.testing.assert_allclose(y[..., -256:], max_pool(x, 3, 1, "SAME"))


def test_inception_variants_shapes_and_branches():
  x = jax.random.normal(KEY, (2, 17, 17, 32))
  _, y = init_apply(InceptionReduced(), x)
  assert y.shape == (2, 17, 17, 64 + 128 + 32 + 32)
  v, y = init_apply(InceptionFactorized(), x)
  assert y.shape == (2, 17, 17, 256)
  assert v["params"]["conv3x3_a"]["kernel"].shape == (3, 3, 16, 32)
  v, y = init_apply(InceptionAsymmetric(n=7), x)
  assert y.shape == (2, 17, 17, 192 + 192 + 192)
  assert v["params"]["conv1x7"]["kernel"].shape == (1, 7, 128, 128)
  assert v["params"]["conv7x1"]["kernel"].shape == (7, 1, 128, 192)
  with pytest.raises(ValueError, match="inception branches disagree"):
    inception(x, [lambda t: t, lambda t: t[:, ::2]])


def test_sobel_is_separable_and_equals_the_full_kernel():
  col, row, full = sobel_kernels()
  np.testing.assert_array_equal(full, [[1, 0, -1], [2, 0, -2], [1, 0, -1]])
  img = jax.random.uniform(KEY, (2, 9, 11, 3))
  sep = spatially_separable_conv(img, col, row, padding="VALID")
  dense = conv(img, jnp.tile(full[:, :, None, None], (1, 1, 1, 3)), padding="VALID", groups=3)
  np.testing.assert_allclose(sep, dense, rtol=1e-5, atol=1e-5)
  # numpy reference: cross-correlate every channel with the 3x3 Sobel kernel.
  ref = np.zeros((2, 7, 9, 3))
  for i, j in itertools.product(range(7), range(9)):
    ref[:, i, j] = np.einsum("nhwc,hw->nc", np.asarray(img)[:, i:i + 3, j:j + 3], np.asarray(full))
  np.testing.assert_allclose(sep, ref, rtol=1e-5, atol=1e-5)
  same = spatially_separable_conv(img, col, row, padding=1)
  np.testing.assert_allclose(same, conv(img, jnp.tile(full[:, :, None, None], (1, 1, 1, 3)), padding=1,
                                        groups=3), rtol=1e-5, atol=1e-5)


def test_depthwise_separable_equals_depthwise_then_pointwise_and_counts_weights():
  x = jax.random.normal(KEY, (2, 8, 8, 4))
  m = DepthwiseSeparableConv(16, 3, depth_multiplier=2)
  v, y = init_apply(m, x)
  p = v["params"]
  assert p["depthwise"]["kernel"].shape == (3, 3, 1, 8)
  assert p["pointwise"]["kernel"].shape == (1, 1, 8, 16)
  np.testing.assert_allclose(y, depthwise_separable_conv(x, p["depthwise"]["kernel"],
                                                         p["pointwise"]["kernel"], p["pointwise"]["bias"]),
                             rtol=1e-5, atol=1e-5)
  # Depthwise: output channel c*m + j only sees input channel c.
  dw = np.asarray(p["depthwise"]["kernel"])
  xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  ref = np.zeros((2, 8, 8, 8))
  for i, j, c, mm in itertools.product(range(8), range(8), range(4), range(2)):
    ref[:, i, j, c * 2 + mm] = np.einsum("nhw,hw->n", xp[:, i:i + 3, j:j + 3, c], dw[:, :, 0, c * 2 + mm])
  np.testing.assert_allclose(ref @ np.asarray(p["pointwise"]["kernel"][0, 0]) + p["pointwise"]["bias"], y,
                             rtol=1e-4, atol=1e-4)
  # k^2 C m + C m F (+F bias) vs k^2 C F for the full convolution.
  n = sum(a.size for a in jax.tree.leaves(p))
  assert n == 9 * 4 * 2 + 8 * 16 + 16 and 9 * 4 * 16 + 16 > n


def test_residual_identity_and_projection():
  x = jax.random.normal(KEY, (2, 8, 8, 16))
  np.testing.assert_allclose(residual(x, lambda t: 2 * t), 3 * x)
  with pytest.raises(ValueError, match="use a projection shortcut"):
    residual(x, lambda t: t[:, ::2, ::2])
  # Zero the residual branch: an identity block outputs relu(x) = H(x) with F(x) = 0.
  block = BasicBlock(16, norm=None)
  v = jit_init(block, KEY, x)
  zeroed = jax.tree_util.tree_map_with_path(
      lambda path, a: jnp.zeros_like(a) if path[1].key == "conv2" else a, v)
  np.testing.assert_allclose(block.apply(zeroed, x), nn.relu(x), atol=1e-6)
  assert "proj" not in v["params"]
  # Stride 2 / more channels: a 1x1 strided projection W_s.
  v, y = init_apply(BasicBlock(32, stride=2), x, train=False)
  assert y.shape == (2, 4, 4, 32) and v["params"]["proj"]["kernel"].shape == (1, 1, 16, 32)
  v, y = init_apply(BottleneckBlock(8), x, train=False)
  assert y.shape == (2, 8, 8, 32) and v["params"]["proj"]["kernel"].shape == (1, 1, 16, 32)
  v, y = init_apply(BottleneckBlock(4), x, train=False)  # 4 * 4 = 16 channels: identity shortcut
  assert y.shape == x.shape and "proj" not in v["params"]
  v, y = init_apply(BasicBlock(16, projection="always"), x, train=False)
  assert "proj" in v["params"]


def numpy_pool(x, window, stride, reduce):
  n = x.ndim - 2
  outs = [(x.shape[1 + a] - window) // stride + 1 for a in range(n)]
  y = np.zeros((x.shape[0], *outs, x.shape[-1]))
  for pos in itertools.product(*[range(o) for o in outs]):
    win = x[(slice(None), *[slice(p * stride, p * stride + window) for p in pos])]
    y[(slice(None), *pos)] = reduce(win.reshape(x.shape[0], -1, x.shape[-1]), axis=1)
  return y


@pytest.mark.parametrize("shape", [(2, 9, 3), (2, 8, 7, 3), (1, 6, 5, 7, 2)])
def test_pooling_1d_2d_3d(shape):
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  np.testing.assert_allclose(max_pool(jnp.asarray(x), 2), numpy_pool(x, 2, 2, np.max), rtol=1e-6)
  np.testing.assert_allclose(avg_pool(jnp.asarray(x), 3, 1), numpy_pool(x, 3, 1, np.mean), rtol=1e-5)
  np.testing.assert_allclose(global_avg_pool(jnp.asarray(x)), x.mean(tuple(range(1, x.ndim - 1))),
                             rtol=1e-5)
  np.testing.assert_allclose(global_max_pool(jnp.asarray(x)), x.max(tuple(range(1, x.ndim - 1))))


def test_same_avg_pool_does_not_count_padding_and_max_ignores_it():
  x = -jnp.ones((1, 4, 1))
  np.testing.assert_allclose(avg_pool(x, 3, 1, "SAME")[0, :, 0], [-1, -1, -1, -1])
  np.testing.assert_allclose(max_pool(x, 3, 1, "SAME")[0, :, 0], [-1, -1, -1, -1])


def test_squeeze_excite_matches_numpy():
  x = jax.random.normal(KEY, (2, 5, 5, 32))
  m = SqueezeExcite(ratio=8)
  v, y = init_apply(m, x)
  p = jax.tree.map(np.asarray, v["params"])
  s = np.asarray(x).mean((1, 2))
  z = np.maximum(s @ p["reduce"]["kernel"] + p["reduce"]["bias"], 0)
  e = 1 / (1 + np.exp(-(z @ p["expand"]["kernel"] + p["expand"]["bias"])))
  assert p["reduce"]["kernel"].shape == (32, 4)
  np.testing.assert_allclose(y, np.asarray(x) * e[:, None, None, :], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,window", [((2, 1010, 4), 3), ((2, 9, 11, 3), 2), ((2, 7, 6, 3), (3, 2)),
                                          ((1, 5, 6, 7, 2), 2)])
def test_max_pool_fast_path_equals_reduce_window_with_ties(shape, window):
  """Non-overlapping max-pooling on CPU (reshape + max, custom gradient) gives XLA's numbers exactly:
  the same maxima and the whole gradient on the first maximum of each window, ties included."""
  from jaxcnn.conv import pooling
  from jaxcnn.conv.nd import ntuple
  rng = np.random.default_rng(0)
  x = jnp.asarray(np.maximum(rng.integers(-2, 3, shape), 0).astype(np.float32))  # many ties
  ws = ntuple(window, x.ndim - 2, "window")
  ref = lambda v: jax.lax.reduce_window(v, -jnp.inf, jax.lax.max, (1, *ws, 1), (1, *ws, 1), "VALID")  # noqa: E731
  new = lambda v: pooling.max_pool(v, window)  # noqa: E731
  y, vjp = jax.vjp(new, x)
  y_ref, vjp_ref = jax.vjp(ref, x)
  np.testing.assert_array_equal(y, y_ref)
  g = jnp.asarray(rng.standard_normal(y.shape).astype(np.float32))
  np.testing.assert_array_equal(vjp(g)[0], vjp_ref(g)[0])
