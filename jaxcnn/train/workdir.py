"""The run's workdir: one training run at a time, and the faults of writing into it.

Two runs started in the same workdir would interleave `metrics.jsonl` and race on the checkpoints, so a
training run holds an exclusive `flock` on `workdir/.lock` for as long as it runs. The kernel releases an
flock when its process ends, however it ends, so a run killed with SIGKILL (or a machine that lost power)
leaves no lock behind: its relaunch resumes at once. The file also records who holds it, for the message
the second run prints.

A full disk while a checkpoint or the metrics are written is one `DiskFullError` that names the workdir
and the last good checkpoint; the half-written checkpoint is removed (orbax never takes its temporary
folder for a checkpoint), so after space is freed the same command resumes from the last good one.
"""
from __future__ import annotations

import errno
import fcntl
import glob
import json
import os
import shutil
import socket
import sys
import tempfile
import time

from jaxcnn.errors import ConfigError

LOCK_NAME = ".lock"


class WorkdirBusyError(ConfigError):
  """Another run holds the workdir."""


class DiskFullError(OSError):
  """A disk the run writes to filled up: the workdir's (`disk_full_message`) or the data directory's
  (`data_disk_full_error`); the message names the folder."""


class NotWritableError(ConfigError):
  """The workdir cannot be written (a read-only disk, no permission)."""


NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def check_writable(workdir: str) -> None:
  """Creates `workdir` and a file in it (removed again): `NotWritableError`, naming the folder and the
  reason, when a read-only disk or a permission stops it, before the run does any work."""
  try:
    os.makedirs(workdir, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=workdir)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    if e.errno not in NOT_WRITABLE:
      raise
    raise NotWritableError(f"--workdir={workdir} cannot be written ({e.strerror}: {e.filename}): choose a "
                           "--workdir on a writable disk, or make this folder writable") from None


def data_disk_full_error(dataset: str, data_dir: str) -> DiskFullError:
  """The disk holding the data directory filled up while the data set was built (before any training)."""
  return DiskFullError(
      f"The disk holding the data directory {data_dir} is full (No space left on device) while building "
      f"{dataset}; the partial build was removed and nothing was trained. Free space there, or point "
      "--config.dataset.data_dir at a disk with room, then run the same command again.")


def check_workdir(workdir: str) -> None:
  """A clear error when `workdir` cannot be a folder (a file of that name, or a file on its path)."""
  path = os.path.abspath(workdir)
  while path and path != os.path.dirname(path):
    if os.path.exists(path) and not os.path.isdir(path):
      what = "is a file" if path == os.path.abspath(workdir) else f"is inside {path}, which is a file"
      raise ConfigError(f"--workdir={workdir} {what}, not a folder: choose another --workdir")
    path = os.path.dirname(path)


class WorkdirLock:
  """`with WorkdirLock(workdir):` the run's exclusive hold on its workdir (see the module doc)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_NAME)
    self._fd = None

  def __enter__(self):
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
        os.close(fd)
        raise
      holder = _read_holder(fd)
      os.close(fd)
      who = (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
             f"{holder.get('command')}" if holder else "another process")
      raise WorkdirBusyError(
          f"--workdir={os.path.dirname(self.path)} is in use by another run ({who}). Two runs in one workdir "
          "would interleave its metrics and overwrite each other's checkpoints: wait for that run to end "
          "(or stop it: it resumes later), or choose another --workdir.") from None
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(holder).encode(), 0)
    except OSError:  # a full disk: the lock holds all the same, only the holder's name is missing
      pass
    self._fd = fd
    return self

  def __exit__(self, *exc):
    if self._fd is not None:
      os.close(self._fd)  # releases the flock; the file stays (removing it would race a waiting run)
      self._fd = None
    return False


def _read_holder(fd: int) -> dict | None:
  try:
    return json.loads(os.pread(fd, 4096, 0).decode() or "null")
  except (OSError, ValueError):
    return None


def is_disk_full(e: BaseException) -> bool:
  """ENOSPC/EDQUOT, as Python's OSError or as orbax/TensorStore's `RESOURCE_EXHAUSTED` error."""
  while e is not None:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    text = str(e)
    if "No space left on device" in text or "Disk quota exceeded" in text or (
        "RESOURCE_EXHAUSTED" in text and "os_error_code='28'" in text):
      return True
    e = e.__cause__ or e.__context__
  return False


def remove_partial_checkpoints(directory: str, settle_s: float = 5.0) -> int:
  """Removes the temporary folders of saves that never committed (they take space, never a step).

  When a save fails (a full disk), the error can arrive while orbax's writer threads for the save's other
  items are still finishing, and they may write into a folder just removed: it is removed again until
  none is left for 0.2 s in a row (at most `settle_s`). Returns how many folders were found."""
  pattern = os.path.join(glob.escape(directory), "*.orbax-checkpoint-tmp*")
  found: set[str] = set()
  deadline = time.monotonic() + settle_s
  while True:
    now = glob.glob(pattern)
    found.update(now)
    for tmp in now:
      shutil.rmtree(tmp, ignore_errors=True)
    time.sleep(0.2)
    if not glob.glob(pattern) or time.monotonic() > deadline:
      return len(found)


def disk_full_message(workdir: str, last_good: int | None, ckpt_dir: str, removed: int) -> str:
  last = (f"The last good checkpoint is step {last_good} in {ckpt_dir}: free space, then run the same "
          "command again to resume from it." if last_good is not None else
          "No checkpoint had been written yet: free space, then run the same command again to start over.")
  removed = "; the checkpoint it was writing was removed" if removed else ""
  return f"The disk holding --workdir={workdir} is full (No space left on device){removed}. {last}"
