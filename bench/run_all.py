"""Regenerates every benchmark result in bench/ in one command (one script after the other, so they do not
compete for the cores):

  python bench/run_all.py               # everything (about an hour on 2 CPU cores)
  python bench/run_all.py --skip=ucr_cost,conv_types

Each script writes its own result file (conv_types: its section of bench/README.md); this rewrites the
index table of bench/README.md with the date and machine of the run. The side-by-side PyTorch columns
need `pip install -e ".[bench]"`; without PyTorch those scripts say so and stop.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))

# (script, what it measures, where the result goes)
SCRIPTS = [
    ("conv_types", "every convolution type, forward and forward+backward: jaxcnn vs bare XLA vs PyTorch CPU",
     "below"),
    ("families", "every experiment family: compile time, steps/s, examples/s, input-pipeline rate and "
     "headroom, peak memory", "[families.md](families.md)"),
    ("train_step", "the FCN train step under `jit` and `pmap` at several batch sizes, and the input "
     "pipeline's rate", "[train_step.md](train_step.md)"),
    ("char_cnn", "char-CNN (small) training examples/s: jaxcnn vs PyTorch CPU, input pipeline rate",
     "[char_cnn.md](char_cnn.md)"),
    ("unet", "U-Net (roads default: depth 4, 16 maps, 256² crops, batch 8) forward and training-step "
     "images/s: jaxcnn vs PyTorch CPU, input pipeline rate", "[unet.md](unet.md), Eigen: [unet_eigen.md](unet_eigen.md)"),
    ("ucr_cost", "the full UCR/UEA benchmark's cost: each model's step and evaluation time on every shipped "
     "data set x epochs x seeds", "[ucr_cost.md](ucr_cost.md)"),
    ("mask_rcnn", "Mask R-CNN inference time per image (small at 128², ResNet-50-C4 and -FPN at the paper's "
     "800 x 1333) and the R50-FPN's inference and training step side by side with torchvision's (same "
     "image, weights and settings, runs alternated), host post-processing, compile time, peak memory",
     "[mask_rcnn.md](mask_rcnn.md)"),
    ("equivalence", "the zoo against torchvision (and EfficientNet-Lite0 against its PyTorch port): the "
     "largest difference of the logits for the same weights, per model", "[equivalence.md](equivalence.md)"),
    ("init_compile", "every zoo model's initialisation: compile time at XLA:CPU's default LLVM level and at "
     "level 1 (what runs use), and that both give the same parameters bit for bit",
     "[init_compile.md](init_compile.md)"),
    ("tpu_compile", "every experiment's train and eval programs compiled for TPU v5e slices (1 and 4 hosts) "
     "and 8 x H100 without them: memory per device, fits, FLOPs against the arithmetic, roofline, compile "
     "time (needs `.[tpu]` and `.[cuda]`; hours on 2 cores)", "[tpu_compile.md](tpu_compile.md)"),
]
BEGIN, END = "<!-- index:begin -->", "<!-- index:end -->"


def index_table(ran: dict[str, str]) -> str:
  lines = [BEGIN, "| script | what | results | last regenerated |", "|---|---|---|---|"]
  for name, what, result in SCRIPTS:
    lines.append(f"| `python bench/{name}.py` | {what} | {result} | {ran.get(name, 'not in this run')} |")
  return "\n".join(lines + [END])


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--skip", default="", help="comma-separated scripts not to run")
  a = p.parse_args()
  skip = set(filter(None, a.skip.split(",")))
  unknown = skip - {n for n, *_ in SCRIPTS}
  if unknown:
    sys.exit(f"--skip: unknown script(s) {sorted(unknown)}; choose from {', '.join(n for n, *_ in SCRIPTS)}")
  stamp = f"{datetime.date.today()}, {platform.processor() or platform.machine()} x {os.cpu_count()}"
  ran, failed = {}, []
  for name, *_ in SCRIPTS:
    if name in skip:
      continue
    print(f"== bench/{name}.py", flush=True)
    t = time.time()
    # conv_types, unet: one table per XLA:CPU convolution kernel (jaxcnn/backends/xla_cpu/xla_setup.py)
    envs = [{}, {"JAXCNN_CPU_CONVOLUTIONS": "eigen"}] if name in ("conv_types", "unet") else [{}]
    codes = [subprocess.run([sys.executable, os.path.join(BENCH, f"{name}.py")], cwd=os.path.dirname(BENCH),
                            env={**os.environ, **env}).returncode for env in envs]
    code = next((c for c in codes if c), 0)  # the first failure (a signal's code is negative)
    print(f"== bench/{name}.py: exit {code} in {time.time() - t:.0f} s", flush=True)
    if code == 0:
      ran[name] = stamp
    else:
      failed.append(name)
  path = os.path.join(BENCH, "README.md")
  text = open(path, encoding="utf-8").read()
  head, rest = text.split(BEGIN, 1)
  old = rest.split(END, 1)[0]
  previous = {}
  for line in old.splitlines()[2:]:
    cells = [c.strip() for c in line.strip("|").split("|")]
    if len(cells) == 4:
      previous[cells[0].strip("`").split("/")[-1].removesuffix(".py")] = cells[3]
  with open(path, "w", encoding="utf-8") as f:
    f.write(head + index_table({**previous, **ran}) + rest.split(END, 1)[1])
  print(f"rewrote the index of {path}" + (f"; failed: {', '.join(failed)}" if failed else ""))
  sys.exit(1 if failed else 0)


if __name__ == "__main__":
  main()
