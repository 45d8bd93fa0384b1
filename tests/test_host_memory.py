"""launch.py restarts itself with glibc's huge-page tunable (jaxcnn/backends/xla_cpu/host_memory.py), unless told not to."""
import os
import subprocess
import sys

import pytest

from jaxcnn.backends.xla_cpu import host_memory
from test_cli import launch

ON = "glibc.malloc.hugetlb=1"

# What XLA:CPU does with a step's temporaries: malloc a large block, write it, free it, again.
PROBE = """
import ctypes, resource
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
size = 64 << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
  p = libc.malloc(size)
  ctypes.memset(p, 1, size)
  libc.free(ctypes.c_void_p(p))
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 4)
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
  assert ("Error: unknown host memory policy 'retain' (JAXCNN_HOST_MALLOC): use one of hugepages, "
          "system") in r.stderr


@pytest.mark.skipif(host_memory.unsupported() is not None, reason=str(host_memory.unsupported()))
def test_the_tunable_cuts_the_page_faults_of_repeated_large_temporaries():
  def faults(tunables):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update({"GLIBC_TUNABLES": tunables} if tunables else {})
    return int(subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                              check=True).stdout)
  pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
  system, huge = faults(None), faults(host_memory.environment({})["GLIBC_TUNABLES"])
  assert system > pages // 2  # glibc: mmap + munmap, every 4 KB page faulted in again
  assert huge < system // 4, (system, huge)  # 2 MB pages (where the kernel finds them free)
