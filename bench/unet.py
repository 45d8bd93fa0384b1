"""U-Net speed: jaxcnn vs the same network in PyTorch, forward (inference) and full training step.

  python bench/unet.py                      # writes bench/unet.md (PyTorch: `pip install -e ".[bench]"`)
  JAXCNN_CPU_CONVOLUTIONS=eigen python bench/unet.py   # XLA:CPU's Eigen convolutions: bench/unet_eigen.md
  python bench/unet.py --features=64 --size=512 --batch=4 --out=bench/unet_gpu.md   # e.g. on a GPU

In one run, on the same machine: images/s of the forward pass (BatchNorm in inference mode) and of one
Adam training step (forward, backward, update; dropout on, BatchNorm statistics updated) of the U-Net of
experiments/unet_roads.py (depth 4, 16 maps at the first level, BatchNorm, transposed-convolution
decoder) on `size` x `size` RGB crops at batch `batch`, jaxcnn's jitted trainer step vs an equivalent
PyTorch module (Conv2d/BatchNorm2d/MaxPool2d/ConvTranspose2d, channels-first, its default CPU/GPU
kernels); plus the host input pipeline's rate on the real road images (PNG decode, normalise, random crop
and flips), which must exceed the step rate.
"""
from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import time

import jax
import numpy as np
import optax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxcnn.backends.xla_cpu import xla_setup  # noqa: E402
from jaxcnn.data import pipeline  # noqa: E402
from jaxcnn.models.unet import unet  # noqa: E402
from jaxcnn.tasks.segmentation import Segmentation  # noqa: E402
from jaxcnn.train import step as step_lib  # noqa: E402
from jaxcnn.train.parallel import Parallel  # noqa: E402
from jaxcnn.train.state import create_train_state  # noqa: E402

STEPS = 5


def make_batches(batch, size, n=2, seed=0):
  rng = np.random.default_rng(seed)
  return [pipeline.pad_batch([{"x": rng.normal(size=(size, size, 3)).astype(np.float32),
                               "label": (rng.random((size, size, 1)) < 0.2).astype(np.float32),
                               "pixel_valid": np.ones((size, size), bool)} for _ in range(batch)], batch)
          for _ in range(n)]


def _median_time(fn, n):
  times = []
  for i in range(n):
    t = time.perf_counter()
    fn(i)
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def time_jax(batches, features, depth):
  model = unet(features=features, depth=depth, axis_name="data")
  task, tx = Segmentation(), optax.adam(1e-3)
  par = Parallel("jit", functools.partial(step_lib.train_step, model=model, task=task, tx=tx),
                 functools.partial(step_lib.eval_step, model=model.clone(axis_name=None), task=task),
                 jax.devices()[:1])
  example = {k: v[0] for k, v in batches[0].items() if k != "mask"}
  state = par.put_state(create_train_state(model.clone(axis_name=None), tx, example, 0))
  dev = [par.put_batch(b) for b in batches]
  box = {"state": state}

  def train(i):
    box["state"], m = par.train_step(box["state"], dev[i % len(dev)])
    jax.block_until_ready(m)
  t = time.perf_counter()
  train(0)
  compile_s = time.perf_counter() - t
  train(1)
  train_s = _median_time(train, STEPS)
  fwd_model = model.clone(axis_name=None)
  host = par.get_state(box["state"])
  variables = {"params": host.params, "batch_stats": host.batch_stats}
  fwd = jax.jit(lambda v, x: fwd_model.apply(v, x, train=False))
  xs = [jax.device_put(b["x"]) for b in batches]
  jax.block_until_ready(fwd(variables, xs[0]))
  fwd_s = _median_time(lambda i: jax.block_until_ready(fwd(variables, xs[i % len(xs)])), STEPS)
  return compile_s, train_s, fwd_s


def torch_unet(torch, features, depth):
  nn = torch.nn

  def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

  class UNet(nn.Module):
    def __init__(self):
      super().__init__()
      f = [features * 2 ** i for i in range(depth + 1)]
      self.down = nn.ModuleList([block(3 if i == 0 else f[i - 1], f[i]) for i in range(depth)])
      self.bottleneck = block(f[depth - 1], f[depth])
      self.ups = nn.ModuleList([nn.ConvTranspose2d(f[i + 1], f[i], 2, stride=2) for i in range(depth)])
      self.up = nn.ModuleList([block(2 * f[i], f[i]) for i in range(depth)])
      self.head = nn.Conv2d(f[0], 1, 1)
      self.drop = nn.Dropout(0.5)

    def forward(self, x):
      skips = []
      for i, b in enumerate(self.down):
        x = b(x)
        if i == len(self.down) - 1:
          x = self.drop(x)
        skips.append(x)
        x = torch.nn.functional.max_pool2d(x, 2)
      x = self.drop(self.bottleneck(x))
      for i in reversed(range(len(self.up))):
        x = self.up[i](torch.cat([skips[i], self.ups[i](x)], 1))
      return self.head(x)
  return UNet()


def time_torch(batches, features, depth, device):
  import torch
  torch.set_num_threads(os.cpu_count() or 1)
  model = torch_unet(torch, features, depth).to(device)
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  tb = [(torch.from_numpy(b["x"]).permute(0, 3, 1, 2).contiguous().to(device),
         torch.from_numpy(b["label"]).permute(0, 3, 1, 2).contiguous().to(device)) for b in batches]
  sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)  # noqa: E731

  def train(i):
    x, y = tb[i % len(tb)]
    model.train()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    loss.item()

  def fwd(i):
    model.eval()
    with torch.no_grad():
      model(tb[i % len(tb)][0])
    sync()
  train(0)
  train(1)
  train_s = _median_time(train, STEPS)
  fwd(0)
  fwd_s = _median_time(fwd, STEPS)
  return torch.__version__, torch.get_num_threads(), train_s, fwd_s


def pipeline_rate(batch, size, n=10):
  """Batches/s of the roads training pipeline (decode, normalise, crop, flip) on the real images."""
  roads = next((os.path.join(b, "roads") for b in (os.environ.get("JAXCNN_SHARED_DATA"),
                                                    os.path.join(ROOT, "..", "shared", "data"))
                if b and os.path.isdir(os.path.join(b, "roads", "images"))), None)
  if roads is None:
    return None
  from jaxcnn.data.roads import roads as roads_ds
  ds = roads_ds(manual_dir=roads, crop_size=min(size, 400))
  it = pipeline.train_iterator(ds.train, ds.train_preprocess, batch_size=batch, seed=0, num_epochs=100,
                               augment=ds.augment)
  return pipeline.batches_per_second(it, n)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--features", type=int, default=16)
  ap.add_argument("--depth", type=int, default=4)
  ap.add_argument("--size", type=int, default=256)
  ap.add_argument("--batch", type=int, default=8)
  eigen = xla_setup.cpu_kernels() == "eigen"
  ap.add_argument("--out", default=os.path.join(ROOT, "bench", "unet_eigen.md" if eigen else "unet.md"))
  a = ap.parse_args()
  batches = make_batches(a.batch, a.size)
  backend = jax.default_backend()
  compile_s, jax_train, jax_fwd = time_jax(batches, a.features, a.depth)
  try:
    torch_version, threads, torch_train, torch_fwd = time_torch(
        batches, a.features, a.depth, "cuda" if backend == "gpu" else "cpu")
  except ImportError:
    torch_version = None
  rate = pipeline_rate(a.batch, a.size)
  from jaxcnn.arithmetic import summarize
  macs = summarize(unet(features=a.features, depth=a.depth), (1, a.size, a.size, 3)).total_macs
  where = (f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}; XLA:CPU convolutions: "
           + ("Eigen, `JAXCNN_CPU_CONVOLUTIONS=eigen`)" if eigen else "YNNPACK, jaxlib's default)")
           if backend == "cpu" else f"{jax.devices()[0].device_kind}")
  lines = [
      f"# U-Net speed (depth {a.depth}, {a.features} maps at the first level, {a.size}x{a.size} RGB, "
      f"batch {a.batch})", "",
      f"`{'JAXCNN_CPU_CONVOLUTIONS=eigen ' if eigen else ''}python bench/unet.py --features={a.features} --depth={a.depth} --size={a.size} --batch={a.batch}` "
      f"on {where}, jax {jax.__version__}"
      + (f", PyTorch {torch_version} ({threads} threads)" if torch_version else ", PyTorch not installed")
      + f"; float32, median of {STEPS} steps; {macs / 1e9:.2f} GMAC per image forward.", "",
      "| | forward (images/s) | training step (images/s) | training GFLOP/s (3 x 2 x MACs) |",
      "|---|---:|---:|---:|",
      f"| jaxcnn (jit) | {a.batch / jax_fwd:.1f} | {a.batch / jax_train:.1f} | "
      f"{6 * macs * a.batch / jax_train / 1e9:.0f} |"]
  if torch_version:
    lines += [f"| PyTorch | {a.batch / torch_fwd:.1f} | {a.batch / torch_train:.1f} | "
              f"{6 * macs * a.batch / torch_train / 1e9:.0f} |", "",
              f"**jaxcnn / PyTorch images/s: forward {torch_fwd / jax_fwd:.2f}x, training step "
              f"{torch_train / jax_train:.2f}x** (above 1 = jaxcnn faster)."]
  lines += ["", f"jaxcnn compile time {compile_s:.1f} s."]
  if rate is not None:
    lines.append(f"Input pipeline on the real road images (PNG decode, normalise, crop, flips; 1 thread): "
                 f"{rate:.1f} batches/s = {rate * jax_train:.1f}x the jaxcnn training step rate.")
  out = "\n".join(lines) + "\n"
  print(out)
  with open(a.out, "w") as f:
    f.write(out)


if __name__ == "__main__":
  # as launch.py runs: glibc huge pages for XLA:CPU's large buffers (jaxcnn/backends/xla_cpu/host_memory.py)
  from jaxcnn.backends.xla_cpu import host_memory  # noqa: E402
  host_memory.reexec()
  import jaxcnn  # noqa: E402
  jaxcnn.setup_process()  # as launch.py: $JAXCNN_CPU_CONVOLUTIONS, NPROC, the CPU formulations' policy
  main()
