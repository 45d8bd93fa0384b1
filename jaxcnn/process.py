"""The process policy that `launch.py` applies, as one call for a program of your own.

Importing jaxcnn changes nothing in the process: no environment variable, no hook, no JAX setting
(tests/test_imports.py checks every module). What makes jaxcnn's runs fast or robust on a CPU host is
a policy for the whole process, and the program that owns the process decides whether it wants it:

  import jaxcnn
  jaxcnn.setup_process()               # first thing, before any JAX computation
  jaxcnn.setup_process("eigen")        # and XLA:CPU's convolutions on Eigen's multi-threaded kernels

It applies, where it still can:
- the XLA:CPU convolution kernels (`cpu_convolutions`, else `$JAXCNN_CPU_CONVOLUTIONS`, else jaxlib's
  YNNPACK; jaxcnn/backends/xla_cpu/xla_setup.py), which XLA reads once, when JAX starts its backend;
- thread-pool room for collectives over forced host devices (`NPROC`, `xla_setup.spare_collective_threads`);
- the CPU formulations' policy, read from what the process has (`jaxcnn.backends.xla_cpu.policy`);
- with `quiet_disk_full=True`, the hooks that keep orbax's and tensorboardX's writer threads from
  printing a full disk's traceback that the run itself reports (the command line's choice).

What it cannot apply because JAX has already started, it says once (a `RuntimeWarning`) and leaves
alone. Huge pages for XLA:CPU's large buffers need the C library's tunable before the process starts:
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python my_script.py` (what launch.py does for itself,
jaxcnn/backends/xla_cpu/host_memory.py).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import warnings


@dataclasses.dataclass(frozen=True)
class ProcessSetup:
  """What `setup_process` found and did: the CPU policy in force and what it could not apply."""
  kernels: str
  host_malloc: str
  applied: tuple[str, ...]
  not_applied: tuple[str, ...]


def setup_process(cpu_convolutions: str | None = None, *, quiet_disk_full: bool = False) -> ProcessSetup:
  """Apply jaxcnn's process policy (module docstring); returns what it did. Raises `KernelsError` (a
  ValueError) for an unknown kernels name; warns once for what JAX's start prevents."""
  from jaxcnn.backends.xla_cpu import policy, xla_setup
  applied, not_applied = [], []
  started = xla_setup.backends_started()
  kernels = cpu_convolutions or os.environ.get(xla_setup.ENV) or "ynnpack"
  if kernels not in xla_setup.KERNELS:
    xla_setup.configure(kernels)  # raises the one message with the valid names
  if not started:
    nproc = xla_setup.spare_collective_threads()
    if nproc:
      applied.append(f"NPROC={nproc} (thread-pool room for the forced host devices' collectives)")
  elif xla_setup.forced_host_devices() > 1 and not os.environ.get("NPROC"):
    not_applied.append("NPROC for the forced host devices' collectives: JAX started first")
  try:
    if xla_setup.configure(kernels):
      applied.append(f"XLA:CPU convolutions on {kernels} ({xla_setup.FLAG}={xla_setup.VALUE})")
  except xla_setup.KernelsError as e:
    not_applied.append(str(e))
  found = policy_of_process()
  policy.set_process_policy(found)
  if quiet_disk_full:
    quiet_disk_full_hooks()
    applied.append("quiet disk-full hooks")
  for note in not_applied:
    warnings.warn(f"jaxcnn.setup_process: not applied: {note}", RuntimeWarning, stacklevel=2)
  return ProcessSetup(found.kernels, found.host_malloc, tuple(applied), tuple(not_applied))


def policy_of_process(environ=None):
  """The CPU formulations' policy of this process as it was started: the kernels its `XLA_FLAGS`
  choose, the malloc its `GLIBC_TUNABLES` give (read now, once) and the installed jaxlib."""
  from jaxcnn.backends.xla_cpu import host_memory, policy, xla_setup
  environ = os.environ if environ is None else environ
  eigen = xla_setup.eigen_convolutions(environ.get("XLA_FLAGS", ""))
  return policy.Policy(kernels="eigen" if eigen else "ynnpack", host_malloc=host_memory.policy(environ))


def quiet_disk_full_hooks() -> None:
  """orbax logs a full disk from its writer thread (a traceback) before it raises the same error to the
  run, which says it once, with what to do (jaxcnn/train/workdir.py): filter absl's log, tensorboardX's
  event-writer thread and orbax's closed-loop "ignored" exceptions. For the command line, which owns
  its process; idempotent."""
  if getattr(quiet_disk_full_hooks, "installed", False):
    return
  import logging as pylogging
  import threading

  from jaxcnn.train.workdir import is_disk_full

  class DiskFull(pylogging.Filter):
    def filter(self, record):
      exc = record.exc_info[1] if record.exc_info else None
      return not ((exc is not None and is_disk_full(exc)) or "No space left on device" in record.getMessage())
  pylogging.getLogger("absl").addFilter(DiskFull())
  default_hook = threading.excepthook

  def hook(args):
    if not is_disk_full(args.exc_value):
      default_hook(args)
  threading.excepthook = hook
  # orbax's asyncio writer threads, when the run stops (a full disk, an error) while a write is in flight,
  # may call into an event loop that has just closed: Python prints that as an "ignored" traceback, from
  # another thread, in the middle of the run's own message. The write it belonged to is the one the run
  # reports and removes (workdir.remove_partial_checkpoints), so the traceback says nothing more.
  default_unraisable = sys.unraisablehook

  def unraisable(u):
    if not (isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == "Event loop is closed"):
      default_unraisable(u)
  sys.unraisablehook = unraisable
  quiet_disk_full_hooks.installed = True
