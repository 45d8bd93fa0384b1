"""The choice of XLA:CPU's convolution kernels: YNNPACK (jaxlib's default) or Eigen's multi-threaded ones."""
import os
import subprocess
import sys

import pytest

from conftest import load_experiment
from test_cli import launch
import jaxcnn
from jaxcnn.backends.xla_cpu import xla_setup

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = """
import os, jax, jax.numpy as jnp
import jaxcnn
from jaxcnn.backends.xla_cpu import xla_setup
jaxcnn.setup_process()
from jaxcnn.conv import conv
x, w = jnp.ones((16, 56, 56, 64)), jnp.ones((3, 3, 64, 64))  # YNNPACK takes convolutions this big
hlo = jax.jit(lambda x, w: conv(x, w, impl="lax")).lower(x, w).compile().as_text()
dot = jax.jit(lambda a, b: a @ b).lower(jnp.ones((64, 64)), jnp.ones((64, 64))).compile().as_text()
print(os.environ.get("XLA_FLAGS", ""), "|", xla_setup.eigen_convolutions(),
      "|", "__ynn_fusion" in hlo, "|", "__ynn_fusion" in dot)
"""


@pytest.mark.skipif(xla_setup._jaxlib_version() not in xla_setup.KNOWN_JAXLIB,
                    reason=f"asserts how jaxlib 0.10-0.11's XLA:CPU hands convolutions to YNNPACK and what "
                           f"{xla_setup.FLAG} does; this jaxlib is {xla_setup._jaxlib_version()} "
                           "(on other jaxlibs the CPU backend steps aside: tests/test_imports.py)")
@pytest.mark.parametrize("kernels", ["ynnpack", "eigen"])
def test_the_environment_choice_reaches_the_compiled_convolution(kernels):
  """JAXCNN_CPU_CONVOLUTIONS=eigen applied by `jaxcnn.setup_process()`: the compiled convolution is XLA's own (Eigen),
  not a YNNPACK fusion, the user's other flags are kept, and dots stay YNNPACK's."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
         "JAXCNN_CPU_CONVOLUTIONS": kernels, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True,
                       text=True, check=True).stdout.strip().splitlines()[-1]
  flags, eigen, conv_ynn, dot_ynn = [v.strip() for v in out.split("|")]
  assert "--xla_force_host_platform_device_count=2" in flags.split()
  assert (f"{FLAG}=-individual_convolution" in flags.split()) == (kernels == "eigen")
  assert eigen == str(kernels == "eigen")
  assert conv_ynn == str(kernels == "ynnpack")  # jaxlib 0.10's default sends convolutions to YNNPACK
  assert dot_ynn == "True"


@pytest.mark.parametrize("environ,appended", [
    ({}, True),
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, True),
    ({"XLA_FLAGS": f"{FLAG}="}, False),  # the user's own value wins
    ({"XLA_FLAGS": f"{FLAG}=+individual_convolution"}, False),
])
def test_configure_appends_only_when_the_user_did_not_choose(environ, appended, monkeypatch):
  monkeypatch.setattr(xla_setup, "backends_started", lambda: False)
  monkeypatch.setattr(xla_setup, "_jaxlib_version", lambda: (0, 10))
  before = environ.get("XLA_FLAGS", "")
  assert xla_setup.configure("eigen", environ) is appended
  if appended:
    assert environ["XLA_FLAGS"].split() == before.split() + [f"{FLAG}=-individual_convolution"]
  else:
    assert environ.get("XLA_FLAGS", "") == before
  assert not xla_setup.configure("ynnpack", {})  # the default changes nothing


@pytest.mark.parametrize("started,version,message", [
    (True, (0, 10), "cpu_convolutions='eigen' must be chosen before JAX starts its backend"),
    (False, (0, 9), "known in jaxlib 0.10-0.11"),
    (False, (1, 0), "known in jaxlib 0.10-0.11"),
    (False, None, "known in jaxlib 0.10-0.11"),
])
def test_configure_refuses_when_the_flag_cannot_take_effect(started, version, message, monkeypatch):
  """A started backend has read its flags already; an unknown jaxlib may not know the flag (XLA aborts
  on unknown flags). Either way: a clear error, XLA_FLAGS untouched."""
  monkeypatch.setattr(xla_setup, "backends_started", lambda: started)
  monkeypatch.setattr(xla_setup, "_jaxlib_version", lambda: version)
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  with pytest.raises(ValueError, match=message):
    xla_setup.configure("eigen", environ)
  assert environ == {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def test_unknown_kernels_name_is_an_error():
  with pytest.raises(ValueError, match="unknown CPU convolution kernels 'onednn'.*ynnpack, eigen"):
    xla_setup.configure("onednn", {})
  with pytest.raises(ValueError, match="unknown CPU convolution kernels 'onednn'.*ynnpack, eigen"):
    jaxcnn.setup_process("onednn")


@pytest.mark.parametrize("flags,eigen", [
    ("", False),  # jaxlib's default: YNNPACK
    ("--xla_force_host_platform_device_count=8", False),
    (f"{FLAG}=-individual_convolution", True),
    (f"{FLAG}=-individual_dot,-individual_convolution", True),
    (f"{FLAG}=-individual_dot", False),
    (f"{FLAG}=+individual_convolution", False),
    (f"{FLAG}=", True),  # exact, empty list: no YNNPACK at all
    (f"{FLAG}=individual_dot,reduce", True),
    (f"{FLAG}=individual_convolution", False),
    (f"{FLAG}=-individual_convolution {FLAG}=individual_convolution", False),  # the last one wins
])
def test_eigen_convolutions_reads_the_flag_as_xla_does(flags, eigen):
  assert xla_setup.eigen_convolutions(flags) is eigen


def test_launch_with_an_unknown_environment_value_is_one_message_and_exit_2():
  r = launch(env={"JAXCNN_CPU_CONVOLUTIONS": "onednn"}, timeout=120)
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
  assert ("error: unknown CPU convolution kernels 'onednn' (--cpu_convolutions / "
          "JAXCNN_CPU_CONVOLUTIONS): use one of ynnpack, eigen") in r.stderr


@pytest.mark.parametrize("flag,config_value,environ,want", [
    ("eigen", "ynnpack", {xla_setup.ENV: "ynnpack"}, ("eigen", "--cpu_convolutions")),  # the flag first
    (None, "eigen", {xla_setup.ENV: "ynnpack"}, ("ynnpack", xla_setup.ENV)),  # then the user's environment
    (None, "eigen", {"XLA_FLAGS": f"{xla_setup.FLAG}=dot"}, (None, "the environment")),
    (None, "eigen", {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}, ("eigen", "config.cpu_convolutions")),
    (None, None, {}, (None, "jaxlib's default")),
])
def test_a_run_takes_the_flag_then_the_environment_then_the_experiment_config(flag, config_value, environ,
                                                                              want):
  assert xla_setup.choose(flag, config_value, environ) == want


@pytest.mark.parametrize("mode,want", [("train", ("eigen", "config.cpu_convolutions")),
                                       ("eval", ("ynnpack", "config.cpu_convolutions_inference")),
                                       ("predict", ("ynnpack", "config.cpu_convolutions_inference")),
                                       ("cam", ("ynnpack", "config.cpu_convolutions_inference"))])
def test_a_config_may_name_other_kernels_for_the_modes_that_do_not_train(mode, want):
  """experiments/mask_rcnn.py:coco_r50_fpn (bench/mask_rcnn.md): Eigen trains it faster, YNNPACK infers it
  faster; launch.py's --mode picks the key, the flag and the environment still come first."""
  config = load_experiment("mask_rcnn", "coco_r50_fpn")
  assert xla_setup.config_choice(config, mode) == want
  assert xla_setup.choose(None, want[0], {}, config_key=want[1]) == want
  assert xla_setup.choose("eigen", want[0], {}, config_key=want[1]) == ("eigen", "--cpu_convolutions")
  assert xla_setup.choose(None, want[0], {xla_setup.ENV: "eigen"}, config_key=want[1]) == ("eigen", xla_setup.ENV)
  # a config without the inference key: its one choice in every mode
  assert xla_setup.config_choice(load_experiment("mask_rcnn", "coco_r50_c4"), mode) == (
      "ynnpack", "config.cpu_convolutions")


@pytest.mark.parametrize("mode,eigen", [("train", True), ("eval", False), ("predict", False)])
def test_launch_gives_the_coco_fpn_run_its_modes_kernels(mode, eigen):
  """launch.py's process setup (before any JAX computation) with the COCO FPN config: XLA_FLAGS sends
  convolutions to Eigen for training only."""
  code = ("import os, sys; from absl import flags; from jaxcnn import cli; cli.define_flags(None); "
          f"flags.FLAGS(['launch.py', '--config=experiments/mask_rcnn.py:coco_r50_fpn', '--mode={mode}']); "
          "cli._setup_process(); from jaxcnn.backends.xla_cpu import xla_setup; "
          "print(xla_setup.eigen_convolutions())")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_setup.ENV)}
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
  assert r.returncode == 0 and r.stdout.split()[-1] == str(eigen), r.stdout + r.stderr


def test_experiments_pick_the_kernels_measured_faster_for_them():
  """bench/README.md: Eigen for U-Net roads (1.64x) and the ResNet for series (a tie); docs/detection.md:
  Eigen for training the nuclei and shapes (C4 and FPN) Mask R-CNNs; jaxlib's elsewhere."""
  assert load_experiment("unet_roads", "").cpu_convolutions == "eigen"
  assert load_experiment("fcn_ucr", "GunPoint,resnet").cpu_convolutions == "eigen"
  assert load_experiment("ucr_benchmark", "resnet").cpu_convolutions == "eigen"
  assert load_experiment("fcn_ucr", "GunPoint").cpu_convolutions == "ynnpack"
  assert load_experiment("ucr_benchmark", "tcn").cpu_convolutions == "ynnpack"
  assert load_experiment("resnet_imagenet", "").cpu_convolutions == "ynnpack"
  assert load_experiment("mask_rcnn", "nuclei").cpu_convolutions == "eigen"
  assert load_experiment("mask_rcnn", "shapes").cpu_convolutions == "eigen"
  assert load_experiment("mask_rcnn", "shapes,fpn").cpu_convolutions == "eigen"


def test_forced_host_devices_get_threads_to_spare_for_their_collectives():
  env = {"XLA_FLAGS": "--xla_cpu_x=1 --xla_force_host_platform_device_count=8"}
  assert xla_setup.spare_collective_threads(env) == "16" and env["NPROC"] == "16"
  mine = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "NPROC": "9"}
  assert xla_setup.spare_collective_threads(mine) is None and mine["NPROC"] == "9"  # the user's value
  one = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  assert xla_setup.spare_collective_threads(one) is None and "NPROC" not in one
  assert os.environ["NPROC"] == "16"  # this test process: conftest's 8 devices, through jaxcnn.setup_process()
