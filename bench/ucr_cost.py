"""What the full UCR/UEA benchmark costs on this machine: measured step and evaluation times per (model,
data set), multiplied out by each protocol's epochs and seeds.

  python bench/ucr_cost.py                      # every model x every shipped data set -> bench/ucr_cost.md
  python bench/ucr_cost.py --models=fcn,inceptiontime --datasets=GunPoint,ACSF1 --out=/tmp/cost.md

For each pair it builds the run exactly as `experiments/ucr_benchmark.py:<model>` does (same config,
trainer runtime, batch size and devices), times `--steps` train steps on real batches after compilation
and one full evaluation of the test split, and estimates one run as

  epochs x (steps per epoch x step time) + evaluations x evaluation time,

with evaluations = epochs / eval_every_epochs + the evaluations at epochs that lower the training loss
(the protocol's selection). That last count is not known before a run; `--improving_fraction` (default
0.1: about what the FCN GunPoint runs showed) sets it as a fraction of the epochs. Data loading, logging
and checkpoints are left out, so real runs take somewhat longer; compare with the wall times in a
finished benchmark's `benchmark.md`.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxcnn.data import pipeline  # noqa: E402
from jaxcnn.train import benchmark  # noqa: E402
from jaxcnn.train.runtime import Runtime  # noqa: E402


def _experiment():
  spec = importlib.util.spec_from_file_location("_ucr_benchmark", os.path.join(ROOT, "experiments",
                                                                                "ucr_benchmark.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def measure(config, steps: int) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    rt = Runtime(config, tmp)
    ds, par = rt.c.dataset, rt.par
    it = pipeline.train_iterator(ds.train, ds.train_preprocess or ds.preprocess, batch_size=rt.batch_size,
                                 seed=0, num_epochs=1000, rows=rt.rows_per_step)
    batches = [par.put_batch(next(it)) for _ in range(min(steps, 4))]
    state = par.put_state(rt.state)
    t = time.perf_counter()
    state, m = par.train_step(state, batches[0])
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(steps):
      state, m = par.train_step(state, batches[i % len(batches)])
    jax.block_until_ready(m)
    step_s = (time.perf_counter() - t) / steps
    rt.evaluate(state)  # compiles and caches the eval batches
    t = time.perf_counter()
    rt.evaluate(state)
    eval_s = time.perf_counter() - t
    rt.ckpt.close()
    return dict(num_train=rt.num_train, num_test=len(next(iter(ds.evals.values()))),
                length=ds.info.get("length"), batch=rt.batch_size, spe=rt.steps_per_epoch,
                epochs=int(config.train.epochs), eval_every=int(config.train.eval_every_epochs),
                compile_s=compile_s, step_s=step_s, eval_s=eval_s)


def main(argv=None):
  exp = _experiment()
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="fcn,resnet,inceptiontime,tcn")
  p.add_argument("--datasets", default=",".join(exp.SHIPPED))
  p.add_argument("--steps", type=int, default=8, help="timed train steps per pair")
  p.add_argument("--improving_fraction", type=float, default=0.1)
  p.add_argument("--out", default=os.path.join(ROOT, "bench", "ucr_cost.md"))
  args = p.parse_args(argv)
  names = [n for n in args.datasets.split(",") if n]
  lines = ["| model | data set | train / test | length | batch x steps/epoch | epochs x seeds | compile (s) | "
           "step (ms) | eval (ms) | one run (min) | all seeds (min) |", "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|"]
  totals = {}
  for model in [m for m in args.models.split(",") if m]:
    bench_config = exp.get_config(model)
    seeds = int(bench_config.benchmark.seeds)
    for name in names:
      c = benchmark.run_config(bench_config, name, 0)
      r = measure(c, args.steps)
      evals = r["epochs"] / r["eval_every"] + args.improving_fraction * r["epochs"]
      run_s = r["epochs"] * r["spe"] * r["step_s"] + evals * r["eval_s"]
      totals[model] = totals.get(model, 0.0) + seeds * run_s
      line = (f"| {model} | {name} | {r['num_train']} / {r['num_test']} | {r['length']} | {r['batch']} x "
              f"{r['spe']} | {r['epochs']} x {seeds} | {r['compile_s']:.1f} | {1e3 * r['step_s']:.1f} | "
              f"{1e3 * r['eval_s']:.0f} | {run_s / 60:.1f} | {seeds * run_s / 60:.0f} |")
      print(line, flush=True)
      lines.append(line)
  dev = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  head = [f"# Estimated cost of the full UCR/UEA benchmark ({dev}, {os.cpu_count()} CPU cores, jax "
          f"{jax.__version__})", "",
          f"`python bench/ucr_cost.py`: measured step and evaluation times x each protocol's epochs and seeds; "
          f"evaluations = epochs / eval_every + {args.improving_fraction:g} x epochs (the selection's "
          "evaluations at improving epochs). Loading, logging and checkpoints are not included.", ""]
  tail = ["", "Whole benchmark per model (all shipped data sets, all seeds): " +
          ", ".join(f"{m} {s / 3600:.1f} h" for m, s in totals.items()) +
          f"; all models {sum(totals.values()) / 3600:.1f} h.", ""]
  out = "\n".join(head + lines + tail)
  print(tail[1])
  with open(args.out, "w") as f:
    f.write(out)


if __name__ == "__main__":
  # as launch.py runs: glibc huge pages for XLA:CPU's large buffers (jaxcnn/backends/xla_cpu/host_memory.py)
  from jaxcnn.backends.xla_cpu import host_memory  # noqa: E402
  host_memory.reexec()
  import jaxcnn  # noqa: E402
  jaxcnn.setup_process()  # as launch.py: $JAXCNN_CPU_CONVOLUTIONS, NPROC, the CPU formulations' policy
  main()
