"""A run's programs compiled ahead of time for a target, without data and without its hardware: what
`--mode=compile --target=...` prints, and the memory check a training run makes before its first step.

    python launch.py --config=experiments/resnet_imagenet.py:resnet50,synthetic --mode=compile --target=v5e:4x4

The programs are built exactly as `--mode=train` builds them (`jaxcnn.train.runtime.build_steps`: the same
config, parallel mode, precision, optimizer and global batch spread over the target's devices), from the
data set's `DataSpec` (the shapes of one example, read from no data), lowered for the target's devices
with `jax.jit(...).lower(<shapes>)` / `jax.pmap(...).lower(...)` and compiled by the target's compiler.
For each program (the train step; the eval step, or the detector's predict program for tasks evaluated on
the host) the compiled executable's own `memory_analysis()` gives the bytes per device (arguments,
outputs, temporaries, the state's buffers donated to the output) and `cost_analysis()` its FLOPs and
bytes accessed, which are compared with `jaxcnn.arithmetic`'s count (2 x the multiply-accumulates of
the same step traced with XLA's own convolutions) and turned into a roofline bound on the step time
(FLOPs / peak FLOP/s, a hard lower bound, and bytes accessed / HBM bandwidth, the compiler's count of the
traffic; the larger). All of it is the compiler's estimate, never a measurement.

A program that does not fit gets the largest batch per device that does, found by compiling: the
memory of two batch sizes gives a line (temporaries grow with the batch), its crossing with the device's
memory a candidate, and compiling the candidate and the next size up confirms it (bisection when the
line was wrong).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax

from jaxcnn import registry, targets
from jaxcnn.errors import ConfigError

GB = 1e9
DOES_NOT_FIT = 3  # the exit status of a run or a --mode=compile whose programs do not fit


class DoesNotFitError(ConfigError):
  """A program needs more memory than the target's device has (exit status 3)."""


@dataclasses.dataclass
class ProgramStats:
  """One compiled program on one device, as the compiler reports it."""
  name: str                    # "train step", "eval step", "predict"
  batch_per_device: int
  argument_bytes: int
  output_bytes: int
  alias_bytes: int             # outputs written into donated arguments (the train state)
  temp_bytes: int
  code_bytes: int
  flops: float | None          # per device per call (cost_analysis)
  bytes_accessed: float | None
  arithmetic_flops: float | None  # 2 x jaxcnn.arithmetic's MACs of the same call, per device
  lower_seconds: float
  compile_seconds: float

  @property
  def need_bytes(self) -> int:
    """What the program holds at its peak: arguments, outputs not written into donated arguments,
    temporaries and its code."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes


@dataclasses.dataclass
class Report:
  """Everything `--mode=compile` prints (and `bench/tpu_compile.py` tabulates)."""
  experiment: str
  target: targets.Target
  model: str
  num_params: int
  parallel: str
  precision: str
  global_batch: int
  eval_batch: int
  data: str
  programs: list[ProgramStats]
  largest: dict[str, int | None] = dataclasses.field(default_factory=dict)  # program -> batch per device
  searched: dict[str, int] = dataclasses.field(default_factory=dict)        # program -> compiles spent

  @property
  def fits(self) -> bool:
    mem = self.target.device_memory
    return mem is None or all(p.need_bytes <= mem for p in self.programs)

  def roofline(self, p: ProgramStats) -> tuple[float, str] | None:
    """`(seconds, what bounds it)`: the larger of FLOPs / peak and bytes accessed / HBM bandwidth. Where
    the compiler counts no FLOPs (XLA:GPU's ahead-of-time executables), jaxcnn.arithmetic's count and
    the compute bound alone."""
    t = self.target
    peak = t.peak(self.precision)
    flops = p.flops or p.arithmetic_flops
    if peak is None or not flops:
      return None
    compute = flops / peak
    if not p.flops:
      return compute, "compute, arithmetic's FLOPs"
    memory = (p.bytes_accessed or 0.0) / t.hbm_bandwidth if t.hbm_bandwidth else 0.0
    return (compute, "compute") if compute >= memory else (memory, "HBM bandwidth")


# ------------------------------------------------------------------------------------------ building
@dataclasses.dataclass
class Programs:
  """The run's steps built for a target from the config and the data set's spec."""
  config: Any
  spec: Any                   # jaxcnn.data.base.DataSpec
  steps: Any                  # jaxcnn.train.runtime.Steps
  task: Any
  init_model: Any

  def names(self) -> list[str]:
    return ["train step", "predict" if self.task.host_eval else "eval step"]

  def call(self, name: str, rows: int):
    """`(function, state shapes, batch shapes)` of the program `name` for a global batch of `rows` rows:
    the jitted / pmapped function the run calls, and what it is called with."""
    par = self.steps.par
    state = par.state_spec(self.steps.abstract_state)
    if name == "train step":
      return par.step_fn("train"), state, par.batch_spec(self.spec.train, rows)
    batch = par.batch_spec(self.spec.eval, rows)
    if name == "predict":
      return par.step_fn("predict", self.task.predict_body(self.init_model)), state, batch
    return par.step_fn("eval"), state, batch

  def lowered(self, name: str, rows: int):
    """The program lowered for the target's devices."""
    fn, state, batch = self.call(name, rows)
    return fn.lower(state, batch)

  def macs(self, name: str, rows: int) -> int:
    """jaxcnn.arithmetic's multiply-accumulates of the program per device (XLA's own convolutions)."""
    from jaxcnn.arithmetic import program_macs
    return program_macs(*self.call(name, rows))

  def rows(self, name: str) -> int:
    return self.steps.rows_per_step if name == "train step" else self.steps.eval_batch_size


def build_programs(config, spec, devices) -> Programs:
  """The steps `--mode=train` would build, on `devices` (a TPU slice's compile-only devices too)."""
  from jaxcnn.train.components import build_model_and_task, check_config
  from jaxcnn.train.runtime import build_steps
  if config.model.get("pretrained"):  # the programs' shapes are the same whatever the weights
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.model.pretrained = None
  check_config(config)
  spec = with_mixed_labels(config, spec)
  model, init_model, task = build_model_and_task(config, spec.num_classes, host_eval_ready=spec.host_eval_ready)
  batch = int(config.train.batch_size)
  num_train = spec.num_train or max(batch, 1)  # only the schedule's length depends on it, never a shape
  steps = build_steps(config, model, init_model, task, num_train, spec.example("eval"), devices)
  return Programs(config=config, spec=spec, steps=steps, task=task, init_model=init_model)


def with_mixed_labels(config, spec):
  """`spec` with the training batches' mixed targets (`soft_label`, jaxcnn.data.mixing) when the config
  mixes batches: the train step is compiled for the batches it gets."""
  from jaxcnn.data import mixing
  if mixing.mixer(config, spec.num_classes) is None:
    return spec
  import dataclasses
  return dataclasses.replace(spec, train={**spec.train, "soft_label": ((spec.num_classes,), "float32")})


def data_spec(config):
  """The config's data set, as shapes, read from no data (`DataSpec`)."""
  from jaxcnn.data.base import spec_for
  from jaxcnn.train.components import config_kwargs
  registry.load_all()
  return spec_for(config.dataset.name, **config_kwargs(config.dataset))


# ----------------------------------------------------------------------------------------- compiling
def _no_persistent_cache(device):
  """For devices of another platform than this process runs (a TPU slice, GPUs, compiled for from a
  CPU), JAX's persistent compilation cache is left alone: such an executable cannot be loaded here, so an
  entry would be written to no use and fail to read back (a warning each time)."""
  import contextlib
  if device.platform == jax.default_backend():
    return contextlib.nullcontext()
  from jax._src import config as jax_config  # the context manager behind jax_enable_compilation_cache
  state = getattr(jax_config, "enable_compilation_cache", None)
  return state(False) if callable(state) else contextlib.nullcontext()


def compile_program(programs: Programs, name: str, rows: int, *, count: bool = True) -> tuple[ProgramStats, Any]:
  """Lowers and compiles one program for `rows` global rows; returns its stats and the executable."""
  t0 = time.perf_counter()
  lowered = programs.lowered(name, rows)
  t1 = time.perf_counter()
  with _no_persistent_cache(programs.steps.par.devices[0]):
    compiled = lowered.compile()
  t2 = time.perf_counter()
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
  n = programs.steps.par.num_devices
  arith = 2.0 * programs.macs(name, rows) if count else None
  stats = ProgramStats(
      name=name, batch_per_device=rows // n, argument_bytes=int(mem.argument_size_in_bytes),
      output_bytes=int(mem.output_size_in_bytes), alias_bytes=int(mem.alias_size_in_bytes),
      temp_bytes=int(mem.temp_size_in_bytes), code_bytes=int(mem.generated_code_size_in_bytes),
      flops=float(cost["flops"]) if "flops" in cost else None,
      bytes_accessed=float(cost["bytes accessed"]) if "bytes accessed" in cost else None,
      arithmetic_flops=arith, lower_seconds=t1 - t0, compile_seconds=t2 - t1)
  return stats, compiled


def largest_batch(programs: Programs, name: str, first: ProgramStats, memory: int,
                  progress: Callable[[str], None] | None = None, max_compiles: int = 12) -> tuple[int | None, int]:
  """The largest batch per device whose program `name` fits in `memory` bytes, found by compiling (see
  the module docstring). Returns `(batch per device or None when even 1 does not fit, compiles spent)`."""
  n = programs.steps.par.num_devices
  need = {first.batch_per_device: first.need_bytes}
  spent = 0

  def measure(b: int) -> int:
    nonlocal spent
    if b not in need:
      if progress:
        progress(f"  compiling the {name} at {b} per device ...")
      need[b] = compile_program(programs, name, b * n, count=False)[0].need_bytes
      spent += 1
    return need[b]

  fits = lambda b: measure(b) <= memory  # noqa: E731
  hi = first.batch_per_device          # known not to fit
  lo = 0                               # known to fit (0: nothing known)
  if hi > 1:
    half = max(1, hi // 2)
    if fits(half):
      lo = half
    else:
      hi = half
  if hi == 1 and not fits(1):
    return None, spent
  # the line through the smallest and the largest size measured, need(b) ~ a + c b, gives the next guess
  while hi - lo > 1 and spent < max_compiles:
    (b0, m0), (b1, m1) = sorted(need.items())[:1] + sorted(need.items())[-1:]
    guess = None
    if b1 != b0 and m1 > m0:
      c = (m1 - m0) / (b1 - b0)
      guess = int((memory - (m0 - c * b0)) // c)
    if guess is None or not lo < guess < hi:
      guess = (lo + hi) // 2 if lo else max(1, hi // 2)
    if fits(guess):
      lo = guess
      if guess + 1 < hi and not fits(guess + 1):
        hi = guess + 1
    else:
      hi = guess
  if lo == 0:
    return None, spent
  return lo, spent


def compile_run(config, target: targets.Target, *, spec=None, search: bool = True,
                progress: Callable[[str], None] | None = None) -> Report:
  """Compiles the config's programs for `target` and reports them (`--mode=compile`)."""
  from jaxcnn.train.state import num_params
  spec = spec if spec is not None else data_spec(config)
  programs = build_programs(config, spec, target.devices)
  steps = programs.steps
  stats = []
  for name in programs.names():
    rows = programs.rows(name)
    if progress:
      progress(f"compiling the {name} ({rows // steps.par.num_devices} per device) for {target.name} ...")
    stats.append(compile_program(programs, name, rows)[0])
  report = Report(experiment=str(config.get("experiment", "")), target=target, model=config.model.name,
                  num_params=num_params(steps.abstract_state.params), parallel=steps.par.mode,
                  precision=config.get("precision", "float32"), global_batch=steps.batch_size,
                  eval_batch=steps.eval_batch_size,
                  data=f"{spec.name}" + (f" (not read: {spec.assumed})" if spec.assumed else ""),
                  programs=stats)
  if search and target.device_memory is not None:
    for p in stats:
      if p.need_bytes > target.device_memory:
        report.largest[p.name], report.searched[p.name] = largest_batch(
            programs, p.name, p, target.device_memory, progress)
  return report


# ------------------------------------------------------------------------------------------ printing
def _gb(b: float) -> str:
  if b >= 0.1 * GB:
    return f"{b / GB:.2f} GB"
  return f"{b / 1e6:.1f} MB" if b >= 0.1e6 else f"{b / 1e3:.0f} kB"


def _batch_key(name: str) -> str:
  return "batch_size" if name == "train step" else "eval_batch_size"


def verdict(report: Report) -> list[str]:
  """Fits / does not fit, by how much, and the batch that would fit."""
  mem, t = report.target.device_memory, report.target
  if mem is None:
    return ["Fits: unknown (this host's memory could not be read)."]
  lines = []
  per = "per chip" if t.platform == "tpu" and t.chip and t.chip.devices_per_chip == 1 else "per device"
  for p in report.programs:
    if p.need_bytes <= mem:
      continue
    line = (f"Does not fit: the {p.name} needs {_gb(p.need_bytes)} {per}, {_gb(p.need_bytes - mem)} more "
            f"than the {_gb(mem)} there is ({t.memory_note}).")
    best = report.largest.get(p.name)
    tries = report.searched.get(p.name, 0)
    if best is None:
      line += (" Even one example per device does not fit: use more devices, --config.precision=bfloat16, "
               "or a smaller model.")
    else:
      line += (f" The largest batch that fits is {best} per device ({best * t.num_devices} global: "
               f"--config.train.{_batch_key(p.name)}={best * t.num_devices}), found by compiling "
               f"{tries + 1} batch sizes.")
    lines.append(line)
  if not lines:
    used = max(p.need_bytes for p in report.programs)
    lines.append(f"Fits: every program fits in the {_gb(mem)} {per} ({t.memory_note}); the largest needs "
                 f"{_gb(used)} ({100 * used / mem:.0f} %).")
  return lines


def format_report(report: Report) -> list[str]:
  t = report.target
  import jax as _jax
  head = [f"{report.experiment or report.model}: {report.model} ({report.num_params:,} parameters), "
          f"parallel={report.parallel}, precision {report.precision}",
          f"target {t.describe()}; compiled " +
          (f"by libtpu {targets.libtpu_version()} (jax {_jax.__version__}) without the hardware"
           if t.platform == "tpu" else
           f"by XLA:GPU ({targets.cuda_plugin_version()}, jax {_jax.__version__}) without the hardware"
           if t.gpu is not None else f"by XLA:{t.platform.upper()} (jax {_jax.__version__}) for this machine"),
          f"data: {report.data}; global batch {report.global_batch} in {report.programs[0].batch_per_device} "
          f"per device, eval batch {report.eval_batch} in {report.eval_batch // t.num_devices} per device",
          "memory of one device: " + (f"{_gb(t.device_memory)} ({t.memory_note})" if t.device_memory else "unknown")]
  names = [p.name for p in report.programs]
  rows: list[tuple[str, list[str]]] = []
  mem = t.device_memory

  def row(label, fn):
    rows.append((label, [fn(p) for p in report.programs]))
  row("arguments", lambda p: _gb(p.argument_bytes))
  row("outputs", lambda p: _gb(p.output_bytes))
  row("  of which into donated arguments", lambda p: _gb(p.alias_bytes))
  row("temporaries", lambda p: _gb(p.temp_bytes))
  row("needs (args + outputs - donated + temps + code)",
      lambda p: _gb(p.need_bytes) + (f" ({100 * p.need_bytes / mem:.0f} %)" if mem else ""))
  row("fits", lambda p: "unknown" if not mem else "yes" if p.need_bytes <= mem else "NO")
  row("FLOPs per device (compiler)", lambda p: f"{p.flops:.3g}" if p.flops else "- (not counted)")
  row("FLOPs, jaxcnn.arithmetic (2 x MACs)",
      lambda p: f"{p.arithmetic_flops:.3g}" if p.arithmetic_flops else "-")
  row("  compiler / arithmetic",
      lambda p: f"{p.flops / p.arithmetic_flops:.2f}" if p.flops and p.arithmetic_flops else "-")
  row("bytes accessed per device (compiler)", lambda p: _gb(p.bytes_accessed) if p.bytes_accessed else "-")

  def term(p, which):
    peak = t.peak(report.precision)
    flops = p.flops or p.arithmetic_flops
    if which == "compute":
      return "-" if not (peak and flops) else f"{flops / peak * 1e3:.3g} ms"
    return "-" if not (p.bytes_accessed and t.hbm_bandwidth) else f"{p.bytes_accessed / t.hbm_bandwidth * 1e3:.3g} ms"

  def bound(p):
    r = report.roofline(p)
    return "-" if r is None else f">= {r[0] * 1e3:.3g} ms ({r[1]})"
  row("  FLOPs / peak FLOP/s", lambda p: term(p, "compute"))
  row("  bytes accessed / HBM bandwidth", lambda p: term(p, "memory"))
  row("step time, roofline bound (the larger)", bound)

  def rate(p):
    r = report.roofline(p)
    if r is None:
      return "-"
    return f"<= {p.batch_per_device * t.num_devices / r[0]:,.0f} examples/s"
  row("  so throughput, all devices", rate)
  row("compile time (lower + compile)", lambda p: f"{p.lower_seconds + p.compile_seconds:.1f} s")
  width = max(len(label) for label, _ in rows) + 2
  cols = [max(len(n), *(len(v[i]) for _, v in rows)) + 2 for i, n in enumerate(names)]
  out = head + ["", " " * width + "".join(n.rjust(c) for n, c in zip(names, cols))]
  out += [label.ljust(width) + "".join(v.rjust(c) for v, c in zip(vals, cols)) for label, vals in rows]
  if t.chip is not None:
    c = t.chip
    out.append("")
    out.append(f"{c.name} per chip: {c.hbm_bytes / targets.GiB:.0f} GiB HBM, {c.hbm_bandwidth / 1e9:,.0f} GB/s, "
               f"{c.bf16_flops / 1e12:,.0f} TFLOP/s bfloat16 ({c.source}); float32 convolutions run at the "
               "bfloat16 peak at JAX's default precision (one bfloat16 pass).")
  if t.gpu is not None:
    g = t.gpu
    out.append("")
    out.append(f"{g.device_kind}: {g.memory_bytes / 1e9:.1f} GB, {g.hbm_bandwidth / 1e12:.2f} TB/s, dense "
               f"{g.bf16_flops / 1e12:,.0f} TFLOP/s bfloat16 and {g.tf32_flops / 1e12:,.0f} TFLOP/s TF32 (float32 at "
               f"JAX's default precision) ({g.source}). XLA:GPU's ahead-of-time executables count no FLOPs "
               "or bytes: the bound is jaxcnn.arithmetic's FLOPs at the peak.")
  out.append("Every figure above is the compiler's estimate for one device (memory_analysis, cost_analysis), "
             "not a measurement. FLOPs / peak is a hard lower bound on the step time; bytes accessed / bandwidth "
             "takes the compiler's count of each fused kernel's operands and results as HBM traffic, which "
             "kernels that keep tiles on chip can beat, so the roofline bound holds as far as that count does.")
  return out + verdict(report)


def local_target(devices) -> targets.Target:
  """The run's own devices as a target: CPU devices share the host's available memory; a GPU or TPU
  device has what its runtime says it may allocate (`memory_stats()["bytes_limit"]`)."""
  devices = list(devices)
  if devices[0].platform == "cpu":
    return targets.cpu_target(devices)
  stats = devices[0].memory_stats() or {}
  limit = stats.get("bytes_limit")
  return targets.Target(name=devices[0].platform, platform=devices[0].platform, devices=devices,
                        num_hosts=len({d.process_index for d in devices}), device_memory=limit,
                        memory_note=(f"{devices[0].device_kind}: {limit / GB:.1f} GB its runtime may allocate"
                                     if limit else "unknown device memory"))


def check_run(rt, progress=None) -> tuple[targets.Target, list[ProgramStats]]:
  """A training run's preflight on its own devices, before its first step: compiles the train step and
  the eval step (not the host-evaluated predict program) for the run's shapes, checks each against the
  memory of a device (`local_target`), and hands the executables to the run's `Parallel`, so that
  nothing is compiled twice. A step that does not fit raises `DoesNotFitError`, naming the largest batch
  that fits, found by compiling, before any data is read for training."""
  target = local_target(rt.par.devices)
  programs = Programs(config=rt.config, spec=with_mixed_labels(rt.config, rt.c.dataset.spec()), steps=rt.steps,
                      task=rt.c.task, init_model=rt.c.init_model)
  out, executables = [], {}
  for name in programs.names():
    if name == "predict":
      continue
    stats, executables[name] = compile_program(programs, name, programs.rows(name), count=False)
    out.append(stats)
    if target.device_memory is not None and stats.need_bytes > target.device_memory:
      report = Report(experiment=str(rt.config.get("experiment", "")), target=target, model=rt.config.model.name,
                      num_params=0, parallel=rt.par.mode, precision=rt.config.get("precision", "float32"),
                      global_batch=rt.batch_size, eval_batch=rt.eval_batch_size, data=programs.spec.name,
                      programs=[stats])
      report.largest[name], report.searched[name] = largest_batch(programs, name, stats, target.device_memory,
                                                                  progress)
      raise DoesNotFitError(" ".join(verdict(report)) + " Nothing was trained.")
  train_batch = programs.steps.par.batch_spec(programs.spec.train, programs.rows("train step"))
  eval_batch = programs.steps.par.batch_spec(programs.spec.eval, programs.rows("eval step"))
  rt.par.use_compiled(train=executables.get("train step"), eval=executables.get("eval step"),
                      train_batch=train_batch, eval_batch=eval_batch)
  return target, out


def memory_line(target: targets.Target, stats: list[ProgramStats]) -> str:
  """The run header's line on what its compiled steps need of a device's memory."""
  parts = ", ".join(f"{p.name} {_gb(p.need_bytes)}" for p in stats)
  of = f" of {_gb(target.device_memory)} ({target.memory_note})" if target.device_memory else ""
  return f"memory per device (compiled estimate): {parts}{of}"
