"""The one training loop, end to end on GunPoint: it learns, resumes exactly, stops on NaN."""
import json
import os

import jax
import numpy as np
import pytest

from jaxcnn.train import evaluation, loop
from jaxcnn.train.checkpoint import Checkpointer
from jaxcnn.train.metrics_writer import MetricsWriter


def test_short_run_learns(small_config, tmp_path):
  """150 of the protocol's epochs at the paper's batch (5), the learning rate decayed to 0 (cosine).

  Under a constant learning rate the weights still move fast at epoch 150, and BatchNorm's running
  statistics (momentum 0.99: an average over the last ~100 steps, 20 epochs) lag them: eval-mode test
  accuracy then swung between 0.53 and 0.98 with the seed and the CPU (train loss 0.03-0.09), while the
  same weights with statistics recomputed on the training set scored 0.99-1.0 every time. With the
  decay the statistics catch up (their mean within 0.02 standard deviations of the training set's):
  10 seeds gave 0.967-1.0 at the selected epoch and 0.98-1.0 at the last, on AMD (AVX-512) under both
  kernel libraries, hence the 0.9 below (chance is 0.5: 76/74 test series)."""
  c = small_config
  c.train.epochs = 150
  c.train.batch_size = 0  # the paper's min(50 // 10, 16) = 5: 10 steps per epoch
  c.schedule.name = "cosine"
  result = loop.train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:1])
  hist = MetricsWriter.read(str(tmp_path / "metrics.jsonl"))
  assert [h["epoch"] for h in hist] == list(range(1, 151))
  assert hist[-1]["train/loss"] < 0.5 * hist[0]["train/loss"]  # measured 0.13-0.34x
  assert result["selected"]["test/accuracy"] >= 0.9
  assert result["final"]["test/accuracy"] >= 0.9
  assert result["steps_per_epoch"] == 10


def test_paper_batch_size_rule(small_config, tmp_path):
  c = small_config
  c.train.epochs = 1
  result = loop.train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:1])
  assert result["batch_size"] == 5 and result["steps_per_epoch"] == 10  # min(50 // 10, 16)
  report = open(result["report"]).read()
  assert ("| paper: Wang, Yan & Oates 2017, FCN (the authors' table of 85 UCR data sets), GunPoint | 0.00 %"
          in report)
  assert os.path.exists(tmp_path / "curves.png")
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))


def test_the_metrics_writer_does_not_import_torch(tmp_path):
  """tensorboardX imports torch when it is installed (here: the reference extra), 2 s of every run's
  start; the writer hides it, and torch stays importable afterwards."""
  import subprocess
  import sys

  from conftest import ROOT, subprocess_env
  code = ("import sys; from jaxcnn.train.metrics_writer import MetricsWriter; "
          f"w = MetricsWriter({str(tmp_path)!r}); w.write(1, {{'loss': 0.5}}); w.close(); "
          "print('torch' in sys.modules); import torch; print(torch.ones(2).sum().item())")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), cwd=ROOT)
  assert r.returncode == 0 and r.stdout.split() == ["False", "2.0"], r.stdout + r.stderr
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))


def _final_params(workdir):
  ck = Checkpointer(os.path.join(workdir, "checkpoints"))
  step = ck.latest_step()
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  import orbax.checkpoint as ocp
  state = ocp.StandardCheckpointer().restore(path)
  ck.close()
  return step, state


@pytest.mark.parametrize("parallel", ["jit", "pmap"])
def test_kill_and_resume_equals_uninterrupted(small_config, tmp_path, parallel):
  c = small_config
  c.parallel = parallel
  c.train.epochs = 6
  c.train.batch_size = 8          # 7 steps/epoch on 50 series, split over 8 devices
  c.checkpoint.every_epochs = 2
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  full = loop.train_and_evaluate(c, a)
  # Killed mid-epoch 5 (after step 33; last checkpoint at step 28), then the same command again.
  assert loop.train_and_evaluate(c, b, interrupt_at_step=33) is None
  resumed = loop.train_and_evaluate(c, b)
  step_a, sa = _final_params(a)
  step_b, sb = _final_params(b)
  assert step_a == step_b == 42
  for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  ha = MetricsWriter.read(os.path.join(a, "metrics.jsonl"))
  hb = MetricsWriter.read(os.path.join(b, "metrics.jsonl"))
  assert [h["step"] for h in hb] == [h["step"] for h in ha]  # no duplicated records after resume
  for x, y in zip(ha, hb, strict=True):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_allclose(x[k], y[k], rtol=1e-6, err_msg=k)
  assert full["selected"] == resumed["selected"]


def test_non_finite_loss_stops_with_a_clear_message(small_config, tmp_path):
  d = tmp_path / "data" / "Huge"
  d.mkdir(parents=True)
  rows = "\n".join(",".join(["1e30"] * 16) + f":{i % 2}" for i in range(8))
  for split in ("TRAIN", "TEST"):
    (d / f"Huge_{split}.ts").write_text(f"@problemName Huge\n@classLabel true 0 1\n@data\n{rows}\n")
  c = small_config
  c.dataset.subset, c.dataset.manual_dir, c.dataset.normalize = "Huge", str(tmp_path / "data"), "none"
  c.train.batch_size = 8
  with pytest.raises(loop.NonFiniteLossError, match=r"NaN/Inf in the training loss at step 1 \(epoch 1, "
                     r"step 1 of 1\)\. Training stopped and saved nothing after it: no checkpoint"):
    loop.train_and_evaluate(c, str(tmp_path / "run"), devices=jax.devices()[:1])
  assert not os.listdir(tmp_path / "run" / "checkpoints")


@pytest.mark.parametrize("parallel", ["jit", "pmap"])
def test_the_first_non_finite_step_is_named_without_a_sync_per_step(parallel, tmp_path):
  """A step that makes the gradients NaN (the loss still finite) in the middle of an epoch: the trainer
  names that step, whatever happens after it."""
  import jax.numpy as jnp

  from jaxcnn.train import parallel as par_lib
  from jaxcnn.train import step as step_lib

  def body(state, batch):
    bad = batch["x"][0] > 0  # a NaN gradient at the batches marked bad
    metrics = {"loss": jnp.float32(1.0), "grad_norm": jnp.where(bad, jnp.nan, 1.0)}
    metrics[step_lib.FIRST_BAD_LOSS] = step_lib._step_if(False, state)
    metrics[step_lib.FIRST_BAD_GRAD] = step_lib._step_if(~jnp.isfinite(metrics["grad_norm"]), state)
    return state + 1, jax.lax.pmax(metrics, "data")

  par = par_lib.Parallel(parallel, body, body, devices=jax.devices()[:2])
  state, sums = par.put_state(jnp.int32(0)), None
  for marked in [0, 0, 0, 1, 0, 1, 0]:  # steps 1..7; step 4 is the first bad one
    state, m = par.train_step(state, par.put_batch({"x": np.full((2,), marked, np.float32)}))
    sums = step_lib.accumulate(sums, m)
  ck = Checkpointer(str(tmp_path / "ck"))
  with pytest.raises(loop.NonFiniteLossError,
                     match=r"NaN/Inf in the gradients \(the loss was still finite\) at step 4 \(epoch 2, "
                     r"step 1 of 3\)"):
    loop.check_finite(jax.device_get(sums), 3, ck)
  ck.close()


def test_eval_mode_reproduces_the_final_metrics(small_config, tmp_path):
  c = small_config
  c.train.epochs = 3
  result = loop.train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:1])
  ev = evaluation.evaluate_checkpoint(c, str(tmp_path), devices=jax.devices()[:1])
  assert ev["step"] == 30
  meta = json.load(open(tmp_path / "checkpoints" / "30" / "loop" / "metadata"))
  assert meta["format_version"] == 1 and meta["jaxcnn_version"] and "train" in json.loads(meta["config"])
  assert ev["test/accuracy"] == pytest.approx(result["final"]["test/accuracy"])
  assert np.sum(ev["test/confusion"]) == 150
  saved = json.load(open(tmp_path / "result.json"))
  assert saved["final"]["epoch"] == 3
  # --mode=eval restores into the state's shapes: the fresh state is never initialised
  from jaxcnn.train.runtime import Runtime
  rt = Runtime(c, str(tmp_path), devices=jax.devices()[:1])
  step, state = rt.restore_latest("eval")
  rt.ckpt.close()
  assert step == 30 and rt._state is None  # pylint: disable=protected-access
  assert jax.tree.structure(state) == jax.tree.structure(rt.abstract_state)


@pytest.mark.parametrize("damage", ["truncated", "lost_file", "half_written", "data_position", "every_one"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(small_config, tmp_path, damage, capsys):
  import shutil
  c = small_config
  c.train.epochs = 3
  c.checkpoint.every_epochs = 1
  c.checkpoint.keep = 3
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  loop.train_and_evaluate(c, a, devices=jax.devices()[:1])
  c.train.epochs = 2
  loop.train_and_evaluate(c, b, devices=jax.devices()[:1])
  ckpts = os.path.join(b, "checkpoints")
  if damage == "half_written":
    # A save cut off before orbax's commit: its temporary directory is never taken for a checkpoint.
    shutil.copytree(os.path.join(ckpts, "20"), os.path.join(ckpts, "30.orbax-checkpoint-tmp-1"))
    os.truncate(os.path.join(ckpts, "30.orbax-checkpoint-tmp-1", "state", "manifest.ocdbt"), 10)
  elif damage in ("truncated", "every_one"):  # a disk that filled up after the commit
    for step in ("20", "10") if damage == "every_one" else ("20",):
      for root, _, files in os.walk(os.path.join(ckpts, step, "state")):
        for f in files:
          if f != "_METADATA":
            os.truncate(os.path.join(root, f), 0)
  elif damage == "data_position":  # the input pipeline's saved position, cut short
    os.truncate(os.path.join(ckpts, "20", "data", "process_0-of-1.json"), 7)
  else:
    os.remove(os.path.join(ckpts, "20", "state", "manifest.ocdbt"))
  c.train.epochs = 3
  console = _recording_console()
  loop.train_and_evaluate(c, b, devices=jax.devices()[:1], console=console)
  out = console.export_text()
  if damage == "half_written":
    assert "Resuming from checkpoint at step 20" in out and "cannot be read" not in out
  elif damage == "every_one":  # nothing readable: a fresh start, with a fresh input stream
    assert "Falling back to step 10." in out and "No older checkpoint: starting from scratch." in out
    assert "Resuming" not in out
  else:
    assert (f"warning: checkpoint step 20 in {ckpts} cannot be read" in out and
            f"moved it to {ckpts}.corrupt/20. Falling back to step 10." in out)
    assert "Resuming from checkpoint at step 10" in out
    assert os.path.isdir(os.path.join(ckpts + ".corrupt", "20"))
  step_a, sa = _final_params(a)
  step_b, sb = _final_params(b)
  assert step_a == step_b == 30
  for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def _recording_console():
  from rich.console import Console
  return Console(record=True, width=200, soft_wrap=True, file=open(os.devnull, "w"))


def test_a_batch_that_does_not_divide_over_8_devices_trains_as_on_one_device(small_config, tmp_path):
  """The paper's batch of 5 (GunPoint) on 8 devices, under jit and under pmap: every step carries 8 rows,
  3 of them masked, and each run ends with the parameters, BatchNorm statistics and metrics of the same
  run on one device, under the protocol's Adam."""
  c = small_config
  c.train.epochs = 2
  one = loop.train_and_evaluate(c, str(tmp_path / "one"), devices=jax.devices()[:1])
  s1, p1 = _final_params(str(tmp_path / "one"))
  for parallel in ("jit", "pmap"):
    c.parallel = parallel
    eight = loop.train_and_evaluate(c, str(tmp_path / parallel))
    assert one["batch_size"] == eight["batch_size"] == 5 and one["steps_per_epoch"] == eight["steps_per_epoch"] == 10
    s8, p8 = _final_params(str(tmp_path / parallel))
    assert s1 == s8 == 20
    # Float sums in another order, through 20 Adam steps of up to lr = 1e-3 each. Adam's first steps are
    # lr * g / |g| for every weight, so a weight whose gradient is near zero takes its sign from rounding:
    # measured 1.2e-4 at most (a tenth of a step); a padding row in a statistic moves weights by 8e-4.
    for x, y in zip(jax.tree.leaves(p1), jax.tree.leaves(p8), strict=True):
      np.testing.assert_allclose(x, y, rtol=1e-3, atol=3e-4, err_msg=parallel)
    for k in ("train/loss", "test/loss", "test/accuracy"):
      assert one["final"][k] == pytest.approx(eight["final"][k], rel=1e-5, abs=1e-6), (parallel, k)


@pytest.mark.parametrize("frozen", [("ConvBNReLU_0",), ("ConvBNReLU_0", "*/BatchNorm*")])
def test_frozen_modules_get_no_gradient_and_the_rest_the_same_step(frozen):
  """`config.model.freeze`: the step differentiates the trained parameters only, so the backward pass
  never enters a frozen module at the bottom of the network (torch's `requires_grad_(False)`); the
  trained parameters take the step that full gradients with zeroed frozen updates give, the frozen
  parameters and BatchNorm statistics stay bit for bit, and grad_norm is the trained gradients' norm.
  A glob entry (`*/BatchNorm*`: every BatchNorm's scale and shift, as FrozenBatchNorm2d) freezes the
  parameters whose paths it matches."""
  import functools

  import jax.numpy as jnp
  import optax
  from flax import traverse_util

  from jaxcnn import registry
  from jaxcnn.tasks.classification import Classification
  from jaxcnn.train import step as step_lib
  from jaxcnn.train.parallel import Parallel
  from jaxcnn.train.start import freeze, is_frozen
  from jaxcnn.train.state import create_train_state
  registry.load_all()
  model = registry.MODELS.build("fcn", num_classes=3, filters=(4, 8, 4), axis_name="data")
  tx, task = freeze(optax.sgd(0.1, momentum=0.9), frozen), Classification(3)
  rng = np.random.default_rng(0)
  batch = {"x": rng.normal(size=(8, 32, 1)).astype(np.float32), "label": rng.integers(0, 3, 8).astype(np.int32),
           "mask": np.ones(8, bool)}
  state = jax.device_get(create_train_state(model.clone(axis_name=None), tx, {"x": batch["x"][0]}, seed=0))
  steps = {}
  for name, fz in (("frozen", frozen), ("all gradients", ())):
    par = Parallel("jit", functools.partial(step_lib.train_step, model=model, task=task, tx=tx, frozen=fz),
                   lambda s, b: {}, jax.devices()[:1])
    # convolutions in the step: 3 forward; backward: ConvBNReLU_2's input and kernel gradients, _1's
    # kernel gradient only (its input comes from the frozen module), none of _0's
    args = (par.put_state(state), par.put_batch(batch))
    lowered = par._train.lower(*args)  # pylint: disable=protected-access
    assert lowered.as_text().count("stablehlo.convolution") == {"frozen": 6, "all gradients": 8}[name]
    new, metrics = lowered.compile()(*args)
    steps[name] = (par.get_state(new), jax.device_get(metrics))
  (new, metrics), (ref, _) = steps["frozen"], steps["all gradients"]
  flat = lambda tree: traverse_util.flatten_dict(tree, sep="/")  # noqa: E731
  before, after, reference = flat(state.params), flat(new.params), flat(ref.params)
  held = sorted(p for p in before if is_frozen(p, frozen))
  assert len(held) == {1: 4, 2: 8}[len(frozen)]  # ConvBNReLU_0's 4 leaves (+ the other 2 BatchNorms' 2 each)
  moved = []
  for p in before:
    if p in held:
      np.testing.assert_array_equal(after[p], before[p])
    else:
      moved.append(not np.array_equal(after[p], before[p]))  # (a conv bias before BatchNorm has no gradient)
      np.testing.assert_allclose(after[p], reference[p], rtol=1e-5, atol=1e-7)
  assert sum(moved) >= len(moved) - 2
  stats_before, stats_after = flat(state.batch_stats), flat(new.batch_stats)
  for p in stats_before:
    if is_frozen(p, frozen):
      np.testing.assert_array_equal(stats_after[p], stats_before[p])
    else:
      assert not np.array_equal(stats_after[p], stats_before[p])

  def loss(params):
    logits, _ = model.clone(axis_name=None).apply({"params": params, "batch_stats": state.batch_stats},
                                                  batch["x"], train=True, mutable=["batch_stats"])
    return jnp.mean(task.loss(logits, batch))
  grads = flat(jax.jit(jax.grad(loss))(state.params))  # (jitted: op by op it compiled ~150 programs)
  trained_norm = optax.tree.norm({p: v for p, v in grads.items() if p not in held})
  assert float(metrics["grad_norm"]) == pytest.approx(float(trained_norm), rel=1e-5)
  assert float(trained_norm) < float(optax.tree.norm(grads))
