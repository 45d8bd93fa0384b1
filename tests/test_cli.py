"""launch.py as a user runs it: overrides reach the run, every mistake is one message and exit code 2."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(*args, devices=1, tfds_dir=None):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  if devices > 1:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  if tfds_dir:
    args = args + (f"--config.dataset.data_dir={tfds_dir}",)
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,message", [
    (["--config.train.epochz=3"],
     "unknown config key --config.train.epochz. Did you mean: --config.train.epochs"),
    (["--config.bogus=1"], "unknown config key --config.bogus. Valid keys: checkpoint.every_epochs"),
    (["--config.train.epochs=abc"], "flag --config.train.epochs=abc: invalid literal for int()"),
    (["--config.model.name=fcnn"], "Unknown model name 'fcnn'. Did you mean: fcn? Available models: alexnet, c3d"),
    (["--config.dataset.name=mnistt"], "Unknown dataset name 'mnistt'. Did you mean: mnist? Available datasets:"),
    (["--config.task.name=segmentaton"],
     "Unknown task name 'segmentaton'. Did you mean: segmentation? Available tasks: classification"),
    (["--config=experiments/fcn_ucr.py:GunPint"],
     "UCR/UEA data set 'GunPint' not found in"),
    (["--config.dataset.manual_dir=/no/such/dir"], "--config.dataset.manual_dir=/no/such/dir does not exist"),
    (["--config=experiments/nope.py"], "config file experiments/nope.py not found"),
    (["--config.parallel=pmapp"], "config.parallel='pmapp' is not one of jit, pmap"),
    (["--mode=eval", "--workdir=/nonexistent/run"], "No checkpoint in /nonexistent/run/checkpoints"),
])
def test_mistakes_give_one_message_and_exit_code_2(args, message, tfds_dir):
  r = launch(*args, tfds_dir=tfds_dir)
  assert r.returncode == 2, r.stderr[-2000:]
  assert message in r.stderr
  assert "Traceback" not in r.stderr
  assert "epoch" not in r.stdout  # nothing was trained


def test_batch_not_divisible_by_devices(tfds_dir):
  r = launch("--workdir=/tmp/never", devices=8, tfds_dir=tfds_dir)
  assert r.returncode == 2
  assert ("config.train.batch_size=5 is not divisible by the number of devices (8). "
          "Use a multiple of 8") in r.stderr


def test_overrides_reach_the_run_and_eval_mode(tmp_path, tfds_dir):
  wd = str(tmp_path / "run")
  r = launch("--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.model.filters=(4,8,4)",
             "--config.train.epochs=2", "--config.optimizer.learning_rate=0.01", f"--workdir={wd}",
             tfds_dir=tfds_dir)
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.load(open(os.path.join(wd, "result.json")))
  # conv 8x1->4, 5x4->8, 3x8->4 with biases, BatchNorm scale+shift, dense 4->2.
  assert res["num_params"] == (8 * 4 + 4) + (5 * 4 * 8 + 8) + (3 * 8 * 4 + 4) + 2 * (4 + 8 + 4) + 4 * 2 + 2
  assert res["epochs_done"] == 2 and res["batch_size"] == 6  # min(67 // 10, 16)
  assert res["paper_error"] == 0.030
  hist = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
  assert hist[0]["lr"] == pytest.approx(0.01)
  assert "test error at the epoch of lowest train/loss" in r.stdout and "report.md" in r.stdout
  ev = launch("--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.model.filters=(4,8,4)",
              "--mode=eval", f"--workdir={wd}", tfds_dir=tfds_dir)
  assert ev.returncode == 0, ev.stderr[-3000:]
  assert f"test/accuracy: {res['final']['test/accuracy']:.4f}" in ev.stdout
  # Relaunching the finished run resumes at its last step and trains nothing more.
  again = launch("--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.model.filters=(4,8,4)",
                 "--config.train.epochs=2", "--config.optimizer.learning_rate=0.01", f"--workdir={wd}",
                 tfds_dir=tfds_dir)
  assert again.returncode == 0 and "Resuming from checkpoint at step 24" in again.stdout


def test_sigterm_saves_mid_epoch_and_the_relaunch_ends_identical(tmp_path, tfds_dir):
  """Preemption: SIGTERM at an arbitrary step saves a checkpoint (with the partial epoch's sums);
  relaunching the same command ends exactly where an uninterrupted run ends."""
  import signal
  import time
  args = ["--config=experiments/fcn_ucr.py:ItalyPowerDemand", "--config.model.filters=(4,8,4)",
          "--config.train.epochs=150", "--config.train.log_every_epochs=1", f"--config.dataset.data_dir={tfds_dir}"]
  ref = launch(*args, f"--workdir={tmp_path / 'ref'}")
  assert ref.returncode == 0, ref.stderr[-2000:]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  wd = tmp_path / "preempted"
  p = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch.py"), *args, f"--workdir={wd}"], cwd=ROOT,
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  for line in p.stdout:
    if line.startswith("epoch 20/"):
      time.sleep(0.05)  # somewhere inside a later epoch
      p.send_signal(signal.SIGTERM)
      break
  out = p.stdout.read()
  assert p.wait(timeout=120) == 128 + signal.SIGTERM, out[-2000:]
  assert "Stopped by signal 15" in out and "checkpoint saved" in out
  resumed = launch(*args, f"--workdir={wd}")
  assert resumed.returncode == 0 and "Resuming from checkpoint at step" in resumed.stdout
  ha = [json.loads(line) for line in open(tmp_path / "ref" / "metrics.jsonl")]
  hb = [json.loads(line) for line in open(wd / "metrics.jsonl")]
  assert len(ha) == len(hb) == 150
  for x, y in zip(ha, hb, strict=True):
    for k in x:
      assert x[k] == pytest.approx(y[k], rel=1e-6), (x["epoch"], k)


def test_summary_flag_prints_the_model_table_without_training(tfds_dir):
  r = launch("--summary", tfds_dir=tfds_dir)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "fcn on ucr_uea (one example of shape [150, 1], float32)" in r.stdout
  assert "total params: 264,962" in r.stdout and "receptive field of the output: global" in r.stdout
  assert "epoch" not in r.stdout


def test_sigkill_at_random_moments_then_relaunch_ends_identical(tmp_path, tfds_dir):
  """Fault injection: the run is killed with SIGKILL (no handler, no save) three times at random moments
  (mid-step, mid-evaluation or mid-checkpoint), relaunched each time; the end is exactly the end of an
  uninterrupted run."""
  import random
  import signal
  import time
  args = ["--config=experiments/fcn_ucr.py:ItalyPowerDemand", "--config.model.filters=(4,8,4)",
          "--config.train.epochs=40", "--config.train.log_every_epochs=1", "--config.checkpoint.every_epochs=2",
          f"--config.dataset.data_dir={tfds_dir}"]
  ref = launch(*args, f"--workdir={tmp_path / 'ref'}")
  assert ref.returncode == 0, ref.stderr[-2000:]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  wd, rng, killed_after = tmp_path / "killed", random.Random(0), []
  for _ in range(3):
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch.py"), *args, f"--workdir={wd}"], cwd=ROOT,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = None
    for line in p.stdout:
      if line.startswith("epoch "):
        seen = line.split()[1]
        time.sleep(rng.uniform(0.0, 0.4))
        p.kill()
        break
    out = p.stdout.read()
    assert p.wait(timeout=120) == -signal.SIGKILL and seen, out[-2000:]
    killed_after.append(seen)
    print("killed after epoch", seen, "checkpoints:", sorted(os.listdir(wd / "checkpoints")) if (wd / "checkpoints").exists() else None)
  resumed = launch(*args, f"--workdir={wd}")
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "Resuming from checkpoint at step" in resumed.stdout, killed_after
  ha = [json.loads(line) for line in open(tmp_path / "ref" / "metrics.jsonl")]
  hb = [json.loads(line) for line in open(wd / "metrics.jsonl")]
  assert [h["epoch"] for h in hb] == list(range(1, 41)), killed_after
  for x, y in zip(ha, hb, strict=True):
    for k in x:
      assert x[k] == pytest.approx(y[k], rel=1e-6), (x["epoch"], k, killed_after)
  import orbax.checkpoint as ocp
  sa = ocp.StandardCheckpointer().restore(str(tmp_path / "ref" / "checkpoints" / "480" / "state"))
  sb = ocp.StandardCheckpointer().restore(str(wd / "checkpoints" / "480" / "state"))
  import jax
  import numpy as np
  for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
