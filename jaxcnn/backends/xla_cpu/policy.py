"""What the XLA:CPU formulations are chosen for: an explicit value, not the environment read while tracing.

Which formulation of a convolution runs fastest on XLA:CPU depends on facts about the process: which
kernels XLA:CPU runs convolutions with (`xla_setup`: jaxlib's YNNPACK or Eigen), whether malloc hands
out huge pages (`host_memory`), and whether this jaxlib's XLA:CPU is one the formulations were measured
on (0.10-0.11, bench/README.md). Those facts are fixed when the process starts JAX, so they are read
once, by whoever sets the process up (`jaxcnn.setup_process`, the command line:
`jaxcnn.process.policy_of_process`), into a `Policy`; tracing reads only the `Policy` (set it before
tracing: jax reuses a function's trace):

  jaxcnn.setup_process()                          # reads XLA_FLAGS and GLIBC_TUNABLES once, sets the policy
  with policy.use(policy.Policy(kernels="eigen")):  # or name it, e.g. in a test or a benchmark
    jax.jit(step).lower(...)

Without either, the policy is jaxlib's defaults: YNNPACK kernels, the C library's malloc. On a jaxlib the
formulations were not measured on, the CPU backend steps aside: `impl="auto"` traces XLA's own
convolutions, transposed convolutions and pooling on the CPU too (the same numbers), and the run's header
says so. Importing this module reads nothing and changes nothing.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from typing import Iterator

# jaxlib versions (major, minor) whose XLA:CPU the formulations and the Eigen flag were measured on.
KNOWN_JAXLIB = ((0, 10), (0, 11))


@functools.lru_cache(maxsize=None)
def installed_jaxlib() -> tuple[int, int] | None:
  """The installed jaxlib's (major, minor), or None when there is none or its version cannot be read."""
  try:
    from jaxlib import version
    major, minor = version.__version__.split(".")[:2]
    return int(major), int(minor)
  except Exception:  # noqa: BLE001 - no jaxlib, or a version string we cannot read
    return None


@dataclasses.dataclass(frozen=True)
class Policy:
  """The facts a CPU formulation is chosen by. `jaxlib`: the XLA:CPU version (None: the installed one)."""
  kernels: str = "ynnpack"        # "ynnpack" (jaxlib's default) or "eigen": who runs XLA:CPU's convolutions
  host_malloc: str = "system"     # "hugepages" or "system": how malloc serves XLA:CPU's large temporaries
  jaxlib: tuple[int, int] | None = None

  def __post_init__(self):
    if self.kernels not in ("ynnpack", "eigen"):
      raise ValueError(f"kernels={self.kernels!r}: use 'ynnpack' or 'eigen'")
    if self.host_malloc not in ("hugepages", "system"):
      raise ValueError(f"host_malloc={self.host_malloc!r}: use 'hugepages' or 'system'")

  @property
  def version(self) -> tuple[int, int] | None:
    return self.jaxlib if self.jaxlib is not None else installed_jaxlib()

  @property
  def known(self) -> bool:
    """Whether this XLA:CPU is one the formulations were measured on (else `impl="auto"` steps aside)."""
    return self.version in KNOWN_JAXLIB

  @property
  def eigen(self) -> bool:
    return self.kernels == "eigen"

  def describe(self) -> str | None:
    """One line for a run's header when the backend steps aside, else None."""
    if self.known:
      return None
    v = self.version
    name = f"jaxlib {v[0]}.{v[1]}" if v else "this jaxlib"
    return (f"XLA:CPU: {name} is not one jaxcnn's CPU formulations were measured on (0.10-0.11): XLA's own "
            "convolutions, transposed convolutions and pooling, and jaxlib's default kernels (the same "
            "numbers; docs/typology.md, 'A newer jaxlib', says how to bring one in)")


_POLICY: contextvars.ContextVar[Policy | None] = contextvars.ContextVar("jaxcnn_xla_cpu_policy", default=None)
_PROCESS = [Policy()]  # what setup_process found; a `use` block overrides it


def current() -> Policy:
  """The policy in force: the innermost `use` block's, else the process's (`set_process_policy`)."""
  return _POLICY.get() or _PROCESS[0]


def set_process_policy(policy: Policy) -> None:
  """The policy for the rest of the process (called by `jaxcnn.setup_process` and the command line)."""
  _PROCESS[0] = policy


@contextlib.contextmanager
def use(policy: Policy) -> Iterator[Policy]:
  """Within the block, trace the CPU formulations for `policy` (tests and benchmarks compare choices)."""
  token = _POLICY.set(policy)
  try:
    yield policy
  finally:
    _POLICY.reset(token)
