"""A model's initialisation is compiled at XLA:CPU's LLVM level 1 (jaxcnn/backends/xla_cpu/init_compile.py):
the same parameters, bit for bit, as XLA's default level, sooner. `python bench/init_compile.py` checks
every zoo model; here the one whose values level 0 would change (ResNet-20: its 97 normal draws)."""
import os
import sys

import jax
import numpy as np

from conftest import ROOT
from jaxcnn.backends.xla_cpu import init_compile
from jaxcnn.train.state import init_model

sys.path.insert(0, os.path.join(ROOT, "bench"))
import init_compile as bench  # noqa: E402  (bench/init_compile.py)


def test_level_1_gives_the_default_levels_parameters_bit_for_bit():
  row = bench.measure("cifar_resnet20")
  assert row["leaves"] == 97 and row["identical"], row


def test_a_run_initialises_with_the_backends_options():
  from jaxcnn import registry
  model = registry.MODELS.build("lenet5", num_classes=10)
  x = np.zeros((32, 32, 1), np.float32)
  params, stats = init_model(model, {"x": x}, jax.random.PRNGKey(3))
  ref = jax.jit(lambda r: model.init(r, x[None], train=False))(jax.random.PRNGKey(3))
  assert stats == {} and jax.tree.all(jax.tree.map(np.array_equal, params, ref["params"]))
  assert init_compile.compiler_options("cpu") == {"xla_backend_optimization_level": 1}
  assert init_compile.compiler_options("gpu") is None and init_compile.compiler_options("tpu") is None
