"""Tests run on CPU with 8 fake host devices, set before jax is imported anywhere."""
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Where libtpu is installed, the TPU compiles of tests/test_compile.py run in both xdist workers at once:
# libtpu lets one process load it unless told otherwise (nothing here touches a TPU).
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
# The suite is compile-bound and compiles the same programs many times (every seed of a benchmark, each
# kill-and-resume pair, the CLI subprocesses): XLA's persistent cache, shared by the xdist workers and
# the subprocesses through the environment, compiles each once. Results are the same executables. The
# cache lives in this checkout (.xla-cache/, git-ignored): never shared with another checkout, whose
# jaxlib or code may differ, and gone with it; XLA's cache key does not include the CPU's features, so
# a cache must never travel to another machine either.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _machine_key() -> str:
  """The jaxlib version and a digest of the CPU's feature flags: the cache's folder within .xla-cache/."""
  import hashlib
  import importlib.metadata
  try:
    with open("/proc/cpuinfo") as f:
      flags = next((ln for ln in f if ln.startswith(("flags", "Features"))), "")
  except OSError:
    import platform
    flags = platform.processor()
  try:
    jaxlib = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    jaxlib = "none"
  return f"jaxlib{jaxlib}-{hashlib.sha256(' '.join(sorted(flags.split())).encode()).hexdigest()[:12]}"


os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".xla-cache", _machine_key()))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")

import importlib.util  # noqa: E402

import jaxcnn  # noqa: E402

# The suite's process policy, as launch.py's: NPROC=16, thread-pool room for the 8-device collectives,
# without which a loaded run aborted now and then (jaxcnn/backends/xla_cpu/xla_setup.py:
# spare_collective_threads); the CPU formulations' policy from this process. Importing jaxcnn does none of it.
jaxcnn.setup_process()
# JAXCNN_TEST_JAXLIB=0.13 pytest ...: the in-process tests run as if the installed jaxlib were 0.13, one
# the CPU formulations were not measured on (the backend steps aside: XLA's own convolutions); the
# tests that assert a measured formulation skip with the reason. (Subprocesses run the real jaxlib.)
if os.environ.get("JAXCNN_TEST_JAXLIB"):
  from jaxcnn.backends.xla_cpu import policy as _policy
  _fake = tuple(int(v) for v in os.environ["JAXCNN_TEST_JAXLIB"].split(".")[:2])
  _policy.installed_jaxlib = lambda: _fake
  _policy.set_process_policy(_policy.Policy(kernels=_policy.current().kernels,
                                            host_malloc=_policy.current().host_malloc))


def subprocess_env(devices: int | None = None, **extra) -> dict:
  """The environment of a program a test starts (launch.py, a bench script): the test's own on the CPU,
  with `devices` forced host devices (None: the host's one CPU device) instead of the suite's 8."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  if devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env.update(extra)
  return env

import pytest  # noqa: E402

sys.path.insert(0, ROOT)


def resumed_batches(make, taken: int = 5, more: int = 4):
  """`(head, rest, again)`: the first `taken` batches of an iterator `make()` builds, the `more` after them,
  and the `more` that a second `make()` iterator gives after restoring the first's state at `taken`
  (`pipeline.train_iterator`'s checkpointable position)."""
  first = make()
  head = [next(first) for _ in range(taken)]
  state = first.get_state()
  rest = [next(first) for _ in range(more)]
  resumed = make()
  resumed.set_state(state)
  return head, rest, [next(resumed) for _ in range(more)]


def load_experiment(name: str, arg: str):
  spec = importlib.util.spec_from_file_location(f"exp_{name}", os.path.join(ROOT, "experiments", f"{name}.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  config = mod.get_config(arg)
  # JAXCNN_TEST_SEED=k pytest ...: every test that builds its run from an experiment config runs with
  # seed k, so that a learning assertion can be checked for its margin under other seeds.
  if os.environ.get("JAXCNN_TEST_SEED") and "seed" in config:
    config.seed = int(os.environ["JAXCNN_TEST_SEED"])
  return config


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  """One TFDS data dir for the whole session (builds each data set once)."""
  return str(tmp_path_factory.mktemp("tfds"))


LAUNCH_WORKDIRS = None


@pytest.fixture(scope="session", autouse=True)
def _launch_workdirs(tmp_path_factory):
  """The folder under which test_cli.launch gives each launch its own workdir: pytest's basetemp, which
  pytest prunes (it keeps the last 3 sessions'), instead of a new folder loose in /tmp per launch."""
  global LAUNCH_WORKDIRS
  LAUNCH_WORKDIRS = str(tmp_path_factory.mktemp("launches"))


@pytest.fixture
def small_config(tfds_dir):
  """FCN on GunPoint, narrower than the paper's (16/32/16 filters) so tests are fast."""
  c = load_experiment("fcn_ucr", "GunPoint,runlocal")
  c.dataset.data_dir = tfds_dir
  c.model.filters = (16, 32, 16)
  c.train.log_every_epochs = 1000
  return c


# The longest tests (20-70 s each on 2 cores, from a cold compilation cache) run first, so that the two
# xdist workers end on short tests together instead of one waiting for the other's last long test.
LONG_FIRST = (
    "test_mask_rcnn.py::test_initial_losses_gradients_everywhere_and_an_overfit_run",
    "test_nuclei.py::test_a_short_run_learns_to_segment_the_held_out_nuclei",
    "test_pretrained.py::test_the_cli_fine_tunes_from_the_trained_weights",
    "test_experiments.py::test_runlocal[mask_rcnn-",
    "test_cli.py::test_preemption_and_kills_at_random_moments",
    "test_distributed.py::test_two_processes_equal_one_process",
    "test_cli.py::test_overrides_reach_the_run_and_eval_mode",
    "test_segmentation.py::test_cli_trains_learns_and_predicts_a_folder",
    "test_pretrained.py::test_the_cli_predicts_and_evaluates_with_published_weights",
    "test_text.py::test_cli_train_eval_predict",
    "test_mnist.py::test_lenet_train_eval_on_any_idx_pair_and_cam_through_the_cli",
    "test_workdir.py::test_a_full_disk_names_the_last_good_checkpoint",
    "test_zoo.py::test_the_bottleneck_resnet_path_runs_a_train_step",
    "test_experiments.py::test_runlocal",
)


def pytest_collection_modifyitems(session, config, items):
  rank = {i: next((k for k, s in enumerate(LONG_FIRST) if s in item.nodeid), len(LONG_FIRST))
          for i, item in enumerate(items)}
  items[:] = [items[i] for i in sorted(range(len(items)), key=lambda i: (rank[i], i))]


from jaxcnn.train.state import jit_init  # noqa: E402,F401  (the tests initialise models as runs do)
