"""Step time of the FCN train step and the input pipeline's rate, side by side in one run.

  python bench/train_step.py            # writes bench/train_step.md

Measures, on whatever devices JAX sees: steps/s and examples/s of the paper's FCN (Wang et al. 2017) on
UCR GunPoint (length 150) at several global batch sizes, under `jit` (shard_map) and `pmap`, the
compile time, and the grain input pipeline's batches/s (it must exceed the step rate).
"""
from __future__ import annotations

import functools
import os
import sys
import time

import jax
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcnn.data import pipeline, ucr  # noqa: E402
from jaxcnn.models.fcn import FCN  # noqa: E402
from jaxcnn.tasks.classification import Classification  # noqa: E402
from jaxcnn.train import step as step_lib  # noqa: E402
from jaxcnn.train.parallel import Parallel  # noqa: E402
from jaxcnn.train.state import create_train_state  # noqa: E402


def time_steps(mode, batch_size, ds, steps=60):
  model = FCN(num_classes=2, axis_name="data")
  task, tx = Classification(2), optax.adam(1e-3)
  par = Parallel(mode, functools.partial(step_lib.train_step, model=model, task=task, tx=tx),
                 functools.partial(step_lib.eval_step, model=model.clone(axis_name=None), task=task))
  state = par.put_state(create_train_state(model.clone(axis_name=None), tx, ds.example(), 0))
  it = pipeline.train_iterator(ds.train, ds.preprocess, batch_size=batch_size, seed=0, num_epochs=1000)
  batches = [par.put_batch(next(it)) for _ in range(4)]
  t = time.perf_counter()
  state, m = par.train_step(state, batches[0])
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  for b in batches:  # warm-up
    state, m = par.train_step(state, b)
  jax.block_until_ready(m)
  t = time.perf_counter()
  for i in range(steps):
    state, m = par.train_step(state, batches[i % len(batches)])
  jax.block_until_ready(m)
  dt = (time.perf_counter() - t) / steps
  return compile_s, dt


def pipeline_rate(ds, batch_size, n=300):
  it = pipeline.train_iterator(ds.train, ds.preprocess, batch_size=batch_size, seed=0, num_epochs=1000)
  return pipeline.batches_per_second(it, n)


def main():
  ds = ucr.ucr_uea("GunPoint")
  rows = []
  for bs in (5, 16, 64):
    for mode in ("jit", "pmap"):
      if bs % jax.device_count():
        continue
      compile_s, dt = time_steps(mode, bs, ds)
      rows.append((bs, mode, compile_s, dt, pipeline_rate(ds, bs)))
  dev = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  lines = [f"# FCN train step on GunPoint ({dev}, jax {jax.__version__})", "",
           "| global batch | parallel | compile (s) | step (ms) | steps/s | examples/s | pipeline batches/s | pipeline / step rate |",
           "|---|---|---|---|---|---|---|---|"]
  for bs, mode, c, dt, pr in rows:
    lines.append(f"| {bs} | {mode} | {c:.2f} | {1e3 * dt:.1f} | {1 / dt:.0f} | {bs / dt:.0f} | {pr:.0f} | "
                 f"{pr * dt:.1f}x |")
  out = "\n".join(lines) + "\n"
  print(out)
  with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_step.md"), "w") as f:
    f.write(out)


if __name__ == "__main__":
  # as launch.py runs: glibc huge pages for XLA:CPU's large buffers (jaxcnn/backends/xla_cpu/host_memory.py)
  from jaxcnn.backends.xla_cpu import host_memory  # noqa: E402
  host_memory.reexec()
  import jaxcnn  # noqa: E402
  jaxcnn.setup_process()  # as launch.py: $JAXCNN_CPU_CONVOLUTIONS, NPROC, the CPU formulations' policy
  main()
