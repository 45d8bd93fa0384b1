"""pmap, jit over a device mesh, and a single device give the same numbers."""
import functools

import jax
import numpy as np
import optax
import pytest

from jaxcnn.models.fcn import FCN
from jaxcnn.tasks.classification import Classification
from jaxcnn.train import step as step_lib
from jaxcnn.train.parallel import Parallel
from jaxcnn.train.state import create_train_state


def run(mode, devices, batches, steps=4):
  model = FCN(num_classes=3, filters=(8, 16, 8), axis_name="data")
  # Adam, whose g / sqrt(v) turns rounding noise into learning-rate-sized steps: this agrees because
  # the FCN's conv biases, which cancel in BatchNorm, get an exactly zero gradient (`conv_bn`), not
  # noise that differs with the reduction order.
  task, tx = Classification(3), optax.adam(1e-2)
  par = Parallel(mode, functools.partial(step_lib.train_step, model=model, task=task, tx=tx),
                 functools.partial(step_lib.eval_step, model=model.clone(axis_name=None), task=task),
                 devices)
  state = create_train_state(model.clone(axis_name=None), tx, {"x": batches[0]["x"][0]}, seed=0)
  dstate = par.put_state(state)
  losses = []
  for i in range(steps):
    dstate, m = par.train_step(dstate, par.put_batch(batches[i % len(batches)]))
    losses.append(float(m["loss"]) / float(m["count"]))
  ev = par.eval_step(dstate, par.put_batch(batches[0]))
  return par.get_state(dstate), losses, jax.device_get(ev)


@pytest.fixture(scope="module")
def batches():
  rng = np.random.default_rng(0)
  out = []
  for valid in (16, 11):  # the second batch has 5 padding rows, as an epoch's last batch does
    out.append({"x": rng.normal(size=(16, 20, 2)).astype(np.float32),
                "label": rng.integers(0, 3, 16).astype(np.int32),
                "mask": np.arange(16) < valid})
  return out


def test_pmap_jit_and_single_device_agree(batches):
  devs = jax.devices()
  assert len(devs) == 8
  ref_state, ref_losses, ref_eval = run("jit", devs[:1], batches)
  for mode, d in (("jit", devs), ("pmap", devs), ("pmap", devs[:1])):
    state, losses, ev = run(mode, d, batches)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, err_msg=f"{mode} x {len(d)}")
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=f"{mode} x {len(d)}")
    for a, b in zip(jax.tree.leaves(state.batch_stats), jax.tree.leaves(ref_state.batch_stats), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ev["confusion"], ref_eval["confusion"])
    assert int(state.step) == 4
  assert ref_losses[-1] < ref_losses[0]


@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_predictor_gathers_every_row_in_global_batch_order(mode):
  # A per-row body (no reduction over devices), as instance segmentation's detections: the rows come
  # back from every device in the global batch's order, under both modes.
  def body(state, batch):
    return {"y": batch["x"] * state["w"] + jax.lax.axis_index("data"), "row_mask": batch["mask"]}
  par = Parallel(mode, lambda s, b: (s, {}), lambda s, b: {}, jax.devices())
  n = par.num_devices
  x = np.arange(2 * n * 3, dtype=np.float32).reshape(2 * n, 3)
  batch = {"x": x, "mask": np.arange(2 * n) < 2 * n - 1}
  out = par.predictor(body)(par.put_state({"w": np.float32(10)}), par.put_batch(batch))
  device = np.repeat(np.arange(n), 2)[:, None]  # 2 rows per device, in order
  np.testing.assert_array_equal(np.asarray(out["y"]), x * 10 + device)
  np.testing.assert_array_equal(np.asarray(out["row_mask"]), batch["mask"])
