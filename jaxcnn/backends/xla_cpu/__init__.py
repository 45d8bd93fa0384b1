"""XLA:CPU: the formulations jaxcnn's operations take on the CPU, and the process setup that makes them
fast (see `jaxcnn/backends/__init__.py`). Importing this package imports nothing else, and no module of
it changes the process on import: `xla_setup`, `host_memory` and `policy` are usable before JAX starts a
backend (`jaxcnn.setup_process`, launch.py, which loads host_memory.py by its path)."""
