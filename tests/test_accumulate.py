"""Gradient accumulation (`config.train.accumulate_steps=k`, optax.MultiSteps around the run's optimizer):
k micro-batches of b update a model without BatchNorm as one batch of k x b does, on 8 devices, in both
parallel modes; the run's header says so and a k that does not divide an epoch is one message."""
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


def _train(mode, tx, batches, example=np.zeros((32, 32, 1), np.float32)):
  model = registry.MODELS.build("lenet5", num_classes=10, axis_name="data")  # tanh, no BatchNorm
  task = Classification(num_classes=10)
  par = Parallel(mode, functools.partial(step_lib.train_step, model=model, task=task, tx=tx),
                 functools.partial(step_lib.eval_step, model=model, task=task), jax.devices())
  state = par.put_state(create_train_state(model.clone(axis_name=None), tx, {"x": example}, seed=0))
  for b in batches:
    state, _ = par.train_step(state, par.put_batch(b))
  return par.get_state(state)


@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_k_micro_batches_update_as_one_batch_of_k_times_as_many(mode):
  assert jax.device_count() == 8
  rng = np.random.default_rng(0)
  data = [{"x": rng.standard_normal((32, 32, 32, 1)).astype(np.float32),
           "label": rng.integers(0, 10, 32).astype(np.int32), "mask": np.ones(32, bool)} for _ in range(2)]
  sgd = optax.sgd(0.05, momentum=0.9)
  whole = _train(mode, sgd, data)  # two updates of 32 examples (momentum carries between them)
  micro = [{k: v[i:i + 8] for k, v in d.items()} for d in data for i in range(0, 32, 8)]
  accumulated = _train(mode, optax.MultiSteps(sgd, every_k_schedule=4).gradient_transformation(), micro)
  start = _train(mode, sgd, [])  # the initial parameters
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(start.params)))
  assert moved > 1e-3  # the updates are not negligible
  for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(accumulated.params), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)


def test_the_run_accumulates_and_says_so(tmp_path, tfds_dir):
  wd = str(tmp_path / "run")
  args = ("--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.model.filters=(4,8,4)",
          "--config.train.epochs=2", "--config.train.batch_size=8", f"--workdir={wd}")
  r = launch(*args, "--config.train.accumulate_steps=3", tfds_dir=tfds_dir)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "global batch 8 x 3 accumulated (an update every 3 steps, of 24 examples), 9 steps/epoch" in r.stdout
  assert json.load(open(os.path.join(wd, "result.json")))["epochs_done"] == 2
  bad = launch(*args, "--config.train.accumulate_steps=2", f"--workdir={tmp_path / 'bad'}", tfds_dir=tfds_dir)
  assert bad.returncode == 2 and ("config.train.accumulate_steps=2 must be >= 1 and divide the 9 steps of an "
                                  "epoch (batch 8 of 67 examples), so that every epoch ends with an update; "
                                  "divisors: 1, 3, 9") in bad.stderr, bad.stderr[-2000:]
