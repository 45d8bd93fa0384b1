"""jaxcnn: a JAX/Flax functional research framework for convolutional networks.

Importing jaxcnn changes nothing in the process (no environment variable, hook or JAX setting): a
program that wants the command line's process policy calls `jaxcnn.setup_process()` (jaxcnn/process.py).
"""
# XLA:CPU's formulations of the typology's operations, given to it through its hook (jaxcnn.conv.nd).
from jaxcnn.backends.xla_cpu import formulations as _xla_cpu_formulations  # noqa: F401
from jaxcnn import export  # noqa: F401  (jaxcnn.export.load, .save: StableHLO and ONNX)
from jaxcnn.create import Model, create_model, list_models  # noqa: F401
from jaxcnn.process import setup_process  # noqa: F401

__version__ = "0.1.0"
