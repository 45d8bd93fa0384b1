"""Transposed convolution: the lecture's shapes, a numpy scatter loop, the matrix view K^T, and the
checkerboard overlap counts."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jit_init
from jaxcnn.conv import (ConvTranspose, conv, conv_matrix, conv_transpose, overlap_counts, resize_conv,
                         transposed_output_size)


def numpy_scatter(y, w, stride, padding, output_padding=0, dilation=1):
  """z[j] += y[i] w[k] for j = i*s + k*d - p: each input pixel stamps a scaled kernel onto the output."""
  n_sp = y.ndim - 2
  ks = w.shape[:n_sp]
  outs = [transposed_output_size(y.shape[1 + a], ks[a], stride, padding, output_padding, dilation)
          for a in range(n_sp)]
  z = np.zeros((y.shape[0], *outs, w.shape[-1]))
  for i in itertools.product(*[range(s) for s in y.shape[1:-1]]):
    for k in itertools.product(*[range(s) for s in ks]):
      j = tuple(ii * stride + kk * dilation - padding for ii, kk in zip(i, k))
      if all(0 <= jj < o for jj, o in zip(j, outs)):
        z[(slice(None), *j)] += y[(slice(None), *i)] @ w[k]
  return z


@pytest.mark.parametrize("size,k,stride,padding,output_padding,dilation", [
    ((2, 2), 3, 1, 0, 0, 1),
    ((3, 3), 3, 2, 1, 0, 1),
    ((3, 3), 3, 2, 1, 1, 1),
    ((5,), 4, 3, 1, 2, 1),
    ((4,), 3, 1, 0, 0, 2),
    ((2, 3, 2), 3, 2, 0, 1, 1),
])
def test_conv_transpose_matches_numpy_scatter(size, k, stride, padding, output_padding, dilation):
  rng = np.random.default_rng(0)
  y = rng.normal(size=(2, *size, 3))
  w = rng.normal(size=(*(k,) * len(size), 3, 2))
  got = conv_transpose(jnp.asarray(y, jnp.float32), jnp.asarray(w, jnp.float32), stride=stride,
                       padding=padding, output_padding=output_padding, dilation=dilation)
  np.testing.assert_allclose(got, numpy_scatter(y, w, stride, padding, output_padding, dilation),
                             rtol=1e-4, atol=1e-4)


def test_lecture_shapes_4x4_to_2x2_and_back():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 4, 4, 1)), jnp.float32)
  w = jnp.asarray(np.random.default_rng(2).normal(size=(3, 3, 1, 1)), jnp.float32)
  y = conv(x, w, stride=1, padding=0)                   # 4x4, k=3, s=1, p=0 -> 2x2
  assert y.shape == (1, 2, 2, 1)
  up = conv(y, w, stride=1, padding=2)                  # the "upsampling" conv: k=3, s=1, p=2 -> 4x4
  assert up.shape == (1, 4, 4, 1)
  # ... which is the transposed convolution (p=0) with the kernel flipped: same shape, same numbers.
  tr = conv_transpose(y, jnp.flip(w, (0, 1)), stride=1, padding=0)
  np.testing.assert_allclose(tr, up, rtol=1e-5, atol=1e-5)
  # 3x3 kernel, stride 2, padding 1: 3x3 -> 5x5 ((3-1)*2 - 2 + 3), and back 5x5 -> 3x3 by the conv.
  z = conv_transpose(jnp.ones((1, 3, 3, 1)), w, stride=2, padding=1)
  assert z.shape == (1, 5, 5, 1)
  assert conv(z, w, stride=2, padding=1).shape == (1, 3, 3, 1)
  assert transposed_output_size(3, 3, 2, 1) == 5 and transposed_output_size(2, 3, 1, 0) == 4


def test_matrix_view_conv_is_K_and_transposed_conv_is_K_transpose():
  w = np.array([1.0, 2.0, 3.0])
  K = conv_matrix(w, 6)
  assert K.shape == (4, 6)
  np.testing.assert_array_equal(K[0], [1, 2, 3, 0, 0, 0])
  np.testing.assert_array_equal(K[3], [0, 0, 0, 1, 2, 3])
  x = np.arange(6.0)
  y = conv(jnp.asarray(x)[None, :, None], jnp.asarray(w)[:, None, None], padding="VALID")[0, :, 0]
  np.testing.assert_allclose(y, K @ x)                  # 6 -> 4
  v = np.array([1.0, -1.0, 2.0, 0.5])
  z = conv_transpose(jnp.asarray(v)[None, :, None], jnp.asarray(w)[:, None, None])[0, :, 0]
  assert z.shape == (6,)
  np.testing.assert_allclose(z, K.T @ v)                # 4 -> 6


@pytest.mark.parametrize("n,k,s,p", [(7, 3, 2, 1), (9, 4, 2, 1), (8, 5, 3, 2)])
def test_strided_transposed_conv_is_the_adjoint(n, k, s, p):
  """<conv(x), y> = <x, conv_transpose(y)> and K^T for strided, padded convolutions."""
  w = np.random.default_rng(3).normal(size=k)
  K = conv_matrix(w, n, stride=s, padding=p)
  y = np.random.default_rng(4).normal(size=K.shape[0])
  z = conv_transpose(jnp.asarray(y)[None, :, None], jnp.asarray(w)[:, None, None], stride=s, padding=p,
                     output_padding=n - transposed_output_size(K.shape[0], k, s, p))[0, :, 0]
  np.testing.assert_allclose(z, K.T @ y, rtol=1e-5, atol=1e-6)


def numpy_overlap_1d(n_in, k, s):
  counts = np.zeros((n_in - 1) * s + k)
  for i in range(n_in):
    counts[i * s:i * s + k] += 1
  return counts


def test_checkerboard_overlap_counts():
  # k=3, s=2: interior outputs alternately receive 2 and 1 kernel copies (uneven overlap).
  c = np.asarray(overlap_counts((6,), 3, 2))
  np.testing.assert_array_equal(c, numpy_overlap_1d(6, 3, 2))
  interior = c[2:-2]
  assert set(interior) == {1.0, 2.0} and np.all(interior[:-1] != interior[1:])
  # In 2D the counts are the outer product: a checkerboard of 1, 2 and 4.
  c2 = np.asarray(overlap_counts((6, 6), 3, 2))
  np.testing.assert_array_equal(c2, np.outer(numpy_overlap_1d(6, 3, 2), numpy_overlap_1d(6, 3, 2)))
  assert set(np.unique(c2[2:-2, 2:-2])) == {1.0, 2.0, 4.0}
  # k divisible by s: every interior output receives k/s copies.
  for k, s in ((4, 2), (6, 3), (2, 2)):
    c = np.asarray(overlap_counts((8,), k, s))
    np.testing.assert_array_equal(c, numpy_overlap_1d(8, k, s))
    assert set(c[k:-k]) == {k // s}
  # Resize (nearest) then a 3x3 convolution: a constant input gives a constant interior.
  up = resize_conv(jnp.ones((1, 6, 6, 1)), jnp.ones((3, 3, 1, 1)), scale=2)[0, ..., 0]
  assert up.shape == (12, 12)
  assert np.unique(np.asarray(up)[1:-1, 1:-1]).tolist() == [9.0]


def test_same_padding_doubles_and_errors_are_clear():
  m = ConvTranspose(4, 3, stride=2, padding="SAME")
  x = jnp.ones((1, 5, 7, 2))
  v = jit_init(m, jax.random.PRNGKey(0), x)
  assert m.apply(v, x).shape == (1, 10, 14, 4)
  with pytest.raises(ValueError, match="input has 3 channels but the kernel expects 2"):
    conv_transpose(jnp.ones((1, 4, 3)), jnp.ones((3, 2, 1)))
  with pytest.raises(ValueError, match="output_padding 2 must be smaller than the stride"):
    conv_transpose(jnp.ones((1, 4, 1)), jnp.ones((3, 1, 1)), stride=2, output_padding=2)
  with pytest.raises(ValueError, match="impl='subpixel' needs dilation 1"):
    conv_transpose(jnp.ones((1, 4, 1)), jnp.ones((3, 1, 1)), dilation=2, impl="subpixel")


def test_checkerboard_figure(tmp_path):
  from jaxcnn.conv import checkerboard
  data = checkerboard.panels(size=8)
  (_, c3, r3), (_, c4, _), (_, cr, rr) = data
  assert set(np.unique(c3[1:-1, 1:-1])) == {1.0, 2.0, 4.0}          # uneven: checkerboard
  assert np.unique(c4[1:-1, 1:-1]).tolist() == [4.0]                # k=4, s=2: even
  assert np.unique(cr[1:-1, 1:-1]).tolist() == [9.0]                # resize + conv: even
  assert np.ptp(rr[1:-1, 1:-1]) < 1e-5 < np.ptp(r3[1:-1, 1:-1])
  path = checkerboard.plot(str(tmp_path / "cb.png"))
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("size,k,stride,padding,output_padding", [
    ((5, 6), 4, 2, 1, 0), ((4, 3), 3, 2, 1, 1), ((6,), 5, 3, 2, 2), ((3, 4, 2), 3, 2, 0, 0), ((4, 4), 2, 2, 0, 0),
])
def test_subpixel_path_equals_zero_insertion_values_and_gradients(size, k, stride, padding, output_padding):
  rng = np.random.default_rng(5)
  y = jnp.asarray(rng.normal(size=(2, *size, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(*(k,) * len(size), 3, 4)), jnp.float32)
  kw = dict(stride=stride, padding=padding, output_padding=output_padding)
  # one jitted function per formulation: one compile each instead of one per primitive
  value = jax.jit(lambda impl, y, w: conv_transpose(y, w, impl=impl, **kw), static_argnums=0)
  np.testing.assert_allclose(value("subpixel", y, w), value("lax", y, w), rtol=1e-4, atol=1e-4)
  loss = lambda impl: lambda y, w: jnp.sum(jnp.sin(conv_transpose(y, w, impl=impl, **kw)))
  grads = jax.jit(lambda impl, y, w: jax.grad(loss(impl), argnums=(0, 1))(y, w), static_argnums=0)
  for a, b in zip(grads("auto", y, w), grads("lax", y, w), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
