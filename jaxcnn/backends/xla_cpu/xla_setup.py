"""Which kernels run XLA:CPU's convolutions: YNNPACK (jaxlib's default) or Eigen (`eigen`).

jaxlib 0.10 hands every CPU convolution to a YNNPACK fusion (`__ynn_fusion` in the optimised HLO), and
that fusion runs on one thread: on 2 cores a ResNet 3x3 convolution (64 -> 64 maps, 56x56, batch 16)
took 44 ms with a process CPU time equal to its wall time, while XLA's dots used both cores. With
`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution` the same convolution goes to XLA's
multi-threaded Eigen kernel: 23-26 ms (PyTorch CPU: 22-25 ms). Only convolutions change: YNNPACK keeps the
dots, reductions and element-wise fusions. Results are the same convolutions to float rounding.

A whole train step is another matter: YNNPACK's one-thread convolutions run side by side with other
independent operations (a layer's input and weight gradients), so whole models gain less than single
convolutions, and some lose. Measured on 2 cores with huge pages (bench/README.md): U-Net roads
trains 1.64x faster with Eigen, ResNet-20, ResNet-50 and the ResNet for series (1.7x before huge
pages) within the noise, C3D and LeNet-5 1.6-1.7x slower.
So it is a per-experiment choice: each experiment config's `cpu_convolutions` names the kernels its
runs use (the one measured faster: "eigen" for U-Net roads and the ResNet for series, jaxlib's
"ynnpack" elsewhere), and the user overrides it (`choose`: the flag, else the environment, else the
config):

  python launch.py --config=experiments/unet_roads.py --cpu_convolutions=ynnpack
  JAXCNN_CPU_CONVOLUTIONS=eigen python my_script.py      # a program that calls jaxcnn.setup_process()

XLA reads its flags once, when JAX starts its backend, so the choice must come before any JAX
computation. `configure("eigen")` appends the flag to `XLA_FLAGS` unless the user set the flag
themselves (their value wins); it refuses, with the reason, when the backend has started already or
when jaxlib is not a version known to have the flag (0.10.x, 0.11.x: XLA aborts on an unknown flag).

Importing this module changes nothing. `jaxcnn.setup_process()` (and the command line) apply the choice
and record what the process has in `policy.Policy`, which `jaxcnn.conv.conv(impl="auto")` picks its CPU
formulation for (XLA's own convolution under Eigen; the reformulations of bench/README.md under YNNPACK).
"""
from __future__ import annotations

import os

from jaxcnn.backends.xla_cpu import policy as _policy
from jaxcnn.backends.xla_cpu.policy import KNOWN_JAXLIB

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
VALUE = "-individual_convolution"
ENV = "JAXCNN_CPU_CONVOLUTIONS"
KERNELS = ("ynnpack", "eigen")


class KernelsError(ValueError):
  """A CPU convolution kernels choice that cannot be honoured (the message says why and what to do)."""


def _jaxlib_version() -> tuple[int, int] | None:
  return _policy.installed_jaxlib()


def backends_started() -> bool:
  try:
    from jax._src import xla_bridge
    return bool(xla_bridge.backends_are_initialized())
  except Exception:  # noqa: BLE001 - private API moved: assume started, so nothing is changed
    return True


def configure(kernels: str, environ=None) -> bool:
  """Make XLA:CPU run convolutions with `kernels` ("ynnpack" or "eigen"); True if XLA_FLAGS changed.

  "ynnpack" is jaxlib's default and changes nothing. Raises KernelsError (a ValueError) for another
  name or when the flag cannot take effect (see the module docstring).
  """
  if kernels not in KERNELS:
    raise KernelsError(f"unknown CPU convolution kernels {kernels!r} (--cpu_convolutions / {ENV}): "
                       f"use one of {', '.join(KERNELS)}")
  environ = os.environ if environ is None else environ
  flags = environ.get("XLA_FLAGS", "")
  if kernels == "ynnpack" or FLAG in flags:
    return False
  version = _jaxlib_version()
  if version not in KNOWN_JAXLIB:
    raise KernelsError(f"cpu_convolutions='eigen' needs the XLA flag {FLAG}, known in jaxlib 0.10-0.11; "
                       f"this jaxlib is {version}: leave the default ('ynnpack')")
  if backends_started():
    raise KernelsError("cpu_convolutions='eigen' must be chosen before JAX starts its backend (XLA "
                       "reads its flags once): set JAXCNN_CPU_CONVOLUTIONS=eigen in the environment, or "
                       "call jaxcnn.backends.xla_cpu.xla_setup.configure('eigen') before the first JAX computation")
  environ["XLA_FLAGS"] = f"{flags} {FLAG}={VALUE}".strip()
  return True


INFERENCE_MODES = ("eval", "predict", "cam")


def config_choice(config, mode: str = "train") -> tuple[str | None, str]:
  """The experiment config's kernels for a `launch.py --mode`, and its key: `cpu_convolutions_inference`
  for the modes that run no training step (eval, predict, cam) where the config has one (the Mask R-CNN
  COCO configs: Eigen trains faster, YNNPACK infers faster), else `cpu_convolutions`."""
  if mode in INFERENCE_MODES and config.get("cpu_convolutions_inference"):
    return config.get("cpu_convolutions_inference"), "config.cpu_convolutions_inference"
  return config.get("cpu_convolutions"), "config.cpu_convolutions"


def choose(flag: str | None, config_value: str | None, environ=None,
           config_key: str = "config.cpu_convolutions") -> tuple[str | None, str]:
  """Which kernels a `launch.py` run asks for, and who asked, in this order: the `--cpu_convolutions`
  flag; else the user's environment (`JAXCNN_CPU_CONVOLUTIONS`, or the XLA flag in `XLA_FLAGS`); else the experiment config's choice (`config_key`,
  see `config_choice`: each experiment's measured choice); else jaxlib's default. Returns
  `(kernels or None, source)`.
  """
  environ = os.environ if environ is None else environ
  if flag is not None:
    return flag, "--cpu_convolutions"
  if ENV in environ:
    return environ[ENV], ENV
  if FLAG in environ.get("XLA_FLAGS", ""):
    return None, "the environment"
  if config_value:
    return config_value, config_key
  return None, "jaxlib's default"


def forced_host_devices(flags: str | None = None) -> int:
  """N of `--xla_force_host_platform_device_count=N` in `XLA_FLAGS` (the last one wins), else 1."""
  flags = os.environ.get("XLA_FLAGS", "") if flags is None else flags
  n = 1
  for item in flags.split():
    if item.startswith("--xla_force_host_platform_device_count="):
      try:
        n = int(item.split("=", 1)[1])
      except ValueError:
        pass
  return n


def spare_collective_threads(environ=None) -> str | None:
  """On CPU with N > 1 forced host devices, `NPROC=2N` unless the user set NPROC. Returns the value set.

  XLA:CPU runs a collective over N devices (pmap's psum, the gradients' all-reduce) as N tasks on its
  client thread pool, sized max(cores, N): exactly N threads on a small machine, and the same pool
  runs the client's other asynchronous work. With one of them busy elsewhere, N - 1 participants
  waited in the all-reduce, the last never started, and after 40 s XLA's rendezvous ended the process
  ("Termination timeout for `all reduce ...` ... only 7 of them arrived", then SIGABRT: 2 of 6 loaded
  test runs on 8 fake devices). XLA sizes its CPU thread pools from NPROC (`DefaultThreadPoolSize`),
  so 2N threads leave N free for the rest (16 loaded runs then passed). Only read when JAX creates its
  CPU client, so this must come before any JAX computation (`jaxcnn.setup_process`, the command line).
  """
  environ = os.environ if environ is None else environ
  n = forced_host_devices(environ.get("XLA_FLAGS", ""))
  if n <= 1 or environ.get("NPROC"):
    return None
  environ["NPROC"] = str(2 * n)
  return environ["NPROC"]


def cpu_kernels() -> str | None:
  """The kernels running this process's convolutions, "eigen" or "ynnpack", when JAX's backend is the
  CPU; None on a GPU/TPU (for the run's first lines, `--mode=eval` and reports)."""
  import jax
  if jax.default_backend() != "cpu":
    return None
  from jaxcnn.backends.xla_cpu import policy
  return policy.current().kernels


def eigen_convolutions(flags: str | None = None) -> bool:
  """Whether XLA:CPU runs convolutions with Eigen (multi-threaded), judged from `XLA_FLAGS`.

  The flag's value is either a list of signed items (`-individual_convolution`: YNNPACK off for
  convolutions) or an exact list of fusion types (convolutions go to YNNPACK only if it names
  `individual_convolution`). Without the flag, jaxlib's default (YNNPACK) is assumed.
  """
  flags = os.environ.get("XLA_FLAGS", "") if flags is None else flags
  value = None
  for item in flags.split():
    if item.startswith(FLAG + "="):
      value = item[len(FLAG) + 1:]  # the last one wins, as in XLA's parser
  if value is None:
    return False
  items = [v for v in value.split(",") if v]
  if any(v[0] in "+-" for v in items):
    return "-individual_convolution" in items
  return "individual_convolution" not in items
