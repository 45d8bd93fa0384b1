"""Compiling a model's initialisation for XLA:CPU: LLVM at optimisation level 1, the same values sooner.

`model.init` draws every parameter from the PRNG, and on CPU most of its compile time is LLVM
optimising the random-number code at its default level 2 (the threefry rounds and the normal
distribution's inverse error function, once per parameter shape): ResNet-20's init took 3.6 s to
compile, more than its train step's forward pass. At level 1 XLA:CPU emits the same arithmetic
(floating-point contraction and every rounding unchanged), so the parameters are the same bits:
`python bench/init_compile.py` checks every zoo model and measures the compile time at both levels
(bench/init_compile.md; ResNet-20 3.6 s -> 1.3 s, EfficientNet-Lite0 7.0 s -> 4.5 s on 2 cores).
Level 0 compiles faster still but changes about 10 % of the values by one ulp, so it is not used.
The init runs once per run, so its slower level-1 code costs nothing measurable.

Only the initialisation is compiled this way; train, eval and predict steps keep XLA's defaults.
"""
from __future__ import annotations

OPTIONS = {"xla_backend_optimization_level": 1}


def compiler_options(backend: str) -> dict | None:
  """XLA compiler options for compiling `model.init` on `backend` (None: XLA's defaults)."""
  return dict(OPTIONS) if backend == "cpu" else None
