"""Every experiment's programs compiled for cloud TPU slices, without a TPU: bench/tpu_compile.md.

    pip install "jax[tpu]==$(python -c 'import jax; print(jax.__version__)')"   # libtpu, ~700 MB
    python bench/tpu_compile.py                      # every row on v5e:2x4 and v5e:4x4 (hours on 2 cores)
    python bench/tpu_compile.py --rows=resnet50 --targets=v5e:2x4
    python bench/tpu_compile.py --table              # rewrite the table from bench/tpu_compile.json only

Each row is `python launch.py --config=... --mode=compile --target=...` run through its Python face
(`jaxcnn.train.preflight.compile_run`) in a child process of its own (a compile that fails or runs out
of memory costs only its row); results accumulate in bench/tpu_compile.json, so an interrupted run
resumes where it stopped, and the table is written from it. Every figure is the TPU compiler's estimate
(memory_analysis, cost_analysis) or a bound derived from it; the compile times are measured on the
machine that ran this script (its CPU is named in the table's header).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JSON = os.path.join(ROOT, "bench", "tpu_compile.json")
MD = os.path.join(ROOT, "bench", "tpu_compile.md")

# (name, experiment config, --config overrides); every config at the paper's batch size (its default).
ROWS = [
    ("fcn", "fcn_ucr.py:GunPoint", {}),
    ("resnet_ts", "fcn_ucr.py:GunPoint,resnet", {}),
    ("inceptiontime", "fcn_ucr.py:GunPoint,inceptiontime", {}),
    ("tcn", "fcn_ucr.py:GunPoint,tcn", {}),
    ("lenet5", "lenet_mnist.py", {}),
    ("cifar_resnet20", "resnet_cifar.py:resnet20", {}),
    ("cifar_resnet110", "resnet_cifar.py:resnet110", {}),
    ("alexnet", "imagenet.py:alexnet", {}),
    ("vgg16", "imagenet.py:vgg16", {}),
    ("googlenet_bn", "imagenet.py:googlenet_bn", {}),
    ("resnet50", "imagenet.py:resnet50", {}),
    ("resnet50_bf16", "imagenet.py:resnet50", {"precision": "bfloat16"}),
    ("resnet50_pmap", "imagenet.py:resnet50", {"parallel": "pmap"}),
    ("resnet50_pmap_bf16", "imagenet.py:resnet50", {"parallel": "pmap", "precision": "bfloat16"}),
    ("efficientnet_lite0", "imagenet.py:efficientnet_lite0", {}),
    ("finetune_lite0", "finetune_mnist.py:pretrained", {}),
    ("c3d", "c3d_moving_shapes.py", {}),
    ("char_cnn_small", "char_cnn.py:ag_news", {}),
    ("char_cnn_large", "char_cnn.py:ag_news,large", {}),
    ("unet_roads", "unet_roads.py", {}),
    ("unet_massachusetts", "unet_roads.py:massachusetts", {}),
    ("mask_rcnn_shapes_c4", "mask_rcnn.py:shapes", {}),
    ("mask_rcnn_shapes_fpn", "mask_rcnn.py:shapes,fpn", {}),
    ("mask_rcnn_nuclei", "mask_rcnn.py:nuclei", {}),
    ("mask_rcnn_coco_r50_fpn", "mask_rcnn.py:coco_r50_fpn", {}),
    ("mask_rcnn_coco_r50_fpn_bf16", "mask_rcnn.py:coco_r50_fpn", {"precision": "bfloat16"}),
    ("mask_rcnn_coco_r50_fpn_pmap", "mask_rcnn.py:coco_r50_fpn", {"parallel": "pmap"}),
    ("mask_rcnn_coco_r50_fpn_pmap_bf16", "mask_rcnn.py:coco_r50_fpn", {"parallel": "pmap", "precision": "bfloat16"}),
]
TARGETS = ("v5e:2x4", "v5e:4x4", "h100x8")
# What the table's compile times are worth (said in its header): the last run's conditions.
TIMING_NOTE = ("This run shared the two cores with other compiles and tests for most rows, so its compile "
               "times run up to several times longer than alone (CIFAR ResNet-110's train step: 491 s here, 57 s "
               "alone); docs/multiple_devices.md has compile times measured alone.")


def command(config: str, overrides: dict, target: str) -> str:
  extra = "".join(f" --config.{k}={v}" for k, v in overrides.items())
  return f"python launch.py --config=experiments/{config}{extra} --mode=compile --target={target}"


def run_one(name: str, target: str, out: str) -> None:
  """Child process: one row on one target, its report as JSON in `out`."""
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # libtpu's one-process lock: no TPU is used
  sys.path.insert(0, ROOT)
  import importlib.util

  from jaxcnn import targets
  from jaxcnn.train import preflight
  _, config_spec, overrides = next(r for r in ROWS if r[0] == name)
  path, _, arg = config_spec.partition(":")
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, "experiments", path))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  config = mod.get_config(arg) if arg else mod.get_config()
  for k, v in overrides.items():
    node = config
    *parents, leaf = k.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = v
  report = preflight.compile_run(config, targets.resolve(target), progress=lambda m: print(m, flush=True))
  print("\n".join(preflight.format_report(report)), flush=True)
  t = report.target
  rows = []
  for p in report.programs:
    bound = report.roofline(p)
    rows.append(dict(program=p.name, batch_per_device=p.batch_per_device, need=p.need_bytes,
                     args=p.argument_bytes, temps=p.temp_bytes, flops=p.flops, arith=p.arithmetic_flops,
                     bytes=p.bytes_accessed, bound_s=bound[0] if bound else None,
                     bound_by=bound[1] if bound else None, compile_s=p.lower_seconds + p.compile_seconds,
                     lower_s=p.lower_seconds, xla_s=p.compile_seconds,
                     largest=report.largest.get(p.name)))
  with open(out, "w") as f:
    json.dump(dict(name=name, target=target, devices=t.num_devices, hosts=t.num_hosts, memory=t.device_memory,
                   params=report.num_params, parallel=report.parallel, precision=report.precision,
                   global_batch=report.global_batch, eval_batch=report.eval_batch, data=report.data,
                   fits=report.fits, programs=rows, verdict=preflight.verdict(report)), f, indent=1)


def _gb(b):
  return f"{b / 1e9:.2f} GB" if b >= 1e8 else f"{b / 1e6:.1f} MB"


def _cpu() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()


def table(results: dict) -> str:
  import jax
  from jaxcnn import targets
  lines = [
      "# Every experiment compiled for cloud TPUs and 8 x H100, without a TPU or a GPU",
      "",
      f"`python bench/tpu_compile.py` on {_cpu()} ({os.cpu_count()} cores), jax {jax.__version__}, libtpu "
      f"{targets.libtpu_version()}, {targets.cuda_plugin_version()}; {time.strftime('%Y-%m-%d')}. Each row is "
      "the command in its first column (`--mode=compile`, docs/multiple_devices.md), at the experiment's own "
      "(the paper's) global batch, spread over the target's devices. Memory, FLOPs and bytes are the compilers' "
      "estimates for one device (`memory_analysis`, `cost_analysis`), **not measurements**: nothing here ran "
      "on a TPU or a GPU. Step time: FLOPs / peak FLOP/s is a hard lower bound; bytes accessed / HBM bandwidth "
      "counts every fused kernel's operands and results as HBM traffic (the compiler's count, which kernels "
      "keeping tiles on chip can beat), so the roofline (the larger) is a bound as far as that count holds. "
      "FLOPs in brackets: the compiler's count over 2 x the multiply-accumulates "
      "`jaxcnn.arithmetic` counts in the same step. Compile times are measured here: the train step + the "
      "eval step (or the detector's predict program), lowering included, one process per row. " + TIMING_NOTE,
      ""]
  for target in TARGETS:
    rows = [(n, c, o, results.get(f"{n}@{target}")) for n, c, o in ROWS]
    rows = [r for r in rows if r[3] is not None]
    if not rows:
      continue
    first = next((r[3] for r in rows if "error" not in r[3]), None)
    if target.startswith("h100"):
      g = targets.GPUS["h100"]
      usable = g.memory_bytes * targets.GPU_MEMORY_FRACTION / 1e9
      head = (f"## {target}: 8 x {g.device_kind}, one host\n\nPer GPU: {g.memory_bytes / 1e9:.1f} GB, of which "
              f"JAX's allocator takes {targets.GPU_MEMORY_FRACTION:.0%} ({usable:.1f} GB) "
              f"by default; {g.bf16_flops / 1e12:.0f} TFLOP/s bfloat16, {g.tf32_flops / 1e12:.0f} TF32 (float32), "
              f"{g.hbm_bandwidth / 1e12:.2f} TB/s ({g.source}). XLA:GPU's ahead-of-time executables count no FLOPs or "
              "bytes, so the bound is `jaxcnn.arithmetic`'s FLOPs at the peak (compute only).")
    else:
      c = targets.CHIPS[target.split(":")[0]]
      hosts = first["hosts"] if first else "?"
      head = (f"## {target}: {first['devices'] if first else '?'} x TPU {c.generation}, {hosts} "
              f"host{'s' if hosts != 1 else ''}\n\nPer chip: {c.hbm_bytes / targets.GiB:.0f} GiB HBM, "
              f"{c.hbm_bandwidth / 1e9:.0f} GB/s, {c.bf16_flops / 1e12:.0f} TFLOP/s bfloat16 (float32 at JAX's default "
              f"precision: one bfloat16 pass) ({c.source}).")
    lines += [head, "",
              "| command | parallel, precision | global batch (per device) | train step needs | eval / predict needs | "
              "fits | train FLOPs / device | train step: FLOPs / peak, bytes / bandwidth | compile s |",
              "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for name, config, overrides, r in rows:
      cmd = command(config, overrides, target)
      if "error" in r:
        lines.append(f"| `{cmd}` | | | | | **failed**: {r['error']} | | | |")
        continue
      tr, ev = r["programs"][0], r["programs"][1]
      flops = f"{(tr.get('flops') or tr.get('arith') or 0):.3g}"
      flops += f" ({tr['flops'] / tr['arith']:.2f})" if tr.get("flops") and tr.get("arith") else " (arithmetic's)"
      if target.startswith("h100"):
        g = targets.GPUS["h100"]
        peak, bandwidth = (g.tf32_flops if r["precision"] == "float32" else g.bf16_flops), g.hbm_bandwidth
      else:
        c = targets.CHIPS[target.split(":")[0]]
        peak, bandwidth = c.bf16_flops / c.devices_per_chip, c.hbm_bandwidth / c.devices_per_chip
      compute = (tr.get("flops") or tr.get("arith") or 0) / peak
      bound = f"{compute * 1e3:.3g} ms"
      if tr.get("bytes"):
        memory = tr["bytes"] / bandwidth
        bound += f", {memory * 1e3:.3g} ms" + (" (memory-bound)" if memory > compute else "")
      fits = "yes" if r["fits"] else "**no**: " + " ".join(r["verdict"])
      pct = lambda b: f" ({100 * b / r['memory']:.0f} %)" if r.get("memory") else ""  # noqa: E731
      lines.append(
          f"| `{cmd}` | {r['parallel']}, {r['precision']} | {r['global_batch']} ({tr['batch_per_device']}) | "
          f"{_gb(tr['need'])}{pct(tr['need'])} | {_gb(ev['need'])} ({ev['program']}) | {fits} | {flops} | "
          f"{bound} | {tr['compile_s']:.0f} + {ev['compile_s']:.0f} |")
    lines.append("")
  return "\n".join(lines)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--rows", default="", help="comma-separated row names (default: all)")
  ap.add_argument("--targets", default=",".join(TARGETS))
  ap.add_argument("--timeout", type=int, default=3600, help="seconds per row and target")
  ap.add_argument("--redo", action="store_true", help="compile rows already in bench/tpu_compile.json again")
  ap.add_argument("--table", action="store_true", help="only rewrite bench/tpu_compile.md from the JSON")
  ap.add_argument("--json", default=JSON, help="where the results accumulate (default: bench/tpu_compile.json)")
  ap.add_argument("--one", nargs=3, metavar=("NAME", "TARGET", "OUT"), help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.one:
    run_one(*args.one)
    return
  sys.path.insert(0, ROOT)
  from jaxcnn import targets
  wanted = args.targets.split(",")
  missing = {t: 'pip install -e ".[tpu]"' if not t.startswith("h100") else 'pip install -e ".[cuda]"'
             for t in wanted if (targets.cuda_plugin_version() if t.startswith("h100") else targets.libtpu_version()) is None}
  if missing and not args.table:
    for t, line in missing.items():
      print(f"{t}: its compiler is not installed ({line}); skipped", flush=True)
    wanted = [t for t in wanted if t not in missing]
    if not wanted:
      sys.exit(2)
  results = json.load(open(args.json)) if os.path.isfile(args.json) else {}
  names = [r[0] for r in ROWS if not args.rows or r[0] in args.rows.split(",")]
  if not args.table:
    for name in names:
      for target in wanted:
        key = f"{name}@{target}"
        if key in results and not args.redo and "error" not in results[key]:
          continue
        out = os.path.join(ROOT, "bench", f".tpu_compile_{name}_{target.replace(':', '_')}.json")
        print(f"== {key}", flush=True)
        t0 = time.time()
        try:
          proc = subprocess.run([sys.executable, __file__, "--one", name, target, out], timeout=args.timeout,
                                capture_output=True, text=True)
          if proc.returncode == 0 and os.path.isfile(out):
            results[key] = json.load(open(out))
            os.remove(out)
          else:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            results[key] = {"error": f"exit {proc.returncode}: {tail[0][:200]}"}
          print(proc.stdout[-3000:], flush=True)
        except subprocess.TimeoutExpired:
          results[key] = {"error": f"compile did not end within {args.timeout} s"}
        print(f"   {time.time() - t0:.0f} s", flush=True)
        with open(args.json, "w") as f:
          json.dump(results, f, indent=1)
  with open(MD, "w") as f:
    f.write(table(results))
  print(f"Wrote {MD}")


if __name__ == "__main__":
  main()
