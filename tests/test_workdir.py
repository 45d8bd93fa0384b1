"""The workdir's faults: a second run in it, a kill that must not leave a lock, a full disk, a file in its
place (jaxcnn/train/workdir.py)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import subprocess_env
from jaxcnn.errors import ConfigError
from jaxcnn.train import workdir as W
from test_cli import ROOT, launch

RUN = ["--config=experiments/fcn_ucr.py:GunPoint,runlocal", "--config.model.filters=(4,8,4)"]


def test_the_lock_is_exclusive_and_names_its_holder(tmp_path):
  with W.WorkdirLock(str(tmp_path)):
    with pytest.raises(W.WorkdirBusyError, match=rf"--workdir={tmp_path} is in use by another run \(pid "
                                                 rf"{os.getpid()} on .*: wait for that run to end"):
      with W.WorkdirLock(str(tmp_path)):
        pass
  with W.WorkdirLock(str(tmp_path)):  # released on exit
    pass


def test_a_second_run_is_refused_and_a_killed_run_leaves_no_lock(tmp_path, tfds_dir):
  wd = tmp_path / "run"
  env = subprocess_env()
  first = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch.py"), *RUN, "--config.train.epochs=100000",
                            f"--workdir={wd}", f"--config.dataset.data_dir={tfds_dir}"], cwd=ROOT,
                           env={**env, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
  try:
    deadline = time.time() + 120
    while time.time() < deadline and not (wd / "metrics.jsonl").exists():  # training, holding the lock
      assert first.poll() is None, first.stderr.read()[-2000:]
      time.sleep(0.2)
    second = launch(*RUN, "--config.train.epochs=1", f"--workdir={wd}", tfds_dir=tfds_dir)
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-2000:]
    assert f"is in use by another run (pid {first.pid} on " in second.stderr
    assert json.load(open(wd / ".lock"))["pid"] == first.pid
    assert all(json.loads(line)["step"] for line in open(wd / "metrics.jsonl"))  # nothing of the second run
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  with W.WorkdirLock(str(wd)):  # SIGKILL released it: the relaunch is not blocked
    pass


def test_a_file_as_workdir_is_one_message(tmp_path):
  f = tmp_path / "notes.txt"
  f.write_text("x")
  with pytest.raises(ConfigError, match="is a file, not a folder"):
    W.check_workdir(str(f))
  with pytest.raises(ConfigError, match=r"is inside .*notes.txt, which is a file"):
    W.check_workdir(str(f / "run"))
  W.check_workdir(str(tmp_path / "new" / "run"))


def test_disk_full_is_recognised_in_orbax_and_python_errors():
  import errno
  orbax_text = ("RESOURCE_EXHAUSTED: Error opening \"zarr\" driver: ... Failed to write 236 bytes to file 12: "
                "No space left on device [tensorstore_spec='{}'] [os_error_code='28']")
  assert W.is_disk_full(ValueError(orbax_text))
  assert W.is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
  wrapped = RuntimeError("save failed")
  wrapped.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
  assert W.is_disk_full(wrapped)
  assert not W.is_disk_full(ValueError("RESOURCE_EXHAUSTED: out of memory"))
  assert not W.is_disk_full(OSError(errno.EACCES, "Permission denied"))


def _small_disk(path):
  """A 4 MB tmpfs at `path` (needs root and a kernel that lets this container mount)."""
  os.makedirs(path, exist_ok=True)
  r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], capture_output=True, text=True)
  return r.returncode == 0


def test_a_full_disk_names_the_last_good_checkpoint_and_the_relaunch_resumes(tmp_path, tfds_dir):
  disk = tmp_path / "disk"
  if not _small_disk(disk):
    pytest.skip("cannot mount a small tmpfs here (needs root); test_disk_full_is_recognised_... still runs")
  try:
    filler = disk / "filler"
    filler.write_bytes(b"\0" * 3_600_000)  # ~500 KB left: a few checkpoints of the 4,450-parameter FCN
    args = [*RUN[:1], "--config.model.filters=(16,32,16)", "--config.train.epochs=40",
            "--config.checkpoint.every_epochs=2", "--config.checkpoint.keep=50", f"--workdir={disk / 'run'}"]
    full = launch(*args, tfds_dir=tfds_dir)
    assert full.returncode == 74, full.stderr[-3000:]
    assert full.stderr.count("\n") == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
    assert f"error: The disk holding --workdir={disk / 'run'} is full (No space left on device)" in full.stderr
    ckpts = sorted(int(d) for d in os.listdir(disk / "run" / "checkpoints") if d.isdigit())
    assert not [d for d in os.listdir(disk / "run" / "checkpoints") if "tmp" in d]  # the partial one: gone
    assert ckpts and f"The last good checkpoint is step {ckpts[-1]} in {disk / 'run' / 'checkpoints'}" in full.stderr
    filler.unlink()
    again = launch(*args, tfds_dir=tfds_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Resuming from checkpoint at step {ckpts[-1]} " in again.stdout
    hist = [json.loads(line) for line in open(disk / "run" / "metrics.jsonl")]
    assert [h["epoch"] for h in hist] == list(range(1, 41))  # nothing lost, nothing twice
  finally:
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _mount(path, options: str) -> bool:
  os.makedirs(path, exist_ok=True)
  return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0


def test_a_read_only_workdir_is_one_message_and_exit_2(tmp_path):
  """A read-only disk (and, for a user who is not root, a folder without write permission): one line
  naming the folder, before any work, for the modes that write into the workdir."""
  with pytest.raises(ConfigError, match="cannot be written"):
    W.check_writable("/sys/jaxcnn-test/run")  # sysfs refuses new folders to anyone, root too
  ro = tmp_path / "ro"
  if not _mount(ro, "ro,size=1m"):
    pytest.skip("cannot mount a read-only tmpfs here (needs root); the check_writable case above still runs")
  try:
    for mode in ("train", "eval"):
      r = launch(*RUN[:1], f"--mode={mode}", f"--workdir={ro / 'run'}")
      assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
      assert f"error: --workdir={ro / 'run'} cannot be written (Read-only file system: {ro / 'run'})" in r.stderr
      assert "): choose a --workdir on a writable disk, or make this folder writable" in r.stderr
  finally:
    subprocess.run(["umount", "-l", str(ro)], capture_output=True)


def test_a_full_data_disk_names_the_data_directory_not_the_workdir(tmp_path):
  """The data set is built on a full disk (a 1 MB tmpfs, filled): one message naming the data directory,
  exit 74, nothing half-built left there, and the workdir untouched by any checkpoint."""
  disk = tmp_path / "data"
  if not _mount(disk, "size=1m"):
    pytest.skip("cannot mount a small tmpfs here (needs root)")
  try:
    (disk / "filler").write_bytes(b"\0" * 1_048_576)
  except OSError:
    pass  # full
  try:
    r = launch(*RUN[:1], "--config.train.epochs=1", f"--workdir={tmp_path / 'run'}",
               f"--config.dataset.data_dir={disk / 'tfds'}")
    assert r.returncode == 74, r.stderr[-3000:]
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert (f"error: The disk holding the data directory {disk / 'tfds'} is full (No space left on device) "
            "while building ucr_uea/") in r.stderr and "--workdir" not in r.stderr.split("Free space")[0]
    assert "; the partial build was removed and nothing was trained. Free space there, or point " in r.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints")
    left = [os.path.join(d, f) for d, _, fs in os.walk(disk / "tfds") for f in fs]
    assert left == [], left
  finally:
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)
