"""jaxcnn's one command line: `python launch.py [--config=experiments/X.py:arg] [--config.key=value]`.

With no flags it runs the default experiment: the FCN of Wang et al. 2017 on UCR GunPoint, 1000 of
the paper's 2000 epochs (`--config=experiments/fcn_ucr.py:GunPoint` runs the full protocol).
"""
import os
import sys

try:
  # Restart once with glibc's huge-page tunable: XLA:CPU's large temporaries then cost 512x fewer page
  # faults per step (jaxcnn/backends/xla_cpu/host_memory.py; JAXCNN_HOST_MALLOC=system keeps the C library's way).
  from jaxcnn.backends.xla_cpu import host_memory
  if __name__ == "__main__":  # a program that imports this file is left as it was started
    host_memory.reexec()
  from jaxcnn import cli
except ValueError as e:  # JAXCNN_CPU_CONVOLUTIONS / JAXCNN_HOST_MALLOC that cannot be honoured: exit 2
  if type(e).__name__ not in ("KernelsError", "HostMallocError"):
    raise
  sys.exit(print(f"Error: {e}", file=sys.stderr) or 2)

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "experiments",
                              "fcn_ucr.py") + ":GunPoint,quick"

if __name__ == "__main__":
  cli.run(DEFAULT_CONFIG)
