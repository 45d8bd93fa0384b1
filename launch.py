"""jaxcnn's one command line: `python launch.py [--config=experiments/X.py:arg] [--config.key=value]`.

With no flags it runs the default experiment: the FCN of Wang et al. 2017 on UCR GunPoint, 1000 of
the paper's 2000 epochs (`--config=experiments/fcn_ucr.py:GunPoint` runs the full protocol).
"""
import os
import sys


def _reexec_with_huge_pages() -> None:
  """Restart once with glibc's huge-page tunable: XLA:CPU's large temporaries then cost 512x fewer page
  faults per step (jaxcnn/backends/xla_cpu/host_memory.py; JAXCNN_HOST_MALLOC=system keeps the C
  library's way). host_memory.py is loaded by its path, before the jaxcnn package (and JAX) is imported,
  so that the restart costs no import twice."""
  import importlib.util
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jaxcnn", "backends", "xla_cpu",
                      "host_memory.py")
  spec = importlib.util.spec_from_file_location("_jaxcnn_host_memory", path)
  host_memory = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(host_memory)
  try:
    host_memory.reexec()
  except host_memory.HostMallocError as e:  # a JAXCNN_HOST_MALLOC that cannot be honoured: exit 2
    sys.exit(print(f"error: {e}", file=sys.stderr) or 2)


if __name__ == "__main__":  # a program that imports this file is left as it was started
  _reexec_with_huge_pages()
from jaxcnn import cli  # noqa: E402

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "experiments",
                              "fcn_ucr.py") + ":GunPoint,quick"

if __name__ == "__main__":
  cli.run(DEFAULT_CONFIG)
