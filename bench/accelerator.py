"""Every GPU/TPU figure jaxcnn claims, measured by one command within a wall-clock budget.

  python bench/accelerator.py                    # on a GPU/TPU host: everything, at most 8 minutes
  python bench/accelerator.py --budget_s=300 --only=resnet50_bf16,unet
  python bench/accelerator.py --smoke            # on CPU: tiny sizes, a few seconds per family

What it measures, each in its own process (so one that runs out of memory or time costs only its row):

- `resnet50_f32`, `resnet50_bf16`: the ResNet-50 training step at 224x224 (synthetic images, the
  experiment config resnet_imagenet.py:resnet50 with `--config.precision`): images/s, step time, compile
  time, device memory peak and MFU = model FLOPs (3 x 2 x the forward's multiply-accumulates from
  `jaxcnn.arithmetic`, per image) x images/s over the device's peak (the table `PEAK_TFLOPS` below);
- `unet`: the paper-width U-Net (64 maps, depth 4) on 512x512 tiles, bfloat16, training step and
  inference (eval-mode forward), on a seeded synthetic road folder the script writes;
- `mask_rcnn_infer`: Mask R-CNN ResNet-50-FPN inference per image at 1333x800 (padded to 1344x800, as
  experiments/mask_rcnn.py:coco_r50_fpn evaluates it; bench/mask_rcnn.py's measurement);
  `mask_rcnn_train`: its training step on seeded synthetic scenes of 1344x1344 (its training size);
- `char_cnn`: the small char-CNN (Zhang et al. 2015) training examples/s on a synthetic CSV folder;
- every training row also gives its input pipeline's batches/s against the step rate ("headroom"; below
  1 the devices wait for data);
- `scaling`: the ResNet-50 float32 step on 1 device against all local devices (same batch per device),
  when there is more than one (its all-device half is the `resnet50_f32` row, not measured twice).

It writes `--out` (default bench/accelerator.md; `--smoke`: bench/accelerator_smoke.md) with the device,
the jax/jaxlib versions and each figure with its command, and prints the same table. A family whose
estimated time no longer fits in what is left of `--budget_s` is skipped, and the table says so; a running
one is stopped at the budget. Without an accelerator, it says which jax package to install instead of
measuring the CPU (`--smoke` runs on CPU on purpose).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

# Dense peak TFLOP/s per chip from the vendors' data sheets: (bfloat16, float32 as XLA runs it). On NVIDIA
# GPUs XLA's default precision runs float32 convolutions and matrix products as TF32 on the tensor cores,
# so the float32 column is the TF32 peak; TPUs run float32 through bfloat16 passes (no separate peak: the
# bfloat16 one is used). Matched against `device_kind` in this order (first substring that matches).
PEAK_TFLOPS = [
    ("H200", (989.0, 494.7)), ("H100", (989.0, 494.7)),   # SXM; the PCIe H100 is lower (756 / 378)
    ("A100", (312.0, 156.0)), ("L40S", (362.1, 181.0)), ("L4", (121.0, 60.0)), ("A10", (125.0, 62.5)),
    ("V100", (125.0, 15.7)), ("T4", (65.0, 8.1)),
    ("TPU v6", (918.0, 918.0)), ("TPU v5 lite", (197.0, 197.0)), ("TPU v5e", (197.0, 197.0)),
    ("TPU v5", (459.0, 459.0)), ("TPU v4", (275.0, 275.0)), ("TPU v3", (123.0, 123.0)),
]

# name -> (what it stands for, estimated seconds on an accelerator, in --smoke on 2 CPU cores)
FAMILIES = {
    "resnet50_f32": ("ResNet-50 training step, 224x224, float32", 75, 25),
    "resnet50_bf16": ("ResNet-50 training step, 224x224, bfloat16", 75, 25),
    "unet": ("U-Net (64 maps, depth 4), 512x512 tiles, bfloat16: training step and inference", 75, 20),
    "mask_rcnn_infer": ("Mask R-CNN R50-FPN inference, 1333x800 padded to 1344x800", 90, 20),
    "mask_rcnn_train": ("Mask R-CNN R50-FPN training step, 1344x1344 synthetic scenes", 120, 25),
    "char_cnn": ("char-CNN small training, length 1014, batch 128", 45, 15),
    "scaling": ("ResNet-50 float32 step: 1 device vs all local devices (resnet50_f32's row)", 45, 0),
}


def peak_tflops(device_kind: str, precision: str) -> float | None:
  for key, (bf16, f32) in PEAK_TFLOPS:
    if key.lower() in device_kind.lower():
      return bf16 if precision == "bfloat16" else f32
  return None


def _no_accelerator_message() -> str:
  gpu = shutil.which("nvidia-smi") or glob.glob("/dev/nvidia[0-9]*")
  tpu = glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
  if gpu:
    return ("JAX sees no GPU, but this host has an NVIDIA GPU: install jaxlib's CUDA plugin, "
            "`pip install -U \"jax[cuda12]\"` (CUDA 12 drivers) or `\"jax[cuda13]\"` (CUDA 13), then rerun.")
  if tpu:
    return "JAX sees no TPU, but this host has TPU devices: `pip install -U \"jax[tpu]\"`, then rerun."
  return ("JAX sees only the CPU: no GPU or TPU plugin is installed (`pip install -U \"jax[cuda12]\"`, "
          "`\"jax[cuda13]\"` or `\"jax[tpu]\"` on such a host). `--smoke` runs the script on CPU at tiny sizes.")


# ------------------------------------------------------------------------------ synthetic data folders

def write_road_folder(root: str, n: int, size: int, seed: int = 0) -> str:
  """Seeded aerial-like tiles in the ETH/EPFL layout (`images/`, `groundtruth/`): straight roads of a few
  widths over textured ground; what the speed of the U-Net family needs, not its accuracy."""
  import numpy as np
  from PIL import Image
  rng = np.random.default_rng(seed)
  for d in ("images", "groundtruth"):
    os.makedirs(os.path.join(root, d), exist_ok=True)
  for i in range(n):
    mask = np.zeros((size, size), bool)
    for _ in range(rng.integers(1, 4)):
      c, w = rng.integers(0, size), rng.integers(max(2, size // 40), max(3, size // 15))
      if rng.random() < 0.5:
        mask[:, max(0, c - w):c + w] = True
      else:
        mask[max(0, c - w):c + w, :] = True
    img = rng.normal(100, 25, (size, size, 3))
    img[mask] = rng.normal(170, 10, (int(mask.sum()), 3))
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(os.path.join(root, "images", f"t{i:03d}.png"))
    Image.fromarray(mask.astype(np.uint8) * 255).save(os.path.join(root, "groundtruth", f"t{i:03d}.png"))
  return root


def write_csv_folder(root: str, n_train: int, n_test: int, seed: int = 0) -> str:
  """Seeded texts in the char-CNN papers' CSV layout (`"class","title","description"`, classes.txt)."""
  import numpy as np
  rng = np.random.default_rng(seed)
  words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 9))) for _ in range(500)]
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, "classes.txt"), "w") as f:
    f.write("\n".join(f"class{k}" for k in range(4)) + "\n")
  for split, n in (("train", n_train), ("test", n_test)):
    with open(os.path.join(root, f"{split}.csv"), "w") as f:
      for _ in range(n):
        text = " ".join(rng.choice(words, rng.integers(20, 160)))
        f.write(f'"{rng.integers(1, 5)}","{text[:60]}","{text}"\n')
  return root


# ------------------------------------------------------------------------------ one family, in-process

def _config(spec: str):
  from jaxcnn.cli import _load_config
  return _load_config(os.path.join(ROOT, "experiments", spec))


def _resnet_config(smoke: bool, precision: str, per_device: int, num_devices: int, data_dir: str):
  c = _config("resnet_imagenet.py:resnet18,synthetic" if smoke else "resnet_imagenet.py:resnet50,synthetic")
  c.precision = precision
  if smoke:
    c.dataset.shape, c.dataset.num_train, c.dataset.num_test = (32, 32, 3), 32, 8
  else:
    c.dataset.num_train, c.dataset.num_test = 4 * per_device * num_devices, 8
  c.train.batch_size = per_device * num_devices
  if "data_dir" in c.dataset:
    c.dataset.data_dir = data_dir
  return c


def measure(name: str, smoke: bool, steps: int, tmp: str) -> dict:
  """One family's figures, with the device's peak for the compiled estimate's bound."""
  import jax
  r = _measure(name, smoke, steps, tmp)
  if "precision" in r and "peak_tflops" not in r:
    r["peak_tflops"] = peak_tflops(jax.devices()[0].device_kind, r["precision"])
  return r


def _measure(name: str, smoke: bool, steps: int, tmp: str) -> dict:
  import jax

  import families
  from jaxcnn import arithmetic

  devs = jax.devices()
  kind = devs[0].device_kind
  data_dir = os.path.join(tmp, "tfds")
  if name in ("resnet50_f32", "resnet50_bf16"):
    precision = "bfloat16" if name.endswith("bf16") else "float32"
    per = 2 if smoke else 128
    c = _resnet_config(smoke, precision, per, len(devs), data_dir)
    r = families.measure_config(c, steps)
    from jaxcnn import registry
    registry.load_all()
    model = registry.MODELS.build(c.model.name, num_classes=1000)
    macs = arithmetic.summarize(model, (1, *r["example_shape"])).total_macs
    r["model_tflop_per_s"] = 6 * macs * r["examples_per_s"] / 1e12  # forward 2 x MACs, backward 2 x forward
    peak = peak_tflops(kind, precision)
    r["peak_tflops"] = peak
    r["mfu"] = None if peak is None else r["model_tflop_per_s"] / (peak * len(devs))
    return r
  if name == "scaling":  # the 1-device half; the all-device half is resnet50_f32's row (scaling_of)
    c1 = _resnet_config(smoke, "float32", 2 if smoke else 128, 1, data_dir)
    return families.measure_config(c1, steps, devices=devs[:1])
  if name == "unet":
    size = 64 if smoke else 512
    c = _config("unet_roads.py")
    c.dataset.manual_dir = write_road_folder(os.path.join(tmp, "roads"), 6 if smoke else 16, size)
    c.dataset.crop_size, c.dataset.data_dir = size, data_dir
    c.model.features, c.model.depth = (4, 2) if smoke else (64, 4)
    c.precision = "bfloat16"
    c.train.batch_size = (2 if smoke else 8) * len(devs)
    return families.measure_config(c, steps, inference=True)
  if name == "mask_rcnn_infer":
    import mask_rcnn
    return mask_rcnn.measure("small" if smoke else "r50_fpn", steps, paired=False)  # no CPU torch beside
  if name == "mask_rcnn_train":
    c = _config("mask_rcnn.py:shapes,runlocal" if smoke else "mask_rcnn.py:shapes")
    if not smoke:
      c.model = type(c.model)(dict(name="mask_rcnn_r50_fpn"))
      c.dataset.size, c.dataset.num_train, c.dataset.num_val = 1344, 4 * len(devs), 2
      c.train.batch_size = 2 * len(devs)
    c.dataset.data_dir = data_dir
    return families.measure_config(c, steps)
  if name == "char_cnn":
    c = _config("char_cnn.py:ag_news")
    c.dataset.manual_dir = write_csv_folder(os.path.join(tmp, "csv"), 64 if smoke else 2048, 16)
    c.dataset.data_dir = data_dir
    if smoke:
      c.dataset.length, c.model.features, c.model.fc_units, c.train.batch_size = 128, 16, 32, 8
    return families.measure_config(c, steps)
  raise ValueError(name)


def scaling_of(one: dict, alln: dict) -> dict:
  """The scaling row from the 1-device run and resnet50_f32's all-device run (same batch per device)."""
  n = alln["num_devices"]
  return {"one_examples_per_s": one["examples_per_s"], "all_examples_per_s": alln["examples_per_s"],
          "num_devices": n, "efficiency": alln["examples_per_s"] / (n * one["examples_per_s"]),
          "batch": alln["batch"], "compile_s": alln["compile_s"], "step_ms": alln["step_ms"]}


# ------------------------------------------------------------------------------ the table

def _f(v, fmt="{:.1f}"):
  return "n/a" if v is None else fmt.format(v)


def _row(name: str, r: dict) -> str:
  what = FAMILIES[name][0]
  if "skipped" in r:
    return f"| {name} | {what} | skipped: {r['skipped']} | | | | | | | |"
  if name == "scaling":
    return (f"| {name} | {what} | global batch {r['batch']} | {r['compile_s']:.1f} | {r['step_ms']:.1f} | "
            f"1 device {r['one_examples_per_s']:.1f}/s, {r['num_devices']} devices "
            f"{r['all_examples_per_s']:.1f}/s: **{100 * r['efficiency']:.0f} %** of linear | | | | |")
  if name == "mask_rcnn_infer":
    return (f"| {name} | {what} | batch 1 ({r['input']}) | {r['compile_s']:.1f} | **{r['ms_per_image']:.0f}** "
            f"(+ {r['host_ms_per_image']:.0f} host) | {1000 / r['ms_per_image']:.2f} images/s | | | | |")
  extra = ""
  if "mfu" in r:
    extra = f"MFU **{_f(r['mfu'] and 100 * r['mfu'])} %** ({r['model_tflop_per_s']:.3g} TFLOP/s of {_f(r['peak_tflops'], '{:.0f}')} peak per device)"
  if "infer_ms" in r:
    extra = (f"inference {r['infer_ms']:.1f} ms for {r['batch']} images on one device "
             f"({r['infer_examples_per_s']:.1f}/s; compile {r['infer_compile_s']:.1f} s)")
  dpk = "n/a" if not r.get("device_peak_mb") else f"{r['device_peak_mb']:.0f}"
  estimate = "n/a"
  if r.get("compiled_need_mb") is not None:
    estimate = f"{r['compiled_need_mb']:.0f}"
    if r.get("compiled_flops") and r.get("peak_tflops"):
      estimate += f"; step >= {r['compiled_flops'] / (r['peak_tflops'] * 1e12) * 1e3:.3g} ms"
  return (f"| {name} | {what} | {r['batch']} | {r['compile_s']:.1f} | {r['step_ms']:.1f} | "
          f"**{r['examples_per_s']:.1f}** | {r['pipeline_batches_per_s']:.1f} ({r['headroom']:.1f}x) | {dpk} | "
          f"{estimate} | {extra} |")


def write(path: str, rows: dict, args, wall_s: float) -> str:
  import jax
  import jaxlib
  dev = jax.devices()[0]
  cmd = "python bench/accelerator.py" + (" --smoke" if args.smoke else "") + \
      (f" --only={args.only}" if args.only else "") + f" --budget_s={args.budget_s:g} --steps={args.steps}"
  lines = [f"# Accelerator figures{' (smoke: tiny sizes on ' + dev.platform + ', not a measurement)' if args.smoke else ''}",
           "",
           f"`{cmd}` on {jax.device_count()} x {dev.device_kind} ({dev.platform}), host "
           f"{platform.processor() or platform.machine()} x {os.cpu_count()} CPUs, jax {jax.__version__}, "
           f"jaxlib {jaxlib.__version__}, {time.strftime('%Y-%m-%d')}; {wall_s:.0f} s of the {args.budget_s:g} s "
           "budget. Step: median of the timed steps after the compile; pipeline: the grain iterator's "
           "batches/s and its headroom over the step rate (below 1x the devices wait for data).", "",
           "| family | stands for | global batch | compile (s) | step (ms) | examples/s | pipeline batches/s "
           "(headroom) | device peak (MB) | compiled estimate: needs (MB); roofline | more |",
           "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
  lines += [_row(n, r) for n, r in rows.items()]
  lines += ["", "Each row is one process: `python bench/accelerator.py --one=FAMILY` "
            f"{'--smoke ' if args.smoke else ''}measures it alone. MFU counts the model's FLOPs only "
            "(3 x 2 x forward multiply-accumulates per image, `jaxcnn.arithmetic`); the peak is the data "
            "sheet's dense figure for the precision (TF32 for float32 on NVIDIA GPUs). The compiled estimate "
            "is the train step's own executable's per-device memory (`memory_analysis`: arguments + outputs - "
            "donated + temporaries) beside the measured peak, and its FLOPs (`cost_analysis`) at the peak: a "
            "lower bound on the step, beside the measured step (jaxcnn/train/preflight.py; the same figures "
            "`--mode=compile` prints without the hardware).", ""]
  with open(path, "w") as f:
    f.write("\n".join(lines))
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--budget_s", type=float, default=480, help="wall-clock budget for the whole run (s)")
  p.add_argument("--smoke", action="store_true", help="tiny sizes, on whatever backend (CPU included)")
  p.add_argument("--only", default="", help="comma-separated families (default: all): " + ", ".join(FAMILIES))
  p.add_argument("--steps", type=int, default=0, help="timed steps per family (default 20; --smoke 2)")
  p.add_argument("--out", default="")
  p.add_argument("--one", help=argparse.SUPPRESS)
  p.add_argument("--tmp", help=argparse.SUPPRESS)
  a = p.parse_args()
  a.steps = a.steps or (2 if a.smoke else 20)
  if a.one:
    print("RESULT " + json.dumps(measure(a.one, a.smoke, a.steps, a.tmp)), flush=True)
    return
  names = [n for n in a.only.split(",") if n] or list(FAMILIES)
  unknown = [n for n in names if n not in FAMILIES]
  if unknown:
    sys.exit(f"error: unknown famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; choose from "
             + ", ".join(FAMILIES))
  import jax
  if jax.default_backend() == "cpu" and not a.smoke:
    sys.exit("error: " + _no_accelerator_message())
  out = a.out or os.path.join(ROOT, "bench", "accelerator_smoke.md" if a.smoke else "accelerator.md")
  start = time.monotonic()
  rows = {}
  env = dict(os.environ)
  if not a.smoke:
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # compile times are measured cold
  with tempfile.TemporaryDirectory() as tmp:
    for name in names:
      left = a.budget_s - (time.monotonic() - start)
      estimate = FAMILIES[name][2 if a.smoke else 1]
      if name == "scaling" and jax.local_device_count() < 2:
        rows[name] = {"skipped": "one device only"}
      elif name == "scaling" and "examples_per_s" not in rows.get("resnet50_f32", {}):
        rows[name] = {"skipped": "needs the resnet50_f32 row (its all-device half)"}
      elif left < estimate:
        rows[name] = {"skipped": f"no longer fits: {left:.0f} s of the budget left, about {estimate} s needed"}
      else:
        print(f"{name} ... ({left:.0f} s of the budget left)", flush=True)
        try:
          r = subprocess.run([sys.executable, __file__, f"--one={name}", f"--steps={a.steps}", f"--tmp={tmp}",
                              *(["--smoke"] if a.smoke else [])], env=env, capture_output=True, text=True,
                             cwd=ROOT, timeout=max(1.0, left))
          line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
          if r.returncode or line is None:
            errs = [ln for ln in r.stderr.splitlines() if ln and not ln.startswith((" ", "-", "For simplicity"))]
            last = (errs or ["no output"])[-1]
            rows[name] = {"skipped": f"failed (exit {r.returncode}): {last[:200]}"}
          else:
            rows[name] = json.loads(line[len("RESULT "):])
            if name == "scaling":
              rows[name] = scaling_of(rows[name], rows["resnet50_f32"])
        except subprocess.TimeoutExpired:
          rows[name] = {"skipped": f"stopped at the budget ({a.budget_s:g} s)"}
      print("  " + _row(name, rows[name]), flush=True)
  text = write(out, rows, a, time.monotonic() - start)
  print(text)
  print(f"wrote {out}")
  failed = [n for n, r in rows.items() if str(r.get("skipped", "")).startswith("failed")]
  if failed:
    sys.exit(f"error: {', '.join(failed)} failed (see the table)")


if __name__ == "__main__":
  from jaxcnn.backends.xla_cpu import host_memory  # as launch.py runs: huge pages for XLA:CPU's large buffers
  host_memory.reexec()
  import jaxcnn  # noqa: E402
  jaxcnn.setup_process()  # as launch.py: $JAXCNN_CPU_CONVOLUTIONS, NPROC, the CPU formulations' policy
  main()
