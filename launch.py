"""jaxcnn's one command line: `python launch.py [--config=experiments/X.py:arg] [--config.key=value]`.

With no flags it runs the default experiment: the FCN of Wang et al. 2017 on UCR GunPoint, 1000 of
the paper's 2000 epochs (`--config=experiments/fcn_ucr.py:GunPoint` runs the full protocol).
"""
import os
import sys

try:
  from jaxcnn import cli
except ValueError as e:  # JAXCNN_CPU_CONVOLUTIONS that `import jaxcnn` cannot honour: one line, exit 2
  if type(e).__name__ != "KernelsError":
    raise
  sys.exit(print(f"Error: {e}", file=sys.stderr) or 2)

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "experiments",
                              "fcn_ucr.py") + ":GunPoint,quick"

if __name__ == "__main__":
  cli.run(DEFAULT_CONFIG)
