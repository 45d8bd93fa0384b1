"""Compiling ahead of time for a target (jaxcnn/targets.py, jaxcnn/train/preflight.py): the formulation a
program holds follows the platform it is compiled for, `--mode=compile` compiles a run's steps for a
multi-host TPU slice without a TPU (memory and FLOPs against the arithmetic), and the preflight's exit
statuses: 0 fits, 3 does not fit (with the batch that would), 2 a bad target.

The TPU compiles need libtpu (`pip install "jax[tpu]==<jax version>"`, about 700 MB, which the README's
test command does not install): those tests skip where it is missing and say so; the others run
everywhere.
"""
import collections
import contextlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, load_experiment, subprocess_env
from jaxcnn import targets
from jaxcnn.conv import conv, conv_transpose, max_pool
from jaxcnn.backends.xla_cpu import policy
from jaxcnn.conv.nd import default_impl
from jaxcnn.train import preflight

needs_libtpu = pytest.mark.skipif(targets.libtpu_version() is None,
                                  reason="the TPU compiler is not installed (pip install \"jax[tpu]==<jax version>\")")


def _loss(p, x):
  """A 3x3 convolution (XLA:CPU takes it as 1D convolutions over gathered taps), non-overlapping max
  pooling (tiles) and a stride-2 transposed convolution (sub-pixel): each op with a CPU formulation."""
  y = conv(x, p["w1"], padding="SAME")
  y = max_pool(jax.nn.relu(y), 2)
  y = conv_transpose(y, p["w2"], stride=2, padding="SAME")
  return jnp.sum(y ** 2)


_P = {"w1": jnp.full((3, 3, 3, 8), 0.1), "w2": jnp.full((3, 3, 8, 4), 0.1)}
_X = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 3)), jnp.float32)


# The operations that tell formulations apart (a CPU formulation slices, pads, concatenates and
# reshapes around 1D convolutions; XLA's own is one convolution, reduce_window / select_and_scatter).
# Not counted: the single-branch `case` that `platform_dependent` leaves when lowering for one platform,
# and the zeros (`broadcast_in_dim`, `add`) its branch returns for the other branch's residuals, which
# XLA removes as dead code.
_OPS = ("convolution", "reduce_window", "select_and_scatter", "slice", "pad", "concatenate", "reshape",
        "transpose", "reduce", "dot_general", "gather", "scatter")


def _ops(text: str) -> collections.Counter:
  return collections.Counter(o for o in re.findall(r"stablehlo\.([a-z_]+)", text) if o in _OPS)


def _lowered(platform: str, impl: str | None = None) -> str:
  with default_impl(impl) if impl else contextlib.nullcontext():
    return jax.jit(jax.grad(_loss)).trace(_P, _X).lower(lowering_platforms=(platform,)).as_text()


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_a_program_lowered_for_an_accelerator_holds_xlas_own_operations(platform):
  # lowered on this CPU-only host for another platform: exactly the operations of impl="lax"
  got = _lowered(platform)
  assert _ops(got) == _ops(_lowered(platform, "lax"))
  assert _ops(got)["reduce_window"] and _ops(got)["select_and_scatter"]  # max pooling and its gradient
  assert "lhs_dilate" in got  # the transposed convolution as the zero-inserted form
  # the CPU program holds the XLA:CPU formulations, unless the backend steps aside on this jaxlib (then
  # it is impl="lax"'s, as JAX lowers it for the CPU)
  assert (_ops(_lowered("cpu")) != _ops(_lowered("cpu", "lax"))) == policy.current().known


def test_a_cpu_program_keeps_the_cpu_formulations_bit_for_bit():
  assert _ops(_lowered("cpu")) == _ops(_lowered("cpu", "xla_cpu"))  # the XLA:CPU choice, as before
  auto = jax.jit(jax.grad(_loss))
  with default_impl("xla_cpu"):
    before = jax.jit(jax.grad(_loss)).lower(_P, _X).compile()
  compiled = auto.lower(_P, _X).compile()
  strip = lambda t: collections.Counter(re.findall(r"= \S+ ([a-z][\w-]*)\(", t))  # noqa: E731
  assert strip(compiled.as_text()) == strip(before.as_text())
  a, b = compiled(_P, _X), before(_P, _X)
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


def test_the_targets_table_gives_each_figure_with_its_source():
  rows = targets.table()
  for name in (*targets.CHIPS, *targets.GPUS):
    row = next(r for r in rows if r.startswith(name))
    assert re.search(r"https://\S+", row) and "TFLOP/s" in row and ("GiB" in row or "GB" in row), row


def test_unknown_targets_and_a_missing_compiler_give_one_clear_line(monkeypatch):
  for bad, words in (("v9:2x2", "unknown TPU generation 'v9'"), ("tpu", "not a known target"),
                     ("v5e-8", "v5e-8 is an accelerator type: its topology is --target=v5e:2x4"),
                     ("v4-16", "its topology is --target=v4:2x2x2")):
    with pytest.raises(targets.TargetError, match=re.escape(words)) as e:
      targets.resolve(bad)
    assert "v5e:2x4" in str(e.value) and "\n" not in str(e.value)
  monkeypatch.setattr(targets, "libtpu_version", lambda: None)
  with pytest.raises(targets.CompilerMissingError, match=re.escape(f'pip install "jax[tpu]=={jax.__version__}"')) as e:
    targets.resolve("v5e:2x4")
  assert str(e.value).startswith("--target=v5e:2x4 needs the TPU compiler, which is not installed")


@needs_libtpu
@pytest.mark.parametrize("name,devices,hosts", [("v3:2x2", 8, 1), ("v4:2x2x2", 8, 2), ("v5e:2x4", 8, 1),
                                                ("v5e:4x4", 16, 4), ("v5p:2x2x1", 4, 1), ("v6e:2x4", 8, 1)])
def test_each_generation_lays_out_its_slice_as_google_cloud_does(name, devices, hosts):
  t = targets.resolve(name)
  assert (t.num_devices, t.num_hosts) == (devices, hosts)
  assert {d.device_kind for d in t.devices} == {t.chip.device_kind}  # the chip table's row is the compiler's
  assert t.device_memory == t.chip.hbm_bytes // t.chip.devices_per_chip


@needs_libtpu
def test_a_small_models_train_step_compiled_for_a_two_host_tpu_slice():
  target = targets.resolve("v4:2x2x2")
  assert (target.num_devices, target.num_hosts, target.devices[0].device_kind) == (8, 2, "TPU v4")
  config = load_experiment("lenet_mnist", "")
  report = preflight.compile_run(config, target)
  train, evaluation = report.programs
  assert (train.name, train.batch_per_device, evaluation.batch_per_device) == ("train step", 4, 125)
  # the state is replicated on every chip, and donated: its buffers are reused for the new state
  state = preflight.build_programs(config, preflight.data_spec(config), target.devices).steps.abstract_state
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  batch_bytes = 4 * (32 * 32 * 1 * 4 + 4 + 1)
  assert state_bytes + batch_bytes <= train.argument_bytes <= 4 * (state_bytes + batch_bytes)  # TPU tiles pad
  assert train.alias_bytes >= state_bytes * 0.9 and report.fits
  # FLOPs per chip: the compiler's count against 2 x the MACs jaxcnn.arithmetic counts in the same step
  # (the rest: LeNet's tanh, pooling and optimizer arithmetic, a large part of so small a network)
  assert 1.0 <= train.flops / train.arithmetic_flops < 1.6
  assert 0.9 <= evaluation.flops / evaluation.arithmetic_flops < 1.3
  # pmap compiles for the whole slice too (its arguments then lead with every device, not one host's)
  config.parallel = "pmap"
  pmapped = preflight.compile_run(config, target).programs[0]
  assert pmapped.batch_per_device == 4 and abs(pmapped.flops / train.flops - 1) < 0.1


@pytest.mark.skipif(targets.cuda_plugin_version() is None,
                    reason="jax's CUDA plugin is not installed (pip install \"jax[cuda13]==<jax version>\")")
def test_a_train_step_compiled_for_eight_h100s_without_a_gpu():
  target = targets.resolve("h100x8")
  assert (target.num_devices, target.num_hosts, target.devices[0].device_kind) == (8, 1, "NVIDIA H100 80GB HBM3")
  config = load_experiment("lenet_mnist", "")
  report = preflight.compile_run(config, target)
  train, evaluation = report.programs
  assert train.batch_per_device == 4 and report.fits and train.need_bytes > train.argument_bytes > 0
  # XLA:GPU's executables count no FLOPs: the bound is the arithmetic's FLOPs at the TF32 peak (float32)
  assert train.flops is None and report.roofline(train) == (
      train.arithmetic_flops / targets.GPUS["h100"].tf32_flops, "compute, arithmetic's FLOPs")


def test_the_largest_batch_search_finds_the_boundary():
  config = load_experiment("fcn_ucr", "GunPoint,runlocal")
  config.model.filters = (16, 32, 16)
  spec = preflight.data_spec(config)
  programs = preflight.build_programs(config, spec, jax.devices()[:1])
  at = lambda b: preflight.compile_program(programs, "train step", b, count=False)[0]  # noqa: E731
  first = at(64)
  memory = (at(20).need_bytes + at(21).need_bytes) // 2  # between 20 and 21 examples
  assert at(20).need_bytes <= memory < at(21).need_bytes <= first.need_bytes
  best, compiles = preflight.largest_batch(programs, "train step", first, memory)
  assert best == 20 and compiles <= 8


def _launch(*args, timeout=300):
  return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, env=subprocess_env(),
                        capture_output=True, text=True, timeout=timeout)


def test_compile_mode_exit_statuses_on_this_machine():
  base = ["--config=experiments/fcn_ucr.py:GunPoint,runlocal", "--config.model.filters=(16,32,16)"]
  ok = _launch(*base, "--mode=compile", "--target=cpu")
  assert ok.returncode == 0, ok.stderr
  assert "Fits: every program fits" in ok.stdout and "train step" in ok.stdout
  bad = _launch(*base, "--mode=compile", "--target=v9:2x2")
  assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "v5e:2x4" in bad.stderr
  assert "unknown TPU generation 'v9'. Use GENERATION:TOPOLOGY" in bad.stderr
  for args, words in ((["--mode=compile"], "--mode=compile needs --target: "),
                      (["--target=cpu"], "--target=cpu is for --mode=compile")):
    out = _launch(*base, *args)
    assert out.returncode == 2 and words in out.stderr and out.stderr.count("\n") == 1, out.stderr
  # a global batch no host holds: exit 3, by how much, and the batch that fits (found by compiling)
  huge = _launch(*base, "--mode=compile", "--target=cpu", "--config.train.batch_size=200000000")
  assert huge.returncode == 3, huge.stderr[-2000:]
  assert re.search(r"Does not fit: the train step needs [\d.]+ [GT]B per device, .* more than", huge.stdout)
  assert re.search(r"The largest batch that fits is \d+ per device", huge.stdout)


@needs_libtpu
def test_libtpu_on_a_host_without_a_tpu_stays_quiet():
  # installed for --mode=compile, libtpu would start its runtime at every launch and print its failure
  # to find a TPU; the command line keeps JAX on this host's CPU instead (JAX_PLATFORMS left unset)
  env = {k: v for k, v in subprocess_env().items() if k != "JAX_PLATFORMS"}
  out = subprocess.run([sys.executable, "launch.py", "--config=experiments/fcn_ucr.py:GunPoint,runlocal", "--summary"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and "total params: 264,962" in out.stdout, out.stderr[-2000:]
  assert "TPU" not in out.stderr and "InitGoogle" not in out.stderr, out.stderr[-2000:]


def test_a_training_run_that_cannot_fit_stops_before_its_first_step(tmp_path):
  out = _launch("--config=experiments/fcn_ucr.py:GunPoint,runlocal", "--config.model.filters=(16,32,16)",
                "--config.train.batch_size=200000000", f"--workdir={tmp_path}")
  assert out.returncode == 3, out.stderr[-2000:]
  line = out.stderr.strip().splitlines()[-1]
  assert line.startswith("error: Does not fit: the train step needs") and "--config.train.batch_size=" in line
  assert "Nothing was trained" in line and "Traceback" not in out.stderr
  assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())
