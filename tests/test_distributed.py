"""Multi-process runs: two processes on localhost (CPU devices joined over gloo) train exactly what one
process with the same devices and global batch trains; the launch flags fail clearly."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import subprocess_env
from jaxcnn import distributed
from jaxcnn.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.model.filters=(4,8,4)",
        "--config.train.epochs=2", "--config.checkpoint.every_epochs=1", "--config.train.eval_every_epochs=1",
        # The paper's Adam and batch rule: min(67 // 10, 16) = 6 series a step, in 8 rows over the 4
        # devices (2 masked: process 1's rows are 2 series and 2 padding rows). Adam agrees because the
        # conv biases that feed BatchNorm get an exactly zero gradient (jaxcnn/models/fcn.py: conv_bn),
        # not rounding noise that would differ with the psum's summation order (gloo vs in-process).
        "--config.optimizer.learning_rate=0.01"]


def _env(devices: int) -> dict:
  return subprocess_env(devices)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _params(workdir):
  import orbax.checkpoint as ocp
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  return steps, ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(steps[-1]),
                                                                "state"))


def test_two_processes_equal_one_process_with_the_same_devices(tmp_path, tfds_dir):
  import jax
  data = f"--config.dataset.data_dir={tfds_dir}"
  one = subprocess.run([sys.executable, "launch.py", *ARGS, data, f"--workdir={tmp_path / 'one'}"], cwd=ROOT,
                       env=_env(4), capture_output=True, text=True, timeout=300)
  assert one.returncode == 0, one.stderr[-3000:]
  assert "4 x cpu device(s)" in one.stdout

  port, wd = _free_port(), tmp_path / "two"
  procs = [subprocess.Popen([sys.executable, "launch.py", *ARGS, data, f"--workdir={wd}",
                             f"--coordinator_address=localhost:{port}", "--num_processes=2",
                             f"--process_id={i}"], cwd=ROOT, env=_env(2), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, (out[-2000:], err[-3000:])
  # Process 0 speaks for the run: 2 processes x 2 devices form the same 4-device mesh.
  assert "4 x cpu device(s)" in outs[0][0] and "Result" in outs[0][0]
  assert "epoch" not in outs[1][0]

  steps_one, p1 = _params(tmp_path / "one")
  steps_two, p2 = _params(wd)
  assert steps_one == steps_two and steps_one[-1] == 2 * 12  # 67 series, global batch 6
  assert "global batch 6 (in 8 rows over 4 devices, 2 masked)" in outs[0][0]
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  h1 = [json.loads(line) for line in open(tmp_path / "one" / "metrics.jsonl")]
  h2 = [json.loads(line) for line in open(wd / "metrics.jsonl")]  # written once, by process 0
  assert [h["epoch"] for h in h2] == [1, 2]
  for x, y in zip(h1, h2, strict=True):
    for k in ("train/loss", "test/loss", "test/error"):
      assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-6), k

  # One process cannot continue the two processes' data stream: one clear message. Evaluating the
  # checkpoint needs no data position and works with any number of processes.
  more = [a.replace("epochs=2", "epochs=3") for a in ARGS]
  alone = subprocess.run([sys.executable, "launch.py", *more, data, f"--workdir={wd}"], cwd=ROOT, env=_env(4),
                         capture_output=True, text=True, timeout=300)
  assert alone.returncode == 2 and "Traceback" not in alone.stderr, alone.stderr[-2000:]
  assert ("was written by a run of 2 processes; this run has 1. Resume with 2 processes (--num_processes=2)"
          in alone.stderr)
  ev = subprocess.run([sys.executable, "launch.py", *ARGS, data, f"--workdir={wd}", "--mode=eval"], cwd=ROOT,
                      env=_env(4), capture_output=True, text=True, timeout=300)
  assert ev.returncode == 0 and f"test/error: {h2[-1]['test/error']:.4f}" in ev.stdout, ev.stderr[-2000:]


@pytest.mark.parametrize("kwargs,message", [
    (dict(coordinator_address="localhost:1234"), "--coordinator_address also needs --num_processes, "
                                                 "--process_id"),
    (dict(coordinator_address="localhost:1234", num_processes=2, process_id=2),
     "--process_id=2 must be in 0..1"),
    (dict(coordinator_address="localhost", num_processes=2, process_id=0), "needs a port: HOST:PORT"),
])
def test_incomplete_launch_flags_are_refused(kwargs, message):
  with pytest.raises(ConfigError, match=message):
    distributed.initialize(**kwargs)


def test_one_process_runs_need_no_flags():
  assert distributed.initialize() is False
