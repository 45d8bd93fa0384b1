"""What a program can be compiled for without the hardware: cloud TPU slices (the TPU compiler, libtpu,
installs from PyPI and compiles for any topology on a machine without a TPU), NVIDIA H100s (jax's CUDA
plugin compiles for XLA's description of the GPU) and this host's CPU.

    target = resolve("v5e:2x4")   # 8 x TPU v5e, one host; .devices: compile-only devices for a Mesh
    target = resolve("h100x8")    # 8 x H100, one host
    target = resolve("cpu")       # this machine's devices; memory: what the host has available

A TPU target is named `GENERATION:TOPOLOGY`, the chips along each axis of the slice, as Google Cloud
writes them (`v5e:2x4`, `v5e:4x4`, `v4:2x2x2`, `v5p:2x2x2`, `v6e:4x4`, `v3:4x4`). Its devices come from
`jax.experimental.topologies.get_topology_desc` (the way MaxText's `train_compile.py` and axlearn's
`run_aot_compilation.py` compile for TPU pods ahead of time): one per chip where JAX sees one per chip (v5e,
v6e, and v4 / v5p, whose two TensorCores JAX runs as one "megacore" device), one per TensorCore where it
sees two (v3). Hosts: v5e and v6e slices of 1 and 8 chips are one host (1x1, 2x4: the single-host
machines), larger ones four chips per host, as libtpu lays them out by default (MaxText's v5e-16 ..
v5e-256); v4 and v5p have four chips per host.

The chips' figures (`CHIPS`) are Google Cloud's published ones, each with its page: HBM per chip, HBM
bandwidth, peak bfloat16 FLOP/s. Peak float32 FLOP/s: XLA:TPU computes float32 convolutions and matmuls at
JAX's default precision in one bfloat16 pass with float32 accumulation (JAX's "Matmul precision" page,
https://docs.jax.dev/en/latest/201/precision.html), so a float32 program's roofline uses the same peak;
`precision=HIGHEST` (6 passes) would take about 6x longer. jaxcnn's convolutions use the default.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys

from jaxcnn.errors import ConfigError

GiB = 1 << 30


class TargetError(ConfigError):
  """A `--target` that names no known TPU topology or GPU (exit status 2)."""


class CompilerMissingError(ConfigError):
  """The target's compiler (libtpu, jax's CUDA plugin) is not installed (exit status 2, one line naming
  the package)."""


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU generation, per chip, from its Google Cloud page (`source`)."""
  generation: str           # the name in a target, "v5e"
  device_kind: str          # what `device.device_kind` says, "TPU v5 lite"
  hbm_bytes: int            # HBM per chip
  hbm_bandwidth: float      # bytes/s per chip
  bf16_flops: float         # peak FLOP/s per chip, bfloat16
  devices_per_chip: int     # JAX devices per chip (2 where each TensorCore is its own device)
  source: str
  options: tuple = ()       # get_topology_desc keyword arguments (v4: the megacore configuration)

  @property
  def name(self) -> str:
    return f"TPU {self.generation}"


CHIPS = {c.generation: c for c in (
    Chip("v3", "TPU v3", 32 * GiB, 900e9, 123e12, 2, "https://cloud.google.com/tpu/docs/v3"),
    Chip("v4", "TPU v4", 32 * GiB, 1200e9, 275e12, 1, "https://cloud.google.com/tpu/docs/v4",
         options=(("chip_config_name", "megacore"),)),
    Chip("v5e", "TPU v5 lite", 16 * GiB, 819e9, 197e12, 1, "https://cloud.google.com/tpu/docs/v5e"),
    Chip("v5p", "TPU v5", 95 * GiB, 2765e9, 459e12, 1, "https://cloud.google.com/tpu/docs/v5p"),
    Chip("v6e", "TPU v6 lite", 32 * GiB, 1638e9, 918e12, 1, "https://cloud.google.com/tpu/docs/v6e"),
)}
EXAMPLES = ("v5e:2x4", "v5e:4x4", "v4:2x2x2", "v5p:2x2x2", "v6e:4x4", "h100x8", "cpu")


@dataclasses.dataclass(frozen=True)
class Gpu:
  """One GPU model: what XLA:GPU compiles for (`target_config`, the device description a GPU would
  report) and its data-sheet figures (`source`)."""
  name: str                 # in a target: "h100" (h100x8 = 8 of them on one host)
  device_kind: str
  memory_bytes: int
  hbm_bandwidth: float      # bytes/s
  bf16_flops: float         # dense tensor-core peak FLOP/s
  tf32_flops: float         # float32 at JAX's default precision on GPUs: TF32 tensor cores
  source: str
  target_config: str        # xla's GpuTargetConfigProto, text format
  per_host: int = 8


# The device description is XLA's own for an H100 SXM (its GPU tests' "NVIDIA H100 80GB HBM3" spec, as
# a GPU reports it; runtime and cuDNN versions of jax's CUDA 13 plugin). Peaks: NVIDIA's H100 SXM data
# sheet gives BF16 1,979 and TF32 989 TFLOP/s with 2:4 sparsity, half that dense.
_H100_CONFIG = """gpu_device_info {
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132 fpus_per_core: 128
  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535
  memory_bandwidth: 3352320000000 l2_cache_size: 52428800 clock_rate_ghz: 1.98
  device_memory_size: 84929347584 shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 } registers_per_core_limit: 65536 registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 7 }
runtime_version { major: 13 minor: 0 patch: 0 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""
GPUS = {g.name: g for g in (
    Gpu("h100", "NVIDIA H100 80GB HBM3", 84_929_347_584, 3.35e12, 989.4e12, 494.7e12,
        "https://www.nvidia.com/en-us/data-center/h100/", _H100_CONFIG),
)}
# JAX preallocates this fraction of a GPU's memory for its allocator, and a program must fit in it
# (XLA_PYTHON_CLIENT_MEM_FRACTION changes it: https://docs.jax.dev/en/latest/gpu_memory_allocation.html).
GPU_MEMORY_FRACTION = 0.75


@dataclasses.dataclass
class Target:
  """What programs are compiled for: its devices and what one device has."""
  name: str                  # as the user wrote it
  platform: str              # "tpu" or "cpu"
  devices: list              # every device of the slice (compile-only for a TPU)
  num_hosts: int
  device_memory: int         # bytes one device may use
  hbm_bandwidth: float | None = None   # bytes/s per device
  peak_flops: float | None = None      # bfloat16 FLOP/s per device
  chip: Chip | None = None
  gpu: Gpu | None = None
  memory_note: str = ""      # what `device_memory` is
  memory_source: str = ""    # where the figure comes from

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  @property
  def devices_per_host(self) -> int:
    return self.num_devices // self.num_hosts

  def peak(self, precision: str) -> float | None:
    """Peak FLOP/s of one device for a program of `precision` (float32 at JAX's default precision runs
    as one bfloat16 pass on a TPU, on TF32 tensor cores on an NVIDIA GPU)."""
    if self.gpu is not None and precision == "float32":
      return self.gpu.tf32_flops
    return self.peak_flops

  def describe(self) -> str:
    if self.gpu is not None:
      return (f"{self.name}: {self.num_devices} x {self.gpu.device_kind}, {self.num_hosts} "
              f"host{'s' if self.num_hosts > 1 else ''}")
    if self.chip is None:
      return f"{self.name}: {self.num_devices} x {self.devices[0].device_kind if self.devices else 'cpu'} device(s)"
    per = "" if self.chip.devices_per_chip == 1 else f" ({self.chip.devices_per_chip} devices per chip)"
    return (f"{self.name}: {self.num_devices // self.chip.devices_per_chip} x {self.chip.name}{per}, "
            f"{self.num_hosts} host{'s' if self.num_hosts > 1 else ''}")


def table() -> list[str]:
  """The accelerators a program compiles for, per chip, with their figures and where each comes from."""
  rows = [("target", "chip", "memory", "HBM bandwidth", "peak bf16", "peak f32 as run", "source")]
  for c in CHIPS.values():
    shape = "AxBxC" if c.generation in ("v4", "v5p") else "AxB"
    per = f" ({c.devices_per_chip} devices)" if c.devices_per_chip > 1 else ""
    rows.append((f"{c.generation}:{shape}", c.name + per, f"{c.hbm_bytes / GiB:.0f} GiB", f"{c.hbm_bandwidth / 1e9:,.0f} GB/s",
                 f"{c.bf16_flops / 1e12:,.0f} TFLOP/s", "= bf16 (1 pass)", c.source))
  for g in GPUS.values():
    rows.append((f"{g.name}xN", g.device_kind, f"{g.memory_bytes / 1e9:.1f} GB ({GPU_MEMORY_FRACTION:.0%} usable)",
                 f"{g.hbm_bandwidth / 1e12:.2f} TB/s", f"{g.bf16_flops / 1e12:,.0f} TFLOP/s",
                 f"{g.tf32_flops / 1e12:,.0f} TFLOP/s (TF32)", g.source))
  rows.append(("cpu", "this machine's devices", "the host's available memory", "", "", "", ""))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  out = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
  out.append("float32 at JAX's default precision: one bfloat16 pass on a TPU, TF32 tensor cores on an NVIDIA GPU "
             "(https://docs.jax.dev/en/latest/201/precision.html).")
  return out


def known() -> str:
  """The target forms, for error messages."""
  return (f"GENERATION:TOPOLOGY with GENERATION one of {', '.join(CHIPS)} (e.g. {', '.join(EXAMPLES[:5])}), "
          f"{'/'.join(GPUS)}xN (N GPUs, 8 per host: {EXAMPLES[5]}), or cpu (this machine)")


def libtpu_version() -> str | None:
  try:
    from importlib.metadata import version
    return version("libtpu")
  except Exception:  # pylint: disable=broad-except
    return None


def install_line() -> str:
  import jax
  return f'pip install "jax[tpu]=={jax.__version__}"'


_SHAPE = re.compile(r"^(?P<gen>[a-z0-9]+):(?P<shape>\d+(x\d+){1,2})$")


def parse(name: str) -> tuple[Chip, tuple[int, ...]]:
  """`"v5e:2x4"` -> (the v5e chip, (2, 4)); a clear `TargetError` for anything else."""
  m = _SHAPE.match(name.strip().lower())
  if not m:
    raise TargetError(f"--target={name}: not a known target{_slice_hint(name)}. Use {known()}.")
  gen, shape = m.group("gen"), tuple(int(v) for v in m.group("shape").split("x"))
  if gen not in CHIPS:
    raise TargetError(f"--target={name}: unknown TPU generation {gen!r}. Use {known()}.")
  if any(v < 1 for v in shape):
    raise TargetError(f"--target={name}: every axis of the topology needs at least one chip")
  return CHIPS[gen], shape


# Google Cloud's accelerator types name a slice by its TensorCores (v4-16) or chips (v5litepod-8, v6e-8):
# their topologies, for the hint a mistaken --target=v5e-8 gets.
_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8", 512: "8x8x8"}


def _slice_hint(name: str) -> str:
  m = re.match(r"^(v\d[a-z]*?)(litepod)?-(\d+)$", name.strip().lower())
  if not m:
    return ""
  gen = "v5e" if m.group(2) or m.group(1) == "v5e" else m.group(1)
  n = int(m.group(3))
  if gen in ("v4", "v5p", "v3"):
    n //= 2  # these accelerator types count TensorCores, two per chip
  shape = (_3D if gen in ("v4", "v5p") else _2D).get(n)
  if gen not in CHIPS or shape is None:
    return f" ({name} is an accelerator type; give its topology, GENERATION:AxB[xC] chips)"
  return f" ({name} is an accelerator type: its topology is --target={gen}:{shape})"


def _host_bounds(chip: Chip, shape: tuple[int, ...]) -> tuple[int, int, int] | None:
  """libtpu's `chips_per_host_bounds` for slices whose hosts hold other than its default 2x2x1 chips."""
  chips = 1
  for v in shape:
    chips *= v
  if chip.generation in ("v5e", "v6e"):
    if chips == 1:
      return (1, 1, 1)
    if shape[:2] == (2, 4) and chips == 8:  # the 8-chip single-host machines (v5litepod-8, v6e-8)
      return (2, 4, 1)
  return None


def cuda_plugin_version() -> str | None:
  from importlib.metadata import PackageNotFoundError, version
  for name in ("jax-cuda13-plugin", "jax-cuda12-plugin"):
    try:
      return f"{name} {version(name)}"
    except PackageNotFoundError:
      continue
  return None


_GPU = re.compile(r"^(?P<gpu>[a-z]\d+)(x(?P<n>\d+))?$")


def gpu_target(name: str) -> Target:
  """N GPUs of one model (`h100x8`), compiled by jax's CUDA plugin for XLA's description of the GPU:
  no GPU needed (jax's `get_topology_desc(platform="cuda", target_config=..., topology=...)`)."""
  m = _GPU.match(name.strip().lower())
  gpu, n = GPUS[m.group("gpu")], int(m.group("n") or 1)
  hosts = 1 if n <= gpu.per_host else -(-n // gpu.per_host)
  if n < 1 or (hosts > 1 and n % gpu.per_host):
    raise TargetError(f"--target={name}: {n} GPUs: one host holds up to {gpu.per_host}; more must be a multiple "
                      f"of {gpu.per_host} (whole hosts)")
  if cuda_plugin_version() is None:
    import jax
    raise CompilerMissingError(f"--target={name} needs XLA's GPU compiler, which is not installed: "
                               f'pip install "jax[cuda13]=={jax.__version__}" (no GPU needed)')
  from jax.experimental import topologies
  try:
    desc = topologies.get_topology_desc(topology_name=name, platform="cuda", target_config=gpu.target_config,
                                        topology=f"1x{hosts}x{n // hosts}")
  except Exception as e:  # pylint: disable=broad-except
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise TargetError(f"--target={name}: jax's CUDA plugin cannot describe these GPUs ({first})") from None
  usable = int(gpu.memory_bytes * GPU_MEMORY_FRACTION)
  return Target(name=name, platform="cuda", devices=list(desc.devices), num_hosts=hosts, device_memory=usable,
                hbm_bandwidth=gpu.hbm_bandwidth, peak_flops=gpu.bf16_flops, gpu=gpu,
                memory_note=f"the {GPU_MEMORY_FRACTION:.0%} of its {gpu.memory_bytes / 1e9:.1f} GB that JAX's "
                            "allocator takes by default")


def resolve(name: str) -> Target:
  """The devices to compile for. TPU: needs libtpu; GPU: jax's CUDA plugin (`CompilerMissingError` says
  how to install either)."""
  if name.strip().lower() == "cpu":
    return cpu_target()
  m = _GPU.match(name.strip().lower())
  if m and m.group("gpu") in GPUS:
    return gpu_target(name)
  chip, shape = parse(name)
  if libtpu_version() is None:
    raise CompilerMissingError(f"--target={name} needs the TPU compiler, which is not installed: "
                               f"{install_line()} (libtpu, about 700 MB; no TPU needed)")
  from jax.experimental import topologies
  kwargs = dict(chip.options)
  bounds = _host_bounds(chip, shape)
  if bounds is not None:
    kwargs["chips_per_host_bounds"] = bounds
  topology = f"{chip.generation}:{'x'.join(map(str, shape))}"
  try:
    with quiet_stderr():
      desc = topologies.get_topology_desc(topology_name=topology, platform="tpu", **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "lockfile" in first:  # libtpu lets one process at a time load it, unless told otherwise
      raise TargetError(f"--target={name}: another process has loaded libtpu (its lock /tmp/libtpu_lockfile); "
                        "compiling needs no TPU, so let both load it: ALLOW_MULTIPLE_LIBTPU_LOAD=1 (launch.py "
                        "--mode=compile sets it)") from None
    raise TargetError(f"--target={name}: libtpu cannot lay out this slice ({first}). Use {known()}.") from None
  devices = list(desc.devices)
  hosts = len({d.process_index for d in devices})
  per_device = chip.devices_per_chip
  return Target(name=name, platform="tpu", devices=devices, num_hosts=hosts,
                device_memory=chip.hbm_bytes // per_device, hbm_bandwidth=chip.hbm_bandwidth / per_device,
                peak_flops=chip.bf16_flops / per_device, chip=chip,
                memory_note=f"{chip.hbm_bytes / GiB:.0f} GiB HBM per chip" +
                            (f", {per_device} devices per chip" if per_device > 1 else ""))


def host_memory_available() -> tuple[int | None, str]:
  """Bytes this process may still allocate on the host, and where the figure comes from: the kernel's
  MemAvailable, lowered to the cgroup's limit (a container) when that is smaller."""
  avail, source = None, ""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          avail, source = int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
  except OSError:
    pass
  if avail is None:
    try:
      avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
      source = "the host's physical memory"
    except (ValueError, OSError, AttributeError):
      return None, "unknown"
  for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                  "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
    try:
      with open(limit_file) as f:
        limit = f.read().strip()
      with open(usage_file) as f:
        usage = int(f.read().strip())
    except (OSError, ValueError):
      continue
    if limit.isdigit() and int(limit) - usage < avail:
      avail, source = int(limit) - usage, f"the container's memory limit ({limit_file})"
    break
  return avail, source


def cpu_target(devices=None) -> Target:
  """This machine: its JAX devices, which share the host's memory (each fake device of
  `--xla_force_host_platform_device_count` gets an equal share)."""
  import jax
  devices = list(devices if devices is not None else jax.devices())
  avail, source = host_memory_available()
  local = [d for d in devices if d.process_index == jax.process_index()]
  per = None if avail is None else avail // max(len(local), 1)
  return Target(name="cpu", platform=devices[0].platform, devices=devices,
                num_hosts=len({d.process_index for d in devices}), device_memory=per,
                memory_note=("unknown host memory" if avail is None else
                             f"{avail / 1e9:.1f} GB available on this host" +
                             (f", shared by {len(local)} devices" if len(local) > 1 else "")),
                memory_source=source)


class quiet_stderr:
  """Silences what libtpu writes on file descriptor 2 while it lays out a topology on a machine without
  a TPU (warnings that no TPU host is configured: true, and not the user's concern); replays it if the
  call fails."""

  def __enter__(self):
    import tempfile
    sys.stderr.flush()
    self._saved = os.dup(2)
    self._file = tempfile.TemporaryFile()
    os.dup2(self._file.fileno(), 2)
    return self

  def __exit__(self, exc_type, exc, tb):
    sys.stderr.flush()
    os.dup2(self._saved, 2)
    os.close(self._saved)
    if exc_type is not None:
      self._file.seek(0)
      sys.stderr.write(self._file.read().decode(errors="replace"))
    self._file.close()
    return False
