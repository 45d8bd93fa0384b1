"""XLA:CPU: the formulations jaxcnn's operations take on the CPU, and the process setup that makes them
fast (see `jaxcnn/backends/__init__.py`). Importing this package imports nothing else: `xla_setup` and
`host_memory` must be usable before JAX starts a backend (jaxcnn/__init__.py, launch.py)."""
