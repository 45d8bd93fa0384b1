import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from conftest import jit_init
from jaxcnn.conv import batch_norm, conv, global_avg_pool


def numpy_conv1d_same(x, w, b):
  """Direct loop: y[n, t, o] = sum_k sum_i x[n, t + k - left, i] w[k, i, o] + b[o] (cross-correlation)."""
  k = w.shape[0]
  left = (k - 1) // 2
  xp = np.pad(x, ((0, 0), (left, k - 1 - left), (0, 0)))
  y = np.zeros((x.shape[0], x.shape[1], w.shape[2]))
  for t in range(x.shape[1]):
    y[:, t] = np.einsum("nki,kio->no", xp[:, t:t + k], w)
  return y + b


def test_conv1d_same_matches_numpy_loop():
  rng = np.random.default_rng(0)
  x, w, b = rng.normal(size=(2, 11, 3)), rng.normal(size=(8, 3, 4)), rng.normal(size=4)
  y = conv(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32))
  np.testing.assert_allclose(y, numpy_conv1d_same(x, w, b), rtol=1e-4, atol=1e-4)


def test_batch_norm_mask_uses_only_valid_rows():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(6, 5, 3)).astype(np.float32)
  mask = np.array([1, 1, 1, 1, 0, 0], bool)
  x[~mask] = 1e3  # padding must not leak into the statistics
  ones, zeros = jnp.ones(3), jnp.zeros(3)
  y, (m, v) = batch_norm(jnp.asarray(x), ones, zeros, zeros, ones, train=True, momentum=0.0,
                         epsilon=1e-3, mask=jnp.asarray(mask))
  valid = x[mask].reshape(-1, 3)
  np.testing.assert_allclose(m, valid.mean(0), rtol=1e-5)
  np.testing.assert_allclose(v, valid.var(0), rtol=1e-4)
  np.testing.assert_allclose(y[mask], (x[mask] - valid.mean(0)) / np.sqrt(valid.var(0) + 1e-3),
                             rtol=1e-4, atol=1e-4)


def test_batch_norm_over_devices_equals_global_batch_with_uneven_padding():
  """8 devices, the last three hold only padding: the statistics are still the global ones."""
  devices = jax.devices()
  assert len(devices) == 8
  rng = np.random.default_rng(2)
  x = rng.normal(size=(16, 4, 3)).astype(np.float32)
  mask = np.arange(16) < 10
  ones, zeros = jnp.ones(3), jnp.zeros(3)
  f = functools.partial(batch_norm, scale=ones, bias=zeros, mean=zeros, var=ones, train=True,
                        momentum=0.0)
  y1, (m1, v1) = f(jnp.asarray(x), mask=jnp.asarray(mask))
  mesh = Mesh(np.array(devices), ("data",))
  sharded = jax.jit(jax.shard_map(lambda x, m: f(x, mask=m, axis_name="data"), mesh=mesh,
                                  in_specs=(P("data"), P("data")), out_specs=(P("data"), (P(), P()))))
  y8, (m8, v8) = sharded(jnp.asarray(x), jnp.asarray(mask))
  np.testing.assert_allclose(m8, m1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(v8, v1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(y8)[mask], np.asarray(y1)[mask], rtol=1e-5, atol=1e-5)


def test_global_avg_pool_with_mask():
  x = jnp.arange(2 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 1)
  mask = jnp.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
  np.testing.assert_allclose(global_avg_pool(x), [[1.5], [5.5]])
  np.testing.assert_allclose(global_avg_pool(x, mask), [[0.5], [5.5]])


def test_a_bias_handed_to_batch_norm_gives_the_same_outputs_and_an_exactly_zero_gradient():
  """`BatchNorm(input_bias=b)` on `x` equals BatchNorm of `x + b` in training (the batch's statistics,
  the running mean that includes b) and in inference, while the gradient of b is exactly 0, not
  rounding noise that Adam would turn into lr-sized steps."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(2.0, 3.0, size=(5, 9, 4)), jnp.float32)
  b = jnp.asarray(rng.normal(size=4) * 5, jnp.float32)
  scale, shift = jnp.asarray(rng.uniform(0.5, 2, 4), jnp.float32), jnp.asarray(rng.normal(size=4), jnp.float32)
  mean, var = jnp.asarray(rng.normal(size=4), jnp.float32), jnp.asarray(rng.uniform(1, 2, 4), jnp.float32)
  for train in (True, False):
    ref, (rm, rv) = batch_norm(x + b, scale, shift, mean, var, train=train)
    y, (m, v) = batch_norm(x, scale, shift, mean, var, train=train, input_bias=b)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m, rm, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(v, rv, rtol=1e-5)

  def loss(b, fold):
    y, _ = batch_norm(x + b if fold else x, scale, shift, mean, var, train=True,
                      input_bias=None if fold else b)
    return jnp.sum(jnp.sin(y))
  assert np.all(np.asarray(jax.grad(loss)(b, False)) == 0.0)
  assert np.any(np.asarray(jax.grad(loss)(b, True)) != 0.0)  # the folded form: rounding noise


def test_the_fcn_conv_bias_gets_no_adam_steps():
  """FCN keeps Keras's conv biases (parameter count, weight layout) but they cancel in BatchNorm: after
  Adam steps they are still exactly their initial zeros, while every other parameter moved."""
  import optax

  from jaxcnn.models.fcn import FCN
  model = FCN(num_classes=2, filters=(4, 8, 4))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 30, 1)), jnp.float32)
  labels = jnp.array([0, 1, 0, 1, 1, 0])
  v = jit_init(model, jax.random.key(0), x)
  params, stats = v["params"], v["batch_stats"]
  tx = optax.adam(1e-2)
  opt = tx.init(params)

  def loss(p, stats):
    logits, new = model.apply({"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new["batch_stats"]

  @jax.jit  # (one compile; op by op, the five steps took 13 s on 2 cores)
  def step(params, stats, opt):
    (_, stats), g = jax.value_and_grad(loss, has_aux=True)(params, stats)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), stats, opt
  for _ in range(5):
    params, stats, opt = step(params, stats, opt)
  for name in ("ConvBNReLU_0", "ConvBNReLU_1", "ConvBNReLU_2"):
    assert np.all(np.asarray(params[name]["Conv_0"]["bias"]) == 0.0)
    assert np.any(np.asarray(params[name]["Conv_0"]["kernel"]) != np.asarray(v["params"][name]["Conv_0"]["kernel"]))
