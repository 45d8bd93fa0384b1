"""A moving average of the weights (`config.train.ema_decay`): kept in the train state on 8 devices in
both parallel modes (BatchNorm statistics included), evaluated beside the weights, selectable for the
report and the best checkpoint, and read by --mode=eval with --checkpoint=ema."""
import functools
import json
import os

import jax
import numpy as np
import optax
import pytest

from jaxcnn import registry
from jaxcnn.tasks.classification import Classification
from jaxcnn.train import step as step_lib
from jaxcnn.train.parallel import Parallel
from jaxcnn.train.state import create_train_state
from test_cli import launch


@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_the_average_follows_the_weights_on_8_devices(mode):
  assert jax.device_count() == 8
  model = registry.MODELS.build("cifar_resnet20", num_classes=10, axis_name="data")  # with BatchNorm
  task, tx, decay = Classification(num_classes=10), optax.sgd(0.1, momentum=0.9), 0.8
  par = Parallel(mode, functools.partial(step_lib.train_step, model=model, task=task, tx=tx, ema_decay=decay),
                 functools.partial(step_lib.eval_step, model=model, task=task), jax.devices())
  state = create_train_state(model.clone(axis_name=None), tx, {"x": np.zeros((32, 32, 3), np.float32)}, 0, ema=True)
  want = jax.tree.map(np.array, {"params": state.params, "batch_stats": state.batch_stats})  # (donated below)
  rng = np.random.default_rng(0)
  dstate = par.put_state(state)
  for _ in range(3):
    batch = {"x": rng.standard_normal((16, 32, 32, 3)).astype(np.float32),
             "label": rng.integers(0, 10, 16).astype(np.int32), "mask": np.ones(16, bool)}
    dstate, _ = par.train_step(dstate, par.put_batch(batch))
    host = par.get_state(dstate)
    want = jax.tree.map(lambda e, v: decay * np.asarray(e) + (1 - decay) * np.asarray(v), want,
                        {"params": host.params, "batch_stats": host.batch_stats})
  for a, b in zip(jax.tree.leaves(host.ema), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-6)
  gap = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
            for a, b in zip(jax.tree.leaves(host.ema["params"]), jax.tree.leaves(host.params)))
  assert gap > 1e-3  # the average lags the weights


def test_a_run_evaluates_selects_and_exports_the_average(tmp_path, tfds_dir):
  wd = str(tmp_path / "run")
  args = ("--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.model.filters=(4,8,4)",
          "--config.train.epochs=4", "--config.train.ema_decay=0.5", "--config.train.eval_every_epochs=1",
          "--config.report.select_by=ema_test/error", f"--workdir={wd}")
  r = launch(*args, tfds_dir=tfds_dir)
  assert r.returncode == 0, r.stderr[-3000:]
  history = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
  assert all("ema_test/error" in h and "test/error" in h for h in history)
  res = json.load(open(os.path.join(wd, "result.json")))
  sel, fin = res["selected"], res["final"]
  assert sel["ema_test/error"] == min(h["ema_test/error"] for h in history)
  # the best checkpoint holds the average of the selected epoch
  ev = launch(*args, "--mode=eval", tfds_dir=tfds_dir)
  assert ev.returncode == 0, ev.stderr[-3000:]
  assert "the moving average of the weights) in" in ev.stdout
  assert f"test/error: {sel['ema_test/error']:.4f}" in ev.stdout
  avg = launch(*args, "--mode=eval", "--checkpoint=ema", tfds_dir=tfds_dir)
  assert avg.returncode == 0 and "The moving average of the weights of the latest checkpoint" in avg.stdout
  assert f"test/error: {fin['ema_test/error']:.4f}" in avg.stdout, avg.stdout
  both = launch(*args, "--mode=eval", "--checkpoint=latest", tfds_dir=tfds_dir)
  assert both.returncode == 0, both.stderr[-3000:]
  assert f"  test/error: {fin['test/error']:.4f}" in both.stdout
  assert f"ema_test/error: {fin['ema_test/error']:.4f}" in both.stdout
  off = launch("--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.model.filters=(4,8,4)",
               "--mode=eval", "--checkpoint=ema", f"--workdir={wd}", tfds_dir=tfds_dir)
  assert off.returncode == 2, off.stderr[-2000:]
  assert "--checkpoint=ema: this config keeps no moving average" in off.stderr, off.stderr[-2000:]
