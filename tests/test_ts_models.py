"""Time-series models of issue 6: InceptionTime and TCN structure, TCN causality and receptive field,
and padding invariance (variable-length masking) of every 1D classifier."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jit_init
from jaxcnn.models.fcn import FCN
from jaxcnn.models.inception_time import InceptionNet, masked_max_pool
from jaxcnn.models.resnet_ts import ResNetTS
from jaxcnn.models.tcn import TCN, levels_for, receptive_field, weight_norm_kernel


def _init(model, x):
  # Jitted: eager Flax init dispatches every op separately, which is slower than one compile.
  return jit_init(model, {"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=False)


def _shapes(model, x):
  """The variables' shapes only (no compile): for parameter counts."""
  return jax.eval_shape(lambda x: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x,
                                             train=False), x)


def _apply(model, train: bool):
  """`f(variables, x, mask)`: jitted logits (training mode: BatchNorm on batch statistics, dropout)."""
  def f(v, x, mask=None):
    if train:
      return model.apply(v, x, mask=mask, train=True, rngs={"dropout": jax.random.key(3)},
                         mutable=["batch_stats"])[0]
    return model.apply(v, x, mask=mask, train=False)
  return jax.jit(f)


def test_inception_time_structure():
  model = InceptionNet(num_classes=3)  # the paper's sizes
  v = _init(model, jnp.zeros((2, 50, 1)))
  p = v["params"]
  assert sorted(k for k in p if k.startswith("shortcut")) == ["shortcut3", "shortcut3_bn", "shortcut6",
                                                              "shortcut6_bn"]
  # A univariate input skips the first bottleneck; later modules see 128 channels and have one.
  assert "bottleneck" not in p["inception1"] and p["inception2"]["bottleneck"]["kernel"].shape == (1, 128, 32)
  assert p["inception1"]["conv_k40"]["kernel"].shape == (40, 1, 32)
  assert p["inception2"]["conv_k10"]["kernel"].shape == (10, 32, 32)
  assert p["inception1"]["pool_conv"]["kernel"].shape == (1, 1, 32)
  assert all("bias" not in p[f"inception{i}"]["conv_k20"] for i in range(1, 7))
  assert p["shortcut3"]["kernel"].shape == (1, 1, 128) and p["head"]["kernel"].shape == (128, 3)
  # Multivariate input: every module has a bottleneck.
  p6 = _shapes(model, jnp.zeros((2, 50, 6)))["params"]
  assert p6["inception1"]["bottleneck"]["kernel"].shape == (1, 6, 32)
  # Closed form, 1 input channel, 3 classes: module 1 (no bottleneck), modules 2-6 (128 -> 32 bottleneck),
  # the two shortcuts (1 -> 128 and 128 -> 128, + BatchNorm), the head.
  first = 70 * 1 * 32 + 1 * 32 + 2 * 128
  later = 128 * 32 + 70 * 32 * 32 + 128 * 32 + 2 * 128
  expected = first + 5 * later + (128 + 256) + (128 * 128 + 256) + 128 * 3 + 3
  assert sum(a.size for a in jax.tree.leaves(p)) == expected == 420_579
  out = _apply(model, False)(v, jax.random.normal(jax.random.key(2), (2, 50, 1)))
  assert out.shape == (2, 3) and np.isfinite(np.asarray(out)).all()


def test_masked_max_pool_never_takes_padding():
  x = jnp.array([[[1.0], [-2.0], [-3.0], [0.0], [0.0]]])
  mask = jnp.array([[True, True, True, False, False]])
  got = masked_max_pool(x, 3, mask)[0, :, 0]
  np.testing.assert_array_equal(got, [1.0, 1.0, -2.0, 0.0, 0.0])  # padded zeros do not beat -2, -3
  # ... and without a mask the pool's own "same" padding is -inf as well.
  np.testing.assert_array_equal(masked_max_pool(x[:, :3], 3, None)[0, :, 0], [1.0, 1.0, -2.0])


MODELS = {
    "fcn": lambda: FCN(num_classes=3, filters=(8, 8, 8)),
    "inception_time": lambda: InceptionNet(num_classes=3, filters=4, bottleneck=4),
    "tcn": lambda: TCN(num_classes=3, channels=6, levels=3, kernel_size=3, dropout=0.0),
    "resnet_ts": lambda: ResNetTS(num_classes=3, filters=(8, 8, 8)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_padding_does_not_change_the_output(name):
  """Variable-length masking: a batch padded to any length gives the output of the bare batch, in
  inference and in training mode (BatchNorm statistics over valid steps only)."""
  model = MODELS[name]()
  rng = np.random.default_rng(0)
  n, c = 30, 2
  x = jnp.asarray(rng.normal(size=(3, n, c)), jnp.float32)
  v = _init(model, x)
  # Non-trivial running statistics, so eval-mode BatchNorm would shift padded steps away from zero.
  v = jax.tree.map(lambda a: a + 0.3, v)
  for train in (False, True):
    apply = _apply(model, train)
    bare = apply(v, x)
    for pad in (7, 25):
      # Garbage (not zeros) after the end: the model must not look at it.
      xp = jnp.concatenate([x, jnp.asarray(rng.normal(size=(3, pad, c)) * 5, jnp.float32)], axis=1)
      mask = jnp.broadcast_to(jnp.arange(n + pad)[None, :] < n, (3, n + pad))
      np.testing.assert_allclose(apply(v, xp, mask), bare, rtol=2e-5, atol=2e-5,
                                 err_msg=f"{name} train={train} pad={pad}")


def test_mixed_lengths_in_one_batch_equal_each_series_alone():
  model = MODELS["inception_time"]()
  rng = np.random.default_rng(1)
  lengths = [17, 40, 29]
  series = [jnp.asarray(rng.normal(size=(1, n, 2)), jnp.float32) for n in lengths]
  v = _init(model, series[1])
  batch = jnp.concatenate([jnp.pad(s, ((0, 0), (0, 40 - s.shape[1]), (0, 0))) for s in series])
  mask = jnp.arange(40)[None, :] < jnp.asarray(lengths)[:, None]
  apply = _apply(model, False)
  out = apply(v, batch, mask)
  for i, s in enumerate(series):
    np.testing.assert_allclose(out[i], apply(v, s)[0], rtol=2e-5, atol=2e-5)


def test_tcn_is_causal_and_its_receptive_field_is_the_formula():
  k, levels, length = 3, 3, 64
  rf = receptive_field(k, levels)
  assert rf == 1 + 2 * (k - 1) * (2 ** levels - 1) == 29
  model = TCN(num_classes=2, channels=16, levels=levels, kernel_size=k, dropout=0.0)
  x = jax.random.normal(jax.random.key(0), (1, length, 3))
  v = _init(model, x)
  grad = jax.jit(jax.grad(lambda x, mask: model.apply(v, x, mask=mask, train=False)[0, 1]))
  for t in (10, 40, 63):  # the output read at step t (the last valid step of a series of t + 1 steps)
    g = grad(x, (jnp.arange(length) <= t)[None])
    touched = np.flatnonzero(np.abs(np.asarray(g[0])).sum(-1) > 0)
    assert touched.max() == t, "the output at t must not depend on inputs after t (causality)"
    assert touched.min() == max(0, t - rf + 1), f"receptive field at t={t}"
  # Changing every input after t leaves the output at t exactly as it was.
  t = 40
  mask = (jnp.arange(length) <= t)[None]
  x2 = x.at[:, t + 1:].set(100.0)
  apply = _apply(model, False)
  np.testing.assert_array_equal(apply(v, x, mask), apply(v, x2, mask))
  assert levels_for(length, k) == 5 and receptive_field(k, 5) >= length > receptive_field(k, 4)


def test_tcn_weight_norm_and_blocks():
  model = TCN(num_classes=5, channels=(8, 8, 12), kernel_size=4)
  v = _init(model, jnp.zeros((2, 20, 3)))
  p = v["params"]
  assert set(p) == {"block1", "block2", "block3", "head"}
  assert "downsample" in p["block1"] and "downsample" not in p["block2"] and "downsample" in p["block3"]
  # The paper's sequential-MNIST TCN on one input channel: 8 blocks of 25, kernel 7, + a 4-class head.
  big = _shapes(TCN(num_classes=4), jnp.zeros((1, 30, 1)))["params"]
  conv1, conv2 = 7 * 1 * 25 + 2 * 25, 7 * 25 * 25 + 2 * 25
  assert sum(a.size for a in jax.tree.leaves(big)) == (conv1 + conv2 + 25 + 25) + 7 * 2 * conv2 + 25 * 4 + 4
  conv = p["block1"]["conv1"]
  assert conv["v"].shape == (4, 3, 8) and conv["g"].shape == (8,)
  w = weight_norm_kernel(conv["v"], conv["g"])
  # Initially g = ||v||, so the effective kernel is v itself; the per-output-channel norm is g.
  np.testing.assert_allclose(w, conv["v"], rtol=1e-6)
  w2 = weight_norm_kernel(conv["v"], 2 * conv["g"] + 1)
  np.testing.assert_allclose(np.sqrt((np.asarray(w2) ** 2).sum(axis=(0, 1))), 2 * conv["g"] + 1, rtol=1e-5)
  # Dropout is active in training only.
  x = jax.random.normal(jax.random.key(1), (2, 20, 3))
  drop = TCN(num_classes=5, channels=8, levels=2, kernel_size=3, dropout=0.5)
  vd = _init(drop, x)
  run = jax.jit(lambda key, train: drop.apply(vd, x, train=train, rngs={"dropout": key}),
                static_argnums=1)
  assert not np.allclose(run(jax.random.key(1), True), run(jax.random.key(2), True))
  np.testing.assert_array_equal(run(jax.random.key(1), False), run(jax.random.key(2), False))
