"""N-d convolution, true convolution and causal dilated convolution against direct numpy loops."""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jit_init
from jaxcnn.backends.xla_cpu import convolution as xla_cpu_conv
from jaxcnn.backends.xla_cpu import policy
from jaxcnn.conv import Conv, causal_conv, conv, convolve, output_size, resolve_padding


def cpu_policy(monkeypatch, **kw):
  """Trace the CPU formulations for this policy for the rest of the test (the process's is restored), on
  a jaxlib they were measured on whatever the installed one: they are the same sums on any jaxlib."""
  monkeypatch.setattr(policy, "_PROCESS", [policy.Policy(**{"jaxlib": policy.KNOWN_JAXLIB[0], **kw})])


def numpy_conv(x, w, stride, pads, dilation, groups):
  """y[n, i, o] = sum_k sum_c xpad[n, i*s + k*d, g*Cg + c] w[k, c, o], one loop per output position."""
  n_sp = x.ndim - 2
  xp = np.pad(x, [(0, 0)] + list(pads) + [(0, 0)])
  ks, cg, cout = w.shape[:n_sp], w.shape[-2], w.shape[-1]
  og = cout // groups
  outs = [(xp.shape[1 + a] - dilation[a] * (ks[a] - 1) - 1) // stride[a] + 1 for a in range(n_sp)]
  y = np.zeros((x.shape[0], *outs, cout))
  for pos in itertools.product(*[range(o) for o in outs]):
    for k in itertools.product(*[range(kk) for kk in ks]):
      idx = tuple(p * s + kk * d for p, s, kk, d in zip(pos, stride, k, dilation))
      xv = xp[(slice(None), *idx)]  # [batch, cin]
      for g in range(groups):
        y[(slice(None), *pos, slice(g * og, (g + 1) * og))] += \
            xv[:, g * cg:(g + 1) * cg] @ w[(*k, slice(None), slice(g * og, (g + 1) * og))]
  return y


CASES = [  # spatial size, kernel, stride, padding, dilation, groups, cin, cout
    ((11,), (3,), (1,), "SAME", (1,), 1, 3, 4),
    ((12,), (4,), (2,), "VALID", (1,), 1, 2, 3),
    ((13,), (3,), (1,), [(4, 0)], (2,), 2, 4, 6),
    ((13,), (3,), (2,), "SAME", (2,), 3, 3, 6),  # depthwise 1D, multiplier 2, strided and dilated
    ((9, 8), (3, 3), (2, 1), "SAME", (1, 1), 1, 3, 5),
    ((10, 9), (3, 2), (1, 2), 1, (2, 1), 1, 2, 3),
    ((8, 8), (3, 3), (1, 1), "SAME", (1, 1), 4, 4, 8),  # depthwise, multiplier 2
    ((5, 6, 7), (3, 3, 3), (1, 1, 1), "SAME", (1, 1, 1), 1, 2, 3),
    ((7, 6, 5), (3, 2, 3), (2, 1, 2), [(1, 2), (0, 1), (2, 0)], (1, 2, 1), 1, 2, 2),
    ((6, 6, 6), (3, 3, 3), (1, 2, 1), "VALID", (2, 1, 1), 2, 4, 4),
    ((5, 6, 5), (3, 2, 3), (2, 1, 1), "SAME", (1, 1, 2), 3, 3, 3),  # depthwise 3D
    ((11,), (1,), (3,), "VALID", (1,), 1, 3, 2),  # 1x1 ("pointwise"), strided
    ((9, 8), (1, 1), (2, 3), "VALID", (1, 1), 1, 3, 4),
    ((7, 6, 5), (1, 1, 1), (1, 2, 1), "SAME", (1, 1, 1), 1, 2, 3),
]


@pytest.mark.parametrize("size,ks,stride,padding,dilation,groups,cin,cout", CASES)
def test_conv_matches_numpy_loop(size, ks, stride, padding, dilation, groups, cin, cout):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, *size, cin))
  w = rng.normal(size=(*ks, cin // groups, cout))
  b = rng.normal(size=cout)
  pads = resolve_padding(padding, size, ks, stride, dilation)
  want = numpy_conv(x, w, stride, pads, dilation, groups) + b
  got = conv(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32),
             stride=stride, padding=padding, dilation=dilation, groups=groups)
  assert got.shape == want.shape
  assert got.shape[1:-1] == tuple(output_size(n, k, s, p, d)
                                  for n, k, s, p, d in zip(size, ks, stride, pads, dilation))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  if len(size) == 3:  # the default 3D path (sums of 2D convolutions) equals XLA's 3D convolution
    lax = conv(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), stride=stride,
               padding=padding, dilation=dilation, groups=groups, impl="lax")
    np.testing.assert_allclose(got - b, lax, rtol=1e-5, atol=1e-5)


def test_same_padding_output_is_ceil_n_over_s():
  x = jnp.ones((1, 10, 7, 1))
  y = conv(x, jnp.ones((3, 4, 1, 1)), stride=(3, 2), padding="SAME")
  assert y.shape == (1, 4, 4, 1)


@pytest.mark.parametrize("eigen", [True, False], ids=["eigen", "ynnpack"])
@pytest.mark.parametrize("size,ks,stride,padding,dilation,groups,cin,cout",
                         [c for c in CASES if len(c[0]) > 1])
def test_fast_path_derivatives_equal_xla_convolution(size, ks, stride, padding, dilation, groups, cin,
                                                     cout, eigen, monkeypatch):
  """The default path under either XLA:CPU convolution kernel (Eigen: pre-padded XLA convolution, 3D as
  2D sums; YNNPACK: 3D as 2D sums forward, lead-taps derivatives) is the same function as XLA's
  convolution: values, reverse-mode gradients and forward-mode tangents."""
  # eigen without huge pages: the depthwise weight tangent as XLA's grouped convolution (both branches)
  cpu_policy(monkeypatch, kernels="eigen" if eigen else "ynnpack", host_malloc="system")
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, *size, cin)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(*ks, cin // groups, cout)), jnp.float32)
  kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
  loss = lambda impl: lambda x, w: jnp.sum(jnp.sin(conv(x, w, impl=impl, **kw)))
  impls = ("auto", "lead_taps", "out_taps", "prepadded")
  impls += ("depthwise", "depthwise_taps") if groups == cin else ()
  if groups == 1 and all(k == 1 for k in ks) and padding in ("SAME", "VALID"):
    impls += ("pointwise",)
  # Each impl's value, gradients and tangents, in one jitted function per impl: one
  # compile each instead of one per primitive (the tests' time is XLA's compiles).
  tx, tw = jnp.ones_like(x), jnp.ones_like(w)

  @functools.partial(jax.jit, static_argnums=0)
  def outputs(impl, x, w):
    value = conv(x, w, impl=impl, **kw)
    grads = jax.grad(loss(impl), argnums=(0, 1))(x, w)
    tangent = jax.jvp(lambda x, w: conv(x, w, impl=impl, **kw), (x, w), (tx, tw))[1]
    return value, grads, tangent
  want = outputs("lax", x, w)
  for impl in impls:
    got = outputs(impl, x, w)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("eigen", [True, False], ids=["eigen", "ynnpack"])
def test_second_derivatives_through_the_fast_path(eigen, monkeypatch):
  # eigen without huge pages: the depthwise weight tangent as XLA's grouped convolution (both branches)
  cpu_policy(monkeypatch, kernels="eigen" if eigen else "ynnpack", host_malloc="system")
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(1, 5, 6, 2)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 2, 2)), jnp.float32)
  hvp = jax.jit(lambda impl: jax.jvp(jax.grad(lambda w: jnp.sum(jnp.tanh(conv(x, w, impl=impl)))), (w,),
                                     (jnp.ones_like(w),))[1], static_argnums=0)
  np.testing.assert_allclose(hvp("auto"), hvp("lax"), rtol=1e-4, atol=1e-4)
  # the depthwise path's JVP rule (optimisation barrier; Eigen: the grouped-convolution weight tangent),
  # differentiated twice, in both arguments
  xd = jnp.asarray(rng.normal(size=(2, 6, 5, 3)), jnp.float32)
  wd = jnp.asarray(rng.normal(size=(3, 3, 1, 6)), jnp.float32)
  f = lambda impl: lambda x, w: jnp.sum(jnp.tanh(conv(x, w, groups=3, stride=(2, 1), impl=impl)) ** 2)
  hvp2 = jax.jit(lambda impl: jax.jvp(jax.grad(f(impl), argnums=(0, 1)), (xd, wd),
                                      (jnp.ones_like(xd), jnp.ones_like(wd)))[1], static_argnums=0)
  for a, b in zip(hvp2("auto"), hvp2("lax")):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_forward_picks_out_taps_where_it_was_measured_faster():
  """YNNPACK's undifferentiated 2D forward: "out_taps" for O <= C on large images (bench/README.md)."""
  pick = lambda x, k, stride=(1, 1), pads=((1, 1), (1, 1)), dil=(1, 1), groups=1: xla_cpu_conv.forward_form(
      x, k, stride, pads, dil, groups)
  assert pick((16, 56, 56, 64), (3, 3, 64, 64)) == "out_taps"
  assert pick((8, 64, 64, 128), (3, 3, 128, 64)) == "out_taps"
  assert pick((16, 56, 56, 64), (3, 3, 64, 128)) == "lead_taps"  # more output channels
  assert pick((16, 7, 7, 512), (3, 3, 512, 512)) == "lead_taps"  # padded rows 9/7 of the output's
  assert pick((16, 14, 14, 256), (3, 3, 256, 256)) == "lead_taps"  # 16/14 > 1.1
  assert pick((16, 56, 56, 64), (3, 3, 64, 64), stride=(2, 2)) == "lead_taps"
  assert pick((16, 56, 56, 64), (3, 3, 32, 64), groups=2) == "lead_taps"
  assert pick((16, 56, 56, 64), (3, 3, 64, 64), pads=((2, 2), (2, 2)), dil=(2, 2)) == "out_taps"
  assert pick((16, 56, 56, 64), (3, 3, 64, 64), pads=((6, 6), (6, 6)), dil=(6, 6)) == "lead_taps"


@pytest.mark.parametrize("ks,size", [((3, 3), (24, 20)), ((3, 3, 3), (30, 24, 20))])
def test_ynnpack_forward_with_out_taps_equals_xla_convolution(ks, size, monkeypatch):
  """A case where the YNNPACK forward takes the out-taps form (3D: each of its 2D convolutions): the
  value equals XLA's convolution, and the derivatives (lead taps) still do."""
  cpu_policy(monkeypatch, kernels="ynnpack")
  assert xla_cpu_conv.forward_form((2, *size[-2:], 5), (3, 3, 5, 4), (1, 1), ((1, 1), (1, 1)), (1, 1), 1) == \
      "out_taps"
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, *size, 5)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(*ks, 5, 4)), jnp.float32)
  np.testing.assert_allclose(jax.jit(conv)(x, w), conv(x, w, impl="lax"), rtol=1e-4, atol=1e-4)
  loss = lambda impl: lambda x, w: jnp.sum(jnp.sin(conv(x, w, impl=impl)))
  grads = jax.jit(lambda impl: jax.grad(loss(impl), argnums=(0, 1))(x, w), static_argnums=0)
  for a, b in zip(grads("auto"), grads("lax")):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("size,ks,stride,dilation,mult", [
    ((9, 8), (3, 3), (1, 1), (1, 1), 1), ((9, 8), (3, 3), (2, 1), (1, 2), 2), ((6, 5, 7), (3, 2, 3), (1, 2, 1),
    (1, 1, 1), 1), ((13,), (3,), (2,), (2,), 1)])
def test_depthwise_weight_gradient_in_image_pairs_equals_xla(size, ks, stride, dilation, mult,
                                                            monkeypatch):
  """Large inputs get the depthwise weight gradient two images at a time (a loop over pairs): the
  same gradients, forward-mode tangents and second derivatives as XLA's grouped convolution."""
  monkeypatch.setattr(xla_cpu_conv, "DEPTHWISE_PAIRS_MIN_BYTES", 0)
  cpu_policy(monkeypatch, host_malloc="hugepages")
  rng = np.random.default_rng(4)
  c = 3
  x = jnp.asarray(rng.normal(size=(6, *size, c)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(*ks, 1, c * mult)), jnp.float32)
  kw = dict(stride=stride, dilation=dilation, groups=c, padding="SAME")
  loss = lambda impl: lambda x, w: jnp.sum(jnp.sin(conv(x, w, impl=impl, **kw)))
  assert "scan[" in str(jax.make_jaxpr(jax.grad(loss("auto"), argnums=1))(x, w))  # the pairs loop ran

  @functools.partial(jax.jit, static_argnums=0)
  def outputs(impl, x, w):  # one compile per formulation (see above)
    grads = jax.grad(loss(impl), argnums=(0, 1))(x, w)
    tangent = jax.jvp(lambda w: conv(x, w, impl=impl, **kw), (w,), (jnp.ones_like(w),))[1]
    hvp = jax.jvp(jax.grad(loss(impl), argnums=1), (x, w), (jnp.ones_like(x), jnp.ones_like(w)))[1]
    return grads, tangent, hvp
  for a, b in zip(jax.tree.leaves(outputs("auto", x, w)), jax.tree.leaves(outputs("lax", x, w)), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_named_formulations_refuse_convolutions_they_do_not_compute():
  x, w = jnp.ones((1, 6, 6, 4)), jnp.ones((3, 3, 4, 4))
  with pytest.raises(ValueError, match="impl='pointwise' is for 1x1 kernels"):
    conv(x, w, impl="pointwise")
  with pytest.raises(ValueError, match="impl='depthwise' needs groups == in_channels"):
    conv(x, w, impl="depthwise")
  with pytest.raises(ValueError, match="impl='as_2d' is for 3D"):
    conv(x, w, impl="as_2d")


def test_convolve_3d_formula_direct_loop():
  """H(i,j,k) = sum_x sum_y sum_z I(x,y,z) G(i-x, j-y, k-z), summed over every valid index."""
  rng = np.random.default_rng(2)
  image, g = rng.normal(size=(4, 5, 3)), rng.normal(size=(2, 3, 2))
  h = np.zeros([n + k - 1 for n, k in zip(image.shape, g.shape)])
  for i, j, k in itertools.product(*[range(s) for s in h.shape]):
    for x, y, z in itertools.product(*[range(s) for s in image.shape]):
      a, b, c = i - x, j - y, k - z
      if 0 <= a < g.shape[0] and 0 <= b < g.shape[1] and 0 <= c < g.shape[2]:
        h[i, j, k] += image[x, y, z] * g[a, b, c]
  got = convolve(jnp.asarray(image, jnp.float32), jnp.asarray(g, jnp.float32))
  np.testing.assert_allclose(got, h, rtol=1e-5, atol=1e-5)
  # "valid" is the fully overlapping part; cross-correlation is convolution with a flipped kernel.
  valid = convolve(jnp.asarray(image, jnp.float32), jnp.asarray(g, jnp.float32), mode="valid")
  np.testing.assert_allclose(valid, h[1:4, 2:5, 1:3], rtol=1e-5, atol=1e-5)
  xcorr = conv(jnp.asarray(image, jnp.float32)[None, ..., None],
               jnp.asarray(g[::-1, ::-1, ::-1].copy(), jnp.float32)[..., None, None], padding="VALID")
  np.testing.assert_allclose(xcorr[0, ..., 0], valid, rtol=1e-5, atol=1e-5)


def test_convolve_1d_same_mode_matches_numpy():
  x, g = np.arange(7.0), np.array([1.0, 2.0, -1.0, 0.5])
  got = convolve(jnp.asarray(x), jnp.asarray(g), mode="same")
  np.testing.assert_allclose(got, np.convolve(x, g, mode="same"), rtol=1e-6)
  np.testing.assert_allclose(convolve(jnp.asarray(x), jnp.asarray(g)), np.convolve(x, g), rtol=1e-6)


def test_causal_dilated_conv_never_sees_the_future():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(1, 20, 2)).astype(np.float32)
  w = rng.normal(size=(2, 2, 3)).astype(np.float32)
  y = causal_conv(jnp.asarray(x), jnp.asarray(w), dilation=4)
  assert y.shape == (1, 20, 3)
  # y[t] = w[1] x[t] + w[0] x[t - 4], x[t < 0] = 0
  xp = np.concatenate([np.zeros((1, 4, 2), np.float32), x], 1)
  np.testing.assert_allclose(y, xp[:, 4:] @ w[1] + xp[:, :-4] @ w[0], rtol=1e-5, atol=1e-5)
  x2 = x.copy()
  x2[:, 10:] += 100.0  # changing the future leaves the past outputs alone
  y2 = causal_conv(jnp.asarray(x2), jnp.asarray(w), dilation=4)
  np.testing.assert_array_equal(y2[:, :10], y[:, :10])
  assert not np.allclose(y2[:, 10:], y[:, 10:])


@pytest.mark.parametrize("kwargs,message", [
    (dict(x=(1, 5, 3), w=(3, 2, 4)), "input has 3 channels but the kernel expects 2"),
    (dict(x=(1, 5, 4), w=(3, 2, 3), groups=2), "not divisible by groups=2"),
    (dict(x=(1, 5, 5, 3), w=(3, 3, 3)), "1-3 spatial axes"),
    (dict(x=(1, 5, 5, 3), w=(3, 3, 3, 4), padding="CAUSAL"), "CAUSAL padding is for 1D"),
    (dict(x=(1, 5, 3), w=(3, 3, 4), padding="FULL"), "unknown padding 'FULL'"),
    (dict(x=(1, 5, 3), w=(3, 3, 4), stride=(1, 2)), "stride has 2 entries but the convolution is 1-d"),
])
def test_bad_arguments_give_clear_errors(kwargs, message):
  kwargs = dict(kwargs)
  x, w = jnp.ones(kwargs.pop("x")), jnp.ones(kwargs.pop("w"))
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    conv(x, w, **kwargs)


def test_conv_module_is_thin():
  x = jnp.ones((2, 6, 6, 4))
  m = Conv(6, 3, stride=2, groups=2)
  v = jit_init(m, jax.random.PRNGKey(0), x)
  assert jax.tree.map(jnp.shape, v["params"]) == {"kernel": (3, 3, 2, 6), "bias": (6,)}
  np.testing.assert_allclose(m.apply(v, x), conv(x, **v["params"], stride=2, groups=2))
