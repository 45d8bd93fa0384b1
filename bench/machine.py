"""The machine a benchmark ran on, for its result file."""
from __future__ import annotations

import platform


def cpu_name() -> str:
  """The CPU's model name (/proc/cpuinfo), else the platform's processor or machine."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
  except OSError:
    return cpu
