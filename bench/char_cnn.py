"""Training speed of the character-level ConvNet (Zhang et al. 2015, small model): jaxcnn vs PyTorch CPU.

  python bench/char_cnn.py            # writes bench/char_cnn.md (needs `pip install -e ".[bench]"`)

In one run, on the same machine and threads: examples/s of one full SGD-with-momentum training step
(forward, backward, update; dropout on) of the small model on 1014-frame inputs at batch 128, jaxcnn's
jitted step (the trainer's own `train_step`, one-hot encoding on the device from int8 indices) vs the
same network in PyTorch (Conv1d/MaxPool1d/Linear, the same one-hot encoding inside the step), plus the
host input pipeline's rate (CSV text -> int8 indices -> batches), which must exceed the step rate.
"""
from __future__ import annotations

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

from jaxcnn.data import pipeline  # noqa: E402
from jaxcnn.data import text as text_lib  # noqa: E402
from jaxcnn.models.char_cnn import CharCNN  # noqa: E402
from jaxcnn.tasks.classification import Classification  # noqa: E402
from jaxcnn.train import step as step_lib  # noqa: E402
from jaxcnn.train.parallel import Parallel  # noqa: E402
from jaxcnn.train.state import create_train_state  # noqa: E402

BATCH, LENGTH, CLASSES, STEPS = 128, 1014, 4, 6


def fake_texts(n, seed=0):
  rng = np.random.default_rng(seed)
  chars = np.array(list("abcdefghijklmnopqrstuvwxyz      .,'"))
  return [("".join(rng.choice(chars, int(rng.integers(100, 1200)))), int(rng.integers(CLASSES)))
          for _ in range(n)]


def batch_of(rows):
  return pipeline.pad_batch([{"x": text_lib.quantize(t, LENGTH), "label": np.int32(y)} for t, y in rows],
                            BATCH)


def time_jax(batches):
  model = CharCNN(num_classes=CLASSES, axis_name="data")
  task, tx = Classification(CLASSES), optax.sgd(0.01, momentum=0.9)
  par = Parallel("jit", functools.partial(step_lib.train_step, model=model, task=task, tx=tx),
                 functools.partial(step_lib.eval_step, model=model.clone(axis_name=None), task=task),
                 jax.devices()[:1])
  example = {"x": batches[0]["x"][0], "label": batches[0]["label"][0]}
  state = par.put_state(create_train_state(model.clone(axis_name=None), tx, example, 0))
  dev = [par.put_batch(b) for b in batches]
  t = time.perf_counter()
  state, m = par.train_step(state, dev[0])
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  state, m = par.train_step(state, dev[1])
  jax.block_until_ready(m)
  times = []
  for i in range(STEPS):
    t = time.perf_counter()
    state, m = par.train_step(state, dev[i % len(dev)])
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  return compile_s, float(np.median(times))


def torch_model(torch):
  nn = torch.nn
  f = 256
  layers = [nn.Conv1d(70, f, 7), nn.ReLU(), nn.MaxPool1d(3), nn.Conv1d(f, f, 7), nn.ReLU(), nn.MaxPool1d(3)]
  for _ in range(3):
    layers += [nn.Conv1d(f, f, 3), nn.ReLU()]
  layers += [nn.Conv1d(f, f, 3), nn.ReLU(), nn.MaxPool1d(3), nn.Flatten(),
             nn.Linear(34 * f, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 1024), nn.ReLU(),
             nn.Dropout(0.5), nn.Linear(1024, CLASSES)]
  model = nn.Sequential(*layers)
  for p in model.parameters():
    nn.init.normal_(p, 0.0, 0.05)
  return model


def time_torch(batches):
  import torch
  torch.set_num_threads(os.cpu_count() or 1)
  model = torch_model(torch)
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
  tb = [(torch.from_numpy(b["x"].astype(np.int64)), torch.from_numpy(b["label"].astype(np.int64)))
        for b in batches]

  def step(x, y):
    onehot = torch.nn.functional.one_hot(x.clamp(min=0), 70).float() * (x >= 0).unsqueeze(-1)
    loss = torch.nn.functional.cross_entropy(model(onehot.transpose(1, 2)), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()
  step(*tb[0])
  step(*tb[1])
  times = []
  for i in range(STEPS):
    t = time.perf_counter()
    step(*tb[i % len(tb)])
    times.append(time.perf_counter() - t)
  return torch.__version__, torch.get_num_threads(), float(np.median(times))


def pipeline_rate(n=40):
  rows = fake_texts(BATCH * 4)
  source = text_lib.TextSource([t for t, _ in rows], np.array([y for _, y in rows]))
  pre = lambda e: {"x": text_lib.quantize(e["text"], LENGTH), "label": np.int32(e["label"])}  # noqa: E731
  it = pipeline.train_iterator(source, pre, batch_size=BATCH, seed=0, num_epochs=1000)
  return pipeline.batches_per_second(it, n)


def main():
  rows = fake_texts(BATCH * 3)
  batches = [batch_of(rows[i * BATCH:(i + 1) * BATCH]) for i in range(3)]
  compile_s, jax_s = time_jax(batches)
  try:
    torch_version, threads, torch_s = time_torch(batches)
  except ImportError:
    torch_version, threads, torch_s = None, 0, float("nan")
  rate = pipeline_rate()
  macs = 370_372_608  # per example, forward (python -m jaxcnn.summary char_cnn_small --input_shape=1014 --dtype=int8)
  cpu = platform.processor() or platform.machine()
  lines = [
      "# Character-level ConvNet training speed (small model, Zhang et al. 2015)", "",
      f"`python bench/char_cnn.py` on {os.cpu_count()} CPU cores ({cpu}), jax {jax.__version__}"
      + (f", PyTorch {torch_version} ({threads} threads)" if torch_version else ", PyTorch not installed")
      + f"; batch {BATCH}, {LENGTH} frames, SGD momentum 0.9, dropout on, float32; median of {STEPS} steps.",
      "",
      "| | step (ms) | examples/s | GFLOP/s (3 x forward MACs x 2) |",
      "|---|---:|---:|---:|",
      f"| jaxcnn (jit, one-hot on device) | {1e3 * jax_s:.0f} | {BATCH / jax_s:.1f} | "
      f"{6 * macs * BATCH / jax_s / 1e9:.1f} |",
  ]
  if torch_version:
    lines.append(f"| PyTorch CPU | {1e3 * torch_s:.0f} | {BATCH / torch_s:.1f} | "
                 f"{6 * macs * BATCH / torch_s / 1e9:.1f} |")
  lines += ["", f"**jaxcnn / PyTorch examples/s: {torch_s / jax_s:.2f}x** (goal >= 1.0)." if torch_version
            else "", f"jaxcnn compile time {compile_s:.1f} s. Input pipeline (quantise + batch, 1 thread): "
            f"{rate:.1f} batches/s = {rate / (1 / jax_s):.0f}x the jaxcnn step rate.", ""]
  out = "\n".join(lines)
  print(out)
  with open(os.path.join(ROOT, "bench", "char_cnn.md"), "w") as f:
    f.write(out)


if __name__ == "__main__":
  # as launch.py runs: glibc huge pages for XLA:CPU's large buffers (jaxcnn/backends/xla_cpu/host_memory.py)
  from jaxcnn.backends.xla_cpu import host_memory  # noqa: E402
  host_memory.reexec()
  import jaxcnn  # noqa: E402
  jaxcnn.setup_process()  # as launch.py: $JAXCNN_CPU_CONVOLUTIONS, NPROC, the CPU formulations' policy
  main()
