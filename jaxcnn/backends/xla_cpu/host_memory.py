"""Transparent huge pages for XLA:CPU's large host buffers (glibc's `glibc.malloc.hugetlb=1`).

XLA:CPU asks malloc for an executable's temporary buffers when it runs and frees them when it returns.
glibc serves every allocation above its mmap threshold (at most 32 MB on 64-bit Linux) with a fresh
`mmap` and gives it back with `munmap` on free, so each train step touches its large temporaries for
the first time again: one page fault per 4 KB page, and the kernel zeroes every page. The depthwise
weight gradient of a 16x56x56x64 activation (nine shifted products of 13 MB, reduced) made 28,225
page faults and 72 ms of system time per call on 2 cores, for ~17 ms of work.

With the glibc tunable `glibc.malloc.hugetlb=1`, malloc asks the kernel for transparent huge pages
(2 MB) on those blocks: 512x fewer faults. Results do not change, only how the pages arrive. Measured
with `python bench/families.py` on 2 cores (bench/README.md): ResNet-20 and C3D train steps 1.4x
faster, small models unchanged, the same peak memory. Keeping freed memory in the process instead
(glibc's `M_MMAP_MAX=0`, `M_TRIM_THRESHOLD=-1` and, since another thread's heap cannot hold a block
over 64 MB, `M_ARENA_MAX=1`) was as fast for large models but made small ones 1.2-1.4x slower (every
thread on one malloc heap) and let the peak host memory of ResNet-50 grow to 2x in one run of two.

glibc reads tunables once, when the process starts, so they must be in the environment before it
does. `launch.py` (and the bench scripts) restart themselves once with `GLIBC_TUNABLES` extended
(`reexec`); a program of your own that imports jaxcnn runs as it was started:

  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python my_script.py    # what launch.py does for itself
  JAXCNN_HOST_MALLOC=system python launch.py ...                 # keep the C library's behaviour

A `glibc.malloc.hugetlb` value the user set is kept. It needs glibc 2.35 or later and the kernel's
transparent huge pages set to "always" or "madvise" (/sys/kernel/mm/transparent_hugepage/enabled, the
default of the common distributions); elsewhere (macOS, musl, older glibc, THP "never") nothing is
done and `policy()` says "system".
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

ENV = "JAXCNN_HOST_MALLOC"
POLICIES = ("hugepages", "system")
TUNABLE = "glibc.malloc.hugetlb"
THP = "/sys/kernel/mm/transparent_hugepage/enabled"


class HostMallocError(ValueError):
  """An unknown JAXCNN_HOST_MALLOC value (the message lists the valid ones)."""


def _glibc_version() -> tuple[int, int] | None:
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    get = libc.gnu_get_libc_version  # only glibc has it
  except (OSError, AttributeError):
    return None
  get.restype = ctypes.c_char_p
  try:
    major, minor = get().decode().split(".")[:2]
    return int(major), int(minor)
  except ValueError:
    return None


@functools.lru_cache(maxsize=None)
def unsupported() -> str | None:
  """Why huge pages cannot be had here, or None when they can."""
  if not sys.platform.startswith("linux"):
    return f"not Linux ({sys.platform})"
  version = _glibc_version()
  if version is None:
    return "the C library is not glibc"
  if version < (2, 35):
    return f"glibc {version[0]}.{version[1]} has no {TUNABLE} (2.35 or later)"
  try:
    with open(THP) as f:
      if "[never]" in f.read():
        return f"transparent huge pages are off ({THP}: never)"
  except OSError:
    return f"no transparent huge pages ({THP} unreadable)"
  return None


def _wanted(environ) -> bool:
  value = environ.get(ENV, "hugepages")
  if value not in POLICIES:
    raise HostMallocError(f"unknown host memory policy {value!r} ({ENV}): use one of "
                          f"{', '.join(POLICIES)} (jaxcnn/backends/xla_cpu/host_memory.py says what each does)")
  return value == "hugepages"


def environment(environ=None) -> dict | None:
  """The environment a process should start with to get huge pages, or None if it has what it needs
  (the tunable is set already, by us or by the user, or the policy is "system", or unsupported here)."""
  environ = os.environ if environ is None else environ
  if not _wanted(environ):
    return None
  if TUNABLE in _tunables(environ) or unsupported():
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  return {**environ, "GLIBC_TUNABLES": ":".join(t for t in (tunables, f"{TUNABLE}=1") if t)}


def reexec() -> None:
  """Restart this Python program with the huge-page tunable, if it needs it (does not return then):
  the same interpreter, options and arguments (`sys.orig_argv`), the same process id. Call it first
  thing in a script, before JAX starts: `launch.py` and the bench scripts do."""
  env = environment()
  if env is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def policy(environ=None) -> str:
  """What this process's malloc does with large blocks: "hugepages" or "system" (for reports)."""
  environ = os.environ if environ is None else environ
  return "hugepages" if _tunables(environ).get(TUNABLE, "0") != "0" and not unsupported() else "system"


def _tunables(environ) -> dict[str, str]:
  """`GLIBC_TUNABLES` ("name=value:name=value") as a dict."""
  return dict(t.split("=", 1) for t in environ.get("GLIBC_TUNABLES", "").split(":") if "=" in t)
