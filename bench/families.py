"""Every experiment family's training speed, compile time, input-pipeline rate and peak memory, each in
its own process, in one run.

  python bench/families.py                    # all families -> bench/families.md
  python bench/families.py --only=resnet_cifar,unet_roads --steps=20

Each family runs its experiment config exactly as `launch.py` builds it (model, data set, global batch,
optimizer), on whatever devices JAX sees, with `--config.precision` from `--precision`:

- compile: the first train step (tracing + XLA compilation; XLA's persistent cache is off);
- step time: the median of `--steps` further steps (batches already on the device), as steps/s and
  examples/s;
- input pipeline: batches/s of the grain iterator alone (reading, decoding, augmenting, batching); it
  must exceed the step rate or the devices wait for data (the "headroom" column);
- peak memory: the process's peak resident set (host RAM: model, optimizer state, activations on a CPU
  backend, the data pipeline), and the device's peak bytes where the backend reports them (GPU/TPU).

Families whose data is not on this machine (a `manual_dir` that does not exist) are listed as skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")

# (name, config spec, overrides, what it stands for)
FAMILIES = [
    ("fcn_ucr", "fcn_ucr.py:GunPoint", {}, "FCN, UCR GunPoint (length 150)"),
    ("resnet_ts", "fcn_ucr.py:GunPoint,resnet", {}, "ResNet for series, GunPoint"),
    ("inception_time", "fcn_ucr.py:GunPoint,inceptiontime", {}, "InceptionTime, GunPoint"),
    ("tcn", "fcn_ucr.py:GunPoint,tcn", {}, "dilated causal TCN, GunPoint"),
    ("lenet_mnist", "lenet_mnist.py", {"dataset.manual_dir": os.path.join(SHARED, "mnist")},
     "LeNet-5, MNIST 32x32"),
    ("resnet_cifar", "resnet_cifar.py:resnet20,synthetic", {}, "ResNet-20, CIFAR-10 shape (synthetic)"),
    ("resnet_imagenet", "resnet_imagenet.py:resnet50,synthetic", {"train.batch_size": 16},
     "ResNet-50, 224x224 (synthetic), batch 16"),
    ("c3d", "c3d_moving_shapes.py", {}, "C3D (width/8), moving-shapes clips"),
    ("char_cnn", "char_cnn.py:ag_news_subset", {"dataset.manual_dir": os.path.join(SHARED, "ag_news_subset")},
     "char-CNN small, AG News rows (length 1014)"),
    ("unet_roads", "unet_roads.py", {"dataset.manual_dir": os.path.join(SHARED, "roads")},
     "U-Net (depth 4, 16 maps), 256x256 road crops"),
]


def _load_config(spec: str):
  sys.path.insert(0, ROOT)
  from jaxcnn.cli import _load_config  # pylint: disable=import-outside-toplevel
  return _load_config(os.path.join(ROOT, "experiments", spec))


def measure(name: str, steps: int, precision: str, data_dir: str) -> dict:
  """One family, in this process."""
  spec, overrides, what = next((s, o, w) for n, s, o, w in FAMILIES if n == name)
  config = _load_config(spec)
  for key, value in overrides.items():
    section, _, leaf = key.partition(".")
    config[section][leaf] = value
  manual = config.dataset.get("manual_dir")
  if manual and not os.path.isdir(manual):
    return {"name": name, "what": what, "skipped": f"no data at {manual}"}
  config.precision = precision
  if "data_dir" in config.dataset:
    config.dataset.data_dir = data_dir
  return {"name": name, "what": what, **measure_config(config, steps)}


def measure_config(config, steps: int, devices=None, inference: bool = False) -> dict:
  """A config's train step (compile, median step time, examples/s), its input pipeline's rate and the
  memory peaks, on `devices` (default: all); `inference` adds the jitted forward pass in eval mode."""
  import resource

  import jax
  import numpy as np

  from jaxcnn.data import pipeline
  from jaxcnn.train.runtime import Runtime
  from jaxcnn.train.state import num_params

  with tempfile.TemporaryDirectory() as workdir:
    rt = Runtime(config, workdir, devices=devices)
    ds = rt.c.dataset
    it = pipeline.train_iterator(ds.train, ds.train_preprocess or ds.preprocess, batch_size=rt.batch_size,
                                 seed=0, num_epochs=10**6, num_threads=config.train.num_threads,
                                 augment=ds.augment, rows=rt.rows_per_step, **rt.proc)
    next(it)  # warm the pipeline (thread pools, first decode)
    n_pipe = max(steps, 10)
    t = time.perf_counter()
    host = [next(it) for _ in range(n_pipe)]
    pipe_s = (time.perf_counter() - t) / n_pipe
    batches = [rt.par.put_batch(b) for b in host[:4]]
    # compiled ahead of time as a run compiles it (jaxcnn/train/preflight.py): its estimates beside the
    # measured figures
    from jaxcnn.train import preflight
    _, (compiled, *_) = preflight.check_run(rt)
    compile_s = compiled.lower_seconds + compiled.compile_seconds
    state = rt.par.put_state(rt.state)
    state, m = rt.par.train_step(state, batches[0])
    jax.block_until_ready(m)
    times = []
    for i in range(steps):
      t = time.perf_counter()
      state, m = rt.par.train_step(state, batches[(i + 1) % len(batches)])
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t)
    infer = {}
    if inference:
      infer = _measure_inference(rt, rt.par.get_state(state), host[0], steps)  # (rt.state was donated)
    example_shape = tuple(np.shape(host[0]["x"])[1:])
    rt.ckpt.close()
  step_s = float(np.median(times))
  stats = jax.devices()[0].memory_stats() or {}
  from jaxcnn.backends.xla_cpu import xla_setup
  return {**infer, "example_shape": example_shape, "num_devices": rt.par.num_devices,
          "precision": config.get("precision", "float32"),
          "kernels": xla_setup.cpu_kernels() or "n/a", "batch": rt.batch_size,
          "params": num_params(rt.state.params),
          "compile_s": compile_s, "step_ms": 1e3 * step_s, "steps_per_s": 1 / step_s,
          "examples_per_s": rt.batch_size / step_s, "pipeline_batches_per_s": 1 / pipe_s,
          "headroom": step_s / pipe_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "device_peak_mb": stats.get("peak_bytes_in_use", 0) / 2**20 or None,
          # the compiler's estimates for one device's train step (not measurements)
          "compiled_need_mb": compiled.need_bytes / 2**20, "compiled_flops": compiled.flops,
          "compiled_bytes": compiled.bytes_accessed}


def _measure_inference(rt, state, host_batch, steps: int) -> dict:
  """The model's forward pass in eval mode (`train=False`), jitted on one device, over the batch's images."""
  import jax
  import numpy as np
  model = rt.c.init_model
  variables = {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}
  fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
  x = jax.device_put(np.asarray(host_batch["x"]))
  t = time.perf_counter()
  jax.block_until_ready(fn(variables, x))
  compile_s = time.perf_counter() - t
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    jax.block_until_ready(fn(variables, x))
    times.append(time.perf_counter() - t)
  s = float(np.median(times))
  return {"infer_compile_s": compile_s, "infer_ms": 1e3 * s, "infer_examples_per_s": x.shape[0] / s}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--only", default="", help="comma-separated family names (default: all)")
  p.add_argument("--steps", type=int, default=20, help="timed train steps per family")
  p.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "jaxcnn-bench-tfds"),
                 help="TFDS data dir for the built data sets")
  p.add_argument("--out", default=os.path.join(ROOT, "bench", "families.md"))
  p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one family, print JSON
  a = p.parse_args()
  if a.one:
    print("RESULT " + json.dumps(measure(a.one, a.steps, a.precision, a.data_dir)))
    return
  names = [n for n, *_ in FAMILIES if not a.only or n in a.only.split(",")]
  unknown = set(a.only.split(",")) - {n for n, *_ in FAMILIES} if a.only else set()
  if unknown:
    sys.exit(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {sorted(unknown)}; choose from "
             + ", ".join(n for n, *_ in FAMILIES))
  env = dict(os.environ)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # compile times are measured cold
  rows = []
  for name in names:
    print(f"{name} ...", flush=True)
    # the CPU convolution kernels launch.py would use: the config's, unless the environment chose
    from jaxcnn.backends.xla_cpu import xla_setup
    spec = next(s for n, s, *_ in FAMILIES if n == name)
    kernels, _ = xla_setup.choose(None, _load_config(spec).get("cpu_convolutions"), os.environ)
    run_env = {**env, xla_setup.ENV: kernels} if kernels else env
    r = subprocess.run([sys.executable, __file__, f"--one={name}", f"--steps={a.steps}",
                        f"--precision={a.precision}", f"--data_dir={a.data_dir}"], env=run_env,
                       capture_output=True, text=True, cwd=ROOT)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if r.returncode or line is None:
      rows.append({"name": name, "what": name, "skipped": f"failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}"})
    else:
      rows.append(json.loads(line[len("RESULT "):]))
    print("  " + json.dumps(rows[-1]), flush=True)
  write(rows, a)


def _host_malloc() -> str:
  from jaxcnn.backends.xla_cpu import host_memory
  return {"hugepages": "GLIBC_TUNABLES=glibc.malloc.hugetlb=1"}.get(host_memory.policy(),
                                                                   "the C library's malloc")


def write(rows, a):
  import jax
  dev = jax.devices()[0]
  lines = ["# Every experiment family: speed, compile time, input pipeline, memory", "",
           f"`python bench/families.py --steps={a.steps} --precision={a.precision}` on {jax.device_count()} x "
           f"{dev.platform} ({dev.device_kind}; {platform.processor() or platform.machine()}, "
           f"{os.cpu_count()} CPUs), jax {jax.__version__}. Each family is its experiment config as "
           "`launch.py` builds it, one process each, with the CPU convolution kernels its config names "
           "(`config.cpu_convolutions`, unless `JAXCNN_CPU_CONVOLUTIONS` is set), and host memory as "
           f"launch.py sets it (`{_host_malloc()}`, jaxcnn/backends/xla_cpu/host_memory.py). Step time: median of the "
           "timed steps. Pipeline: "
           "the grain iterator alone; headroom = pipeline rate / step rate (above 1: the devices never "
           "wait for data). Peak RSS: the process's host memory.", "",
           "| family | stands for | CPU convolutions | global batch | params | compile (s) | step (ms) | steps/s "
           "| examples/s | pipeline batches/s | headroom | peak RSS (MB) | device peak (MB) |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    if "skipped" in r:
      lines.append(f"| {r['name']} | {r['what']} | skipped: {r['skipped']} |" + " |" * 10)
      continue
    dpk = "n/a" if r["device_peak_mb"] is None else f"{r['device_peak_mb']:.0f}"
    lines.append(f"| {r['name']} | {r['what']} | {r['kernels']} | {r['batch']} | {r['params']:,} | "
                 f"{r['compile_s']:.1f} | "
                 f"{r['step_ms']:.1f} | {r['steps_per_s']:.2f} | {r['examples_per_s']:.1f} | "
                 f"{r['pipeline_batches_per_s']:.1f} | **{r['headroom']:.1f}x** | {r['peak_rss_mb']:.0f} | {dpk} |")
  slow = [r["name"] for r in rows if "headroom" in r and r["headroom"] < 1]
  lines += ["", ("Input-bound (pipeline slower than the step): " + ", ".join(slow) + "." if slow else
                 "Every measured family's input pipeline is faster than its train step."),
            "The synthetic families make their images in memory, so their pipeline rate leaves out the "
            "JPEG decoding of the real data sets.", ""]
  with open(a.out, "w") as f:
    f.write("\n".join(lines))
  print(f"wrote {a.out}")


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  # as launch.py runs: glibc huge pages for XLA:CPU's large buffers (jaxcnn/backends/xla_cpu/host_memory.py)
  from jaxcnn.backends.xla_cpu import host_memory  # noqa: E402
  host_memory.reexec()
  import jaxcnn  # noqa: E402
  jaxcnn.setup_process()  # as launch.py: $JAXCNN_CPU_CONVOLUTIONS, NPROC, the CPU formulations' policy
  main()
