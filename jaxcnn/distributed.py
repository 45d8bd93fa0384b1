"""Multi-process runs: one process per host (cloud TPU VM, GPU node), all joined by
`jax.distributed.initialize` before anything touches a device.

  # cloud TPU pod slice / SLURM / Open MPI: every setting is detected, run the same command on every host
  python launch.py --config=... --distributed
  # elsewhere: say where process 0 listens, how many processes there are, and which one this is
  python launch.py --config=... --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0

After it, `jax.devices()` lists every process's devices and the trainer's mesh spans them all: each process
reads and preprocesses only its rows of every global batch (`jaxcnn.data.pipeline`), gradients and
BatchNorm statistics are reduced over all devices, orbax writes each checkpoint collectively, and
process 0 alone writes metrics, reports and figures. On CPU the collectives go over gloo (TCP), which is
how the test suite runs two processes on one machine.
"""
from __future__ import annotations

from jaxcnn.errors import ConfigError


def initialize(*, auto: bool = False, coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None) -> bool:
  """Joins this process to a multi-process run; returns False (and does nothing) for a one-process run.

  `auto=True` lets JAX detect the cluster (cloud TPU, SLURM, Open MPI, ...). Otherwise all three of
  `coordinator_address`, `num_processes` and `process_id` are needed.
  """
  explicit = {"--coordinator_address": coordinator_address, "--num_processes": num_processes,
              "--process_id": process_id}
  given = [k for k, v in explicit.items() if v is not None]
  if not auto and not given:
    return False
  if given and len(given) < 3:
    missing = ", ".join(k for k in explicit if k not in given)
    raise ConfigError(f"{', '.join(given)} also needs {missing}: pass all three (e.g. "
                      "--coordinator_address=HOST:1234 --num_processes=2 --process_id=0, with process_id "
                      "0..num_processes-1 on the processes), or --distributed alone to detect them on a "
                      "cloud TPU / SLURM / Open MPI cluster.")
  if given:
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ConfigError(f"--process_id={process_id} must be in 0..{num_processes - 1} "
                        f"(--num_processes={num_processes})")
    if ":" not in coordinator_address:
      raise ConfigError(f"--coordinator_address={coordinator_address} needs a port: HOST:PORT, e.g. "
                        f"{coordinator_address}:1234")
  import jax
  # CPU devices of different processes talk over gloo; GPU (NCCL) and TPU (ICI) ignore this setting.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  except (ValueError, RuntimeError) as e:
    how = ("pass --coordinator_address, --num_processes and --process_id" if not given else
           "check that every process got the same --coordinator_address and --num_processes and that "
           "process 0 is running and reachable")
    raise ConfigError(f"jax.distributed.initialize failed ({type(e).__name__}: {str(e)[:300]}): {how}") \
        from None
  return True


def is_primary() -> bool:
  """True on the process that writes metrics, reports and figures (process 0)."""
  import jax
  return jax.process_index() == 0
