"""launch.py restarts itself with glibc's huge-page tunable (jaxcnn/backends/xla_cpu/host_memory.py), unless told not to."""
import os
import subprocess
import sys

import pytest

from jaxcnn.backends.xla_cpu import host_memory
from test_cli import launch

ON = "glibc.malloc.hugetlb=1"

# What XLA:CPU does with a step's temporaries: malloc a large block and write it. Printed: whether
# the kernel's mapping of that block carries glibc's huge-page advice (VmFlags "hg", madvise(MADV_HUGEPAGE)).
# The advice is what the tunable controls; how many 2 MB pages the kernel then finds free depends on the
# host's memory fragmentation (a loaded CI machine gave 5,781 faults instead of 32 for 64 MB), so the
# fault counts are measured in bench/ (bench/README.md), not asserted here.
PROBE = """
import ctypes
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
p = libc.malloc(64 << 20)
ctypes.memset(p, 1, 64 << 20)
flags, inside = [], False
with open("/proc/self/smaps") as f:
  for line in f:
    head = line.split()[0]
    if not head.endswith(":"):
      lo, hi = (int(x, 16) for x in head.split("-"))
      inside = lo <= p < hi
    elif inside and head == "VmFlags:":
      flags = line.split()[1:]
print("hg" in flags)
"""


@pytest.mark.parametrize("environ,tunables", [
    ({}, ON),  # the default policy
    ({"JAXCNN_HOST_MALLOC": "hugepages", "GLIBC_TUNABLES": "glibc.malloc.check=0"},
     "glibc.malloc.check=0:" + ON),  # the user's other tunables are kept
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, None),  # the user's own value wins
    ({"GLIBC_TUNABLES": ON}, None),  # already restarted: no loop
    ({"JAXCNN_HOST_MALLOC": "system"}, None),
])
def test_environment_adds_the_tunable_once_and_keeps_the_users(environ, tunables, monkeypatch):
  monkeypatch.setattr(host_memory, "unsupported", lambda: None)
  env = host_memory.environment(environ)
  assert (env and env["GLIBC_TUNABLES"]) == tunables
  if env:
    assert {k: v for k, v in env.items() if k != "GLIBC_TUNABLES"} == {
        k: v for k, v in environ.items() if k != "GLIBC_TUNABLES"}
    assert host_memory.policy(env) == "hugepages"


def test_nothing_changes_where_huge_pages_cannot_be_had(monkeypatch):
  monkeypatch.setattr(host_memory, "unsupported", lambda: "the C library is not glibc")
  assert host_memory.environment({}) is None
  assert host_memory.policy({"GLIBC_TUNABLES": ON}) == "system"


def test_an_unknown_policy_is_one_message_and_exit_2():
  with pytest.raises(ValueError, match="use one of hugepages, system"):
    host_memory.environment({"JAXCNN_HOST_MALLOC": "retain"})
  r = launch(env={"JAXCNN_HOST_MALLOC": "retain"}, timeout=120)
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
  assert ("error: unknown host memory policy 'retain' (JAXCNN_HOST_MALLOC): use one of hugepages, "
          "system") in r.stderr


@pytest.mark.skipif(host_memory.unsupported() is not None, reason=str(host_memory.unsupported()))
def test_the_tunable_advises_huge_pages_for_large_temporaries():
  def advised(tunables):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update({"GLIBC_TUNABLES": tunables} if tunables else {})
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"
  with open(host_memory.THP) as f:
    mode = f.read().split("[")[1].split("]")[0]
  assert not advised(None)  # glibc alone: plain 4 KB pages, every one faulted in again after each free
  # THP "madvise" (the common default): glibc advises the block. THP "always": the kernel gives huge pages
  # to every large mapping by itself and glibc adds no advice.
  assert advised(host_memory.environment({})["GLIBC_TUNABLES"]) == (mode == "madvise"), mode
