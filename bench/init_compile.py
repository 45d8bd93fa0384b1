"""Compile time of every zoo model's initialisation at XLA:CPU's default LLVM level and at level 1, and
whether the two give the same parameters bit for bit (jaxcnn/backends/xla_cpu/init_compile.py).

  python bench/init_compile.py                     # every registered model; writes bench/init_compile.md
  python bench/init_compile.py --models=cifar_resnet20,efficientnet_lite0 --out=/tmp/init.md

Each model is initialised as a run does it (`jaxcnn.train.state.init_model`'s program: one example,
`train=False`) on its natural input (`registry.MODELS.info(name)["input_shape"]`) with 10 classes, compiled twice in one
process without the persistent compilation cache. Exits 1 if any model's parameters differ.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxcnn import registry  # noqa: E402
from jaxcnn.backends.xla_cpu import init_compile  # noqa: E402

jax.config.update("jax_enable_compilation_cache", False)


def measure(name: str) -> dict:
  info = registry.MODELS.info(name)
  accepted = registry.accepted_kwargs(registry.MODELS.get(name)) or []
  model = registry.MODELS.build(name, **({"num_classes": 10} if "num_classes" in accepted else {}))
  x = jnp.zeros((1, *info["input_shape"]), info.get("input_dtype", "float32"))
  rng = jax.random.PRNGKey(0)
  row, values = {"model": name, "input": "x".join(map(str, info["input_shape"]))}, []
  for label, options in (("default", None), ("level 1", init_compile.OPTIONS)):
    lowered = jax.jit(lambda r, x: model.init(r, x, train=False)).lower(rng, x)
    t = time.perf_counter()
    compiled = lowered.compile(options)
    row[label] = time.perf_counter() - t
    values.append([np.asarray(a) for a in jax.tree.leaves(compiled(rng, x))])
  row["leaves"] = len(values[0])
  row["identical"] = all(a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
                         for a, b in zip(*values, strict=True))
  return row


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default="", help="comma-separated registry names (default: every model)")
  p.add_argument("--out", default=os.path.join(ROOT, "bench", "init_compile.md"))
  a = p.parse_args(argv)
  names = [n for n in a.models.split(",") if n] or registry.MODELS.names()
  lines = ["# Compiling a model's initialisation: XLA:CPU default vs LLVM level 1", "",
           f"`python bench/init_compile.py`, {datetime.date.today()}, {platform.processor() or platform.machine()}, "
           f"{os.cpu_count()} CPUs, jax {jax.__version__}. Seconds to compile `model.init` (one example, "
           "`train=False`); *identical*: every parameter and statistic the same bits at both levels.", "",
           "| model | input | tensors | default (s) | level 1 (s) | speed-up | identical |", "|---|---|---:|---:|---:|---:|---|"]
  ok = True
  for name in names:
    r = measure(name)
    ok &= r["identical"]
    line = (f"| {name} | {r['input']} | {r['leaves']} | {r['default']:.2f} | {r['level 1']:.2f} | "
            f"{r['default'] / r['level 1']:.2f}x | {'yes' if r['identical'] else '**no**'} |")
    print(line, flush=True)
    lines.append(line)
  with open(a.out, "w") as f:
    f.write("\n".join(lines) + "\n")
  print(f"wrote {a.out}")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
