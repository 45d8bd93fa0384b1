"""The architecture zoo: exact parameter counts (torchvision's published numbers, the papers'), shapes,
the building blocks against numpy, and a jitted train step of every model on 8 fake devices."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import jit_init
from jaxcnn import arithmetic, registry
from jaxcnn.conv import adaptive_avg_pool, zero_pad_shortcut
from jaxcnn.models.lenet import C3_TABLE, sparse_conv
from jaxcnn.tasks.classification import Classification
from jaxcnn.train import step as step_lib
from jaxcnn.train.parallel import Parallel
from jaxcnn.train.state import create_train_state, num_params

registry.load_all()

# torchvision's model documentation ("num_params" of each IMAGENET1K_V1 weight), 1000 classes.
TORCHVISION_PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336, "vgg11_bn": 132_868_840, "vgg13": 133_047_848, "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544, "vgg16_bn": 138_365_992, "vgg19": 143_667_240, "vgg19_bn": 143_678_248,
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808,
}
# He et al. 2016, Table 6 (0.27M, 0.46M, 0.66M, 0.85M, 1.7M), exact with option A shortcuts.
CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}


def init_shapes(name, shape, **kw):
  model = registry.MODELS.build(name, **kw)
  return model, jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape)))


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_imagenet_parameter_counts_equal_torchvision(name):
  model, variables = init_shapes(name, (1, 224, 224, 3))
  assert num_params(variables["params"]) == TORCHVISION_PARAMS[name]
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 224, 224, 3))), variables)
  assert out.shape == (2, 1000) and out.dtype == jnp.float32


def test_googlenet_parameter_counts():
  # torchvision ships GoogLeNet without the auxiliary heads: 6,624,904; with them 13,004,888.
  _, v = init_shapes("googlenet_bn", (1, 224, 224, 3), aux_logits=False)
  assert num_params(v["params"]) == 6_624_904
  _, v = init_shapes("googlenet_bn", (1, 224, 224, 3))
  assert num_params(v["params"]) == 13_004_888
  # The paper's version: biases instead of BatchNorm and 5x5 branches; inception (3a) alone is the
  # typology's InceptionReduced default, 163,696 parameters.
  _, v = init_shapes("googlenet", (1, 224, 224, 3), aux_logits=False)
  assert num_params(v["params"]["inception3a"]) == 163_696
  five = sum(r * f * 25 for (_, _, _, r, f, _) in _inception_table())
  three = sum(r * f * 9 for (_, _, _, r, f, _) in _inception_table())
  _, vbn = init_shapes("googlenet_bn", (1, 224, 224, 3), aux_logits=False, branch3_kernel=5)
  # With 5x5 branches the BN version differs from torchvision's only by 16 * sum(r * f).
  assert num_params(vbn["params"]) == 6_624_904 + five - three


def _inception_table():
  from jaxcnn.models.googlenet import INCEPTION_V1
  return INCEPTION_V1.values()


@pytest.mark.parametrize("depth", sorted(CIFAR_PARAMS))
def test_cifar_resnet_parameter_counts(depth):
  model, v = init_shapes(f"cifar_resnet{depth}", (1, 32, 32, 3))
  assert num_params(v["params"]) == CIFAR_PARAMS[depth]
  assert jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3))), v).shape == (2, 10)


def test_lenet5_has_the_papers_60000_parameters_layer_by_layer():
  _, v = init_shapes("lenet5", (1, 32, 32, 1))
  p = {k: num_params(v["params"][k]) for k in v["params"]}
  # Section II.B: C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164 = 60,000 trainable parameters.
  assert p == {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120, "F6": 10164, "head": 850}
  assert sum(p.values()) - p["head"] == 60_000
  _, v = init_shapes("lenet5", (1, 32, 32, 1), c3_table=False, subsampling="max")
  assert num_params(v["params"]) == 156 + 16 * (6 * 25 + 1) + 48120 + 10164 + 850 == 61_706


def test_c3d_parameter_count_by_closed_form():
  # 3x3x3 convolutions with bias, pool5 padded to 1x4x4x512 = 8192 features, fc6/fc7 4096, 487 classes.
  chans = [3, 64, 128, 256, 256, 512, 512, 512, 512]
  convs = sum(27 * a * b + b for a, b in zip(chans[:-1], chans[1:]))
  dense = (8192 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 487 + 487)
  model, v = init_shapes("c3d", (1, 16, 112, 112, 3))
  assert num_params(v["params"]) == convs + dense == 79_991_015
  assert jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 16, 112, 112, 3))), v).shape == (2, 487)


def test_sparse_c3_equals_a_numpy_loop_over_the_connection_table():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 14, 14, 6)).astype(np.float32)
  n = sum(len(c) for c in C3_TABLE)
  w = rng.normal(size=(5, 5, n)).astype(np.float32)
  b = rng.normal(size=(16,)).astype(np.float32)
  got = np.asarray(sparse_conv(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), C3_TABLE, 5))
  want = np.zeros((2, 10, 10, 16), np.float32)
  k = 0
  for j, cols in enumerate(C3_TABLE):
    for c in cols:
      for i0 in range(10):
        for i1 in range(10):
          want[:, i0, i1, j] += np.einsum("bpq,pq->b", x[:, i0:i0 + 5, i1:i1 + 5, c], w[:, :, k])
      k += 1
    want[..., j] += b[j]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size_in,size_out", [(13, 6), (14, 4), (7, 7), (1, 7), (12, 3)])
def test_adaptive_avg_pool_uses_pytorchs_bins(size_in, size_out):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, size_in, size_in + 1, 3)).astype(np.float32)
  got = np.asarray(adaptive_avg_pool(jnp.asarray(x), size_out))
  want = np.zeros((2, size_out, size_out, 3), np.float32)
  for i in range(size_out):
    for j in range(size_out):
      h0, h1 = int(np.floor(i * size_in / size_out)), int(np.ceil((i + 1) * size_in / size_out))
      w0, w1 = (int(np.floor(j * (size_in + 1) / size_out)),
                int(np.ceil((j + 1) * (size_in + 1) / size_out)))
      want[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_zero_pad_shortcut_is_option_a():
  x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
  y = zero_pad_shortcut(x, 5, stride=2)
  assert y.shape == (2, 2, 2, 5)
  np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2])
  assert not np.any(y[..., 3:])


def test_googlenet_auxiliary_heads_in_training_only():
  model = registry.MODELS.build("googlenet_bn", num_classes=5)
  x = jnp.zeros((2, 64, 64, 3))
  v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(1), x))
  train = jax.eval_shape(lambda v: model.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)},
                                               mutable=["batch_stats"])[0], v)
  logits, aux = train
  assert logits.shape == (2, 5) and len(aux) == 2 and all(a.shape == (2, 5) for a in aux)
  assert jax.eval_shape(lambda v: model.apply(v, x), v).shape == (2, 5)  # inference: main logits only
  no_aux = registry.MODELS.build("googlenet_bn", num_classes=5, aux_logits=False)
  vn = jax.eval_shape(lambda: no_aux.init(jax.random.PRNGKey(1), x))
  assert jax.eval_shape(lambda v: no_aux.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)},
                                               mutable=["batch_stats"])[0], vn).shape == (2, 5)


def test_auxiliary_losses_are_weighted_0_3():
  rng = np.random.default_rng(0)
  logits, a1, a2 = (jnp.asarray(rng.normal(size=(3, 5)), jnp.float32) for _ in range(3))
  batch = {"label": jnp.array([1, 3, 0])}
  ce = lambda z: optax.softmax_cross_entropy_with_integer_labels(z, batch["label"])  # noqa: E731
  task = Classification(5)
  np.testing.assert_allclose(task.loss((logits, (a1, a2)), batch), ce(logits) + 0.3 * (ce(a1) + ce(a2)),
                             rtol=1e-6)
  np.testing.assert_allclose(Classification(5, aux_weight=1.0).loss((logits, (a1,)), batch),
                             ce(logits) + ce(a1), rtol=1e-6)
  sums = task.metric_sums((logits, (a1, a2)), batch, jnp.ones(3))
  assert float(sums["correct"]) == float(jnp.sum(jnp.argmax(logits, -1) == batch["label"]))


# Every registered zoo model: one jitted train step on 8 fake devices (a global batch of 8), on inputs
# small enough for a CPU test; the same code runs at full size.
TRAIN_STEP_CASES = {
    "lenet5": ((32, 32, 1), {}),
    "lenet5_gap": ((32, 32, 1), {}),
    "alexnet": ((64, 64, 3), {"fc_units": 32}),
    **{f"vgg{d}{bn}": ((32, 32, 3), {"fc_units": 16}) for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    "googlenet": ((64, 64, 3), {}),
    "googlenet_bn": ((64, 64, 3), {}),
    **{f"resnet{d}": ((32, 32, 3), {}) for d in (18, 34, 50, 101, 152)},
    **{f"cifar_resnet{d}": ((32, 32, 3), {}) for d in (20, 32, 44, 56, 110)},
    "c3d": ((8, 32, 32, 1), {"width": 16, "fc_units": 32}),
    "efficientnet_lite0": ((32, 32, 3), {}),
}


def test_every_zoo_model_has_a_train_step_case():
  # fcn / resnet_ts (tests/test_models.py), inception_time / tcn (tests/test_ts_models.py,
  # test_experiments.py), char_cnn_* (tests/test_text.py) and unet (tests/test_segmentation.py,
  # test_experiments.py on 8 devices) are tested with their data; so is mask_rcnn_* (its losses in
  # tests/test_mask_rcnn.py, its training on 8 devices in test_experiments.py).
  zoo = {n for n in registry.MODELS.names()
         if n not in ("fcn", "resnet_ts", "inception_time", "tcn", "unet")
         and not n.startswith(("char_cnn", "mask_rcnn"))}
  assert zoo == set(TRAIN_STEP_CASES)


# Every model's whole data-parallel train step (forward, backward, optimizer, psum over 8 devices) is traced
# in the default run (the deepest ResNets: with -m slow, see DEEP_TRACES): `jax.eval_shape` checks every shape
# and dtype without compiling. One model per code path also compiles and runs it: the plain convolution stack
# (lenet5_gap), the dense classifier of AlexNet and VGG (vgg.py), and the bottleneck ResNet at one block per
# stage (the blocks resnet50 ... 152 repeat; their numbers against numpy in test_blocks.py). VGG's conv +
# BatchNorm + ReLU is models/common.py's ConvNormReLU, which U-Net trains in test_segmentation.py. The deeper
# variants, GoogLeNet (70 s to compile on 2 cores; its modules are checked in test_blocks.py) and the
# basic-block ResNets (resnet18 and cifar_resnet20 also train on 8 devices in tests/test_experiments.py)
# compile and run with `pytest -m slow`.
DEFAULT_STEP = {"lenet5_gap", "alexnet"}


def _step_inputs(model, shape):
  num_classes = 4
  task, tx = Classification(num_classes), optax.sgd(0.01, momentum=0.9)
  par = Parallel("jit", functools.partial(step_lib.train_step, model=model, task=task, tx=tx),
                 functools.partial(step_lib.eval_step, model=model.clone(axis_name=None), task=task),
                 jax.devices())
  assert par.num_devices == 8
  rng = np.random.default_rng(0)
  batch = {"x": rng.normal(size=(8, *shape)).astype(np.float32),
           "label": rng.integers(0, num_classes, 8).astype(np.int32), "mask": np.arange(8) < 7}
  state = create_train_state(model.clone(axis_name=None), tx, {"x": batch["x"][0]}, seed=0)
  return par, state, batch


# The deepest variants repeat the blocks of a shallower one that the default run traces (resnet50,
# cifar_resnet56): `pytest -m slow`.
DEEP_TRACES = {"resnet101", "resnet152", "cifar_resnet110"}


@pytest.mark.parametrize("name", [n if n not in DEEP_TRACES else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(TRAIN_STEP_CASES)])
def test_every_train_step_traces_on_8_devices(name):
  """The whole step, backward included, traced for every model on abstract values (nothing is
  initialised or compiled): the new state has the old one's structure, shapes and dtypes, and the
  metrics are scalars."""
  shape, kw = TRAIN_STEP_CASES[name]
  model = registry.MODELS.build(name, num_classes=4, axis_name="data", **kw)
  task, tx = Classification(4), optax.sgd(0.01, momentum=0.9)
  par = Parallel("jit", functools.partial(step_lib.train_step, model=model, task=task, tx=tx),
                 lambda s, b: {}, jax.devices())
  state = jax.eval_shape(lambda: create_train_state(model.clone(axis_name=None), tx,
                                                    {"x": jnp.zeros(shape)}, seed=0))
  batch = {"x": jax.ShapeDtypeStruct((8, *shape), jnp.float32), "label": jax.ShapeDtypeStruct((8,), jnp.int32),
           "mask": jax.ShapeDtypeStruct((8,), jnp.bool_)}
  new, metrics = jax.eval_shape(par._train, state, batch)  # pylint: disable=protected-access
  assert jax.tree.structure(new) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(state), strict=True):
    assert a.shape == b.shape and a.dtype == b.dtype
  assert {"loss", "count", "grad_norm"} <= set(metrics) and all(m.shape == () for m in metrics.values())


def _run_one_step(model, shape):
  par, state, batch = _step_inputs(model, shape)
  before = jax.device_get(state.params)
  dstate = par.put_state(state)  # (donated to the step)
  dstate, m = par.train_step(dstate, par.put_batch(batch))
  new = par.get_state(dstate)
  assert int(new.step) == 1 and float(m["count"]) == 7
  assert np.isfinite(float(m["loss"])) and float(m["grad_norm"]) > 0
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(before))]
  assert sum(moved) >= len(moved) // 2
  ev = par.eval_step(dstate, par.put_batch(batch))
  assert np.asarray(ev["confusion"]).sum() == 7


@pytest.mark.parametrize("name", [n if n in DEFAULT_STEP else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(TRAIN_STEP_CASES)])
def test_jitted_train_step_on_8_devices(name):
  shape, kw = TRAIN_STEP_CASES[name]
  _run_one_step(registry.MODELS.build(name, num_classes=4, axis_name="data", **kw), shape)


def test_the_bottleneck_resnet_path_runs_a_train_step_on_8_devices():
  """resnet50/101/152's code (the stem, bottleneck blocks with projection shortcuts, strided 3x3s, the
  head), at one block per stage."""
  from jaxcnn.models.resnet import ResNet
  _run_one_step(ResNet(num_classes=4, stage_sizes=(1, 1, 1, 1), block="bottleneck", axis_name="data"),
                (32, 32, 3))


KNOWN_KINDS = ("conv", "dense", "max_pool", "avg_pool", "sum_pool", "global_pool", "BatchNorm", "unused",
               "Subsampling")


@pytest.mark.parametrize("name,shape", [("resnet18", (64, 64, 3)), ("googlenet_bn", (64, 64, 3)),
                                        ("lenet5_gap", (32, 32, 1)), ("vgg11_bn", (32, 32, 3))])
def test_summary_counts_every_parameter(name, shape):
  kw = TRAIN_STEP_CASES[name][1]
  model = registry.MODELS.build(name, num_classes=10, **kw)
  s = arithmetic.summarize(model, (1, *shape))
  v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape))))
  assert s.total_params == num_params(v["params"]) and s.total_macs > 0
  assert tuple(s.output_shape) == (1, 10)
  assert not [layer.name for layer in s.layers if layer.kind.split()[0] not in KNOWN_KINDS]


@pytest.mark.slow  # 21 s; test_precision.py checks the bfloat16 contract of every model and trains in it
def test_bfloat16_compute_stays_close_to_float32():
  model32 = registry.MODELS.build("resnet18", num_classes=10)
  model16 = registry.MODELS.build("resnet18", num_classes=10, dtype="bfloat16")
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 64, 64, 3))
  v = jit_init(model32, jax.random.PRNGKey(1), x)
  y32, y16 = jax.jit(model32.apply)(v, x), jax.jit(model16.apply)(v, x)
  assert y16.dtype == jnp.float32
  assert jax.tree.leaves(v["params"])[0].dtype == jnp.float32
  np.testing.assert_allclose(y16, y32, atol=0.1 * float(jnp.abs(y32).max()) + 0.05)
