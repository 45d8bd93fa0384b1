"""jaxcnn: a JAX/Flax functional research framework for convolutional networks."""
from jaxcnn.backends.xla_cpu import xla_setup as _xla_setup

# JAXCNN_CPU_CONVOLUTIONS=eigen: XLA:CPU's convolutions on Eigen's multi-threaded kernels instead of
# YNNPACK's one-thread ones (jaxcnn/backends/xla_cpu/xla_setup.py). It must be set before anything starts a JAX backend.
_xla_setup.configure_from_environment()

__version__ = "0.1.0"
