"""A library that keeps to itself: importing any jaxcnn module changes nothing in the process, the
modules import each other without a circle, and on a jaxlib the CPU backend does not know it steps aside."""
import ast
import json
import os
import pkgutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from conftest import subprocess_env
import jaxcnn
from jaxcnn.backends.xla_cpu import policy
from jaxcnn.conv import conv, conv_transpose, max_pool
from jaxcnn.conv.nd import default_impl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "jaxcnn")


def modules() -> list[str]:
  return ["jaxcnn"] + sorted(m.name for m in pkgutil.walk_packages([PACKAGE], "jaxcnn."))


STATE = """
import json, os, signal, sys, threading, warnings
import jax
def state():
  return {"environ": dict(os.environ), "unraisablehook": repr(sys.unraisablehook),
          "excepthook": repr(sys.excepthook), "threading.excepthook": repr(threading.excepthook),
          "jax.config": {k: repr(v) for k, v in jax.config.values.items()},
          "signals": {s.name: repr(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)},
          "warnings": len(warnings.filters)}
jax.devices()  # JAX started first, as in a notebook that imported jax before jaxcnn
before = state()
for name in MODULES:
  __import__(name)
after = state()
print(json.dumps({k: [before[k], after[k]] for k in before if before[k] != after[k]}))
"""


def test_importing_every_module_changes_nothing_and_raises_nothing_after_jax_started():
  names = modules()
  assert len(names) > 60 and "jaxcnn.cli" in names and "jaxcnn.backends.xla_cpu.xla_setup" in names
  env = subprocess_env(devices=8)  # a multi-device host: the case where NPROC used to be set on import
  env.pop("NPROC", None)
  env["JAXCNN_CPU_CONVOLUTIONS"] = "eigen"  # a choice that used to be applied (or refused) on import
  r = subprocess.run([sys.executable, "-c", f"MODULES = {names!r}\n" + STATE], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  changed = json.loads(r.stdout.strip().splitlines()[-1])
  assert changed == {}, {k: v for k, v in changed.items()}


def _imports(path: str, name: str, known: set[str]) -> set[str]:
  """The jaxcnn modules that module `name` (file `path`) imports, at its top or inside its functions."""
  tree = ast.parse(open(path).read(), path)
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                 for a in node.names]
    else:
      continue
    out.update(t for t in targets if t in known and t != name)
  return out


def import_graph() -> dict[str, set[str]]:
  known = set(modules())
  graph = {}
  for name in known:
    rel = name.split(".")[1:]
    path = os.path.join(PACKAGE, *rel)
    path = os.path.join(path, "__init__.py") if os.path.isdir(path) else path + ".py"
    graph[name] = _imports(path, name, known)
  return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan), each a circle of imports."""
  index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))
  sys.setrecursionlimit(10000)
  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_the_circle_finder_finds_a_circle():
  assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert circles({"a": {"b"}, "b": set()}) == []


def test_jaxcnn_imports_without_a_circle():
  """Module-level and function-level imports alike (a lazy import is still a dependency): the CPU
  backend depends on the typology, and nothing leads back."""
  graph = import_graph()
  assert "jaxcnn.conv.nd" in graph["jaxcnn.backends.xla_cpu.convolution"]
  assert not any(m.startswith("jaxcnn.backends") for m in graph["jaxcnn.conv.nd"] | graph["jaxcnn.conv.transposed"]
                 | graph["jaxcnn.conv.pooling"])
  assert circles(graph) == []


def _program(fn, *args):
  # a new function each time: jax caches a function's trace, and the policy is read while tracing
  return jax.jit(lambda *a: fn(*a)).lower(*args).as_text()


OPS = {
    "conv": (lambda x, w: jnp.sum(conv(x, w, padding=2) ** 2), ((2, 12, 12, 3), (3, 3, 3, 4))),
    "conv grad": (jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)), ((2, 12, 12, 3), (3, 3, 3, 4))),
    "conv_transpose": (lambda x, w: conv_transpose(x, w, stride=2), ((2, 6, 6, 3), (4, 4, 3, 5))),
    "max_pool": (lambda x: max_pool(x, 2), ((2, 8, 8, 3),)),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_on_a_jaxlib_the_backend_does_not_know_the_cpu_program_is_xlas_own(op):
  fn, shapes = OPS[op]
  args = [jnp.ones(s) for s in shapes]
  with default_impl("lax"):
    want = _program(fn, *args)
  with policy.use(policy.Policy(jaxlib=(0, 13))):
    assert not policy.current().known
    got = _program(fn, *args)
  assert got == want
  with policy.use(policy.Policy(jaxlib=(0, 10))):
    assert _program(fn, *args) != want  # a known jaxlib: the CPU formulation, staged beside XLA's own


def test_a_run_on_an_unknown_jaxlib_says_so_in_one_header_line_and_trains(tmp_path, tfds_dir):
  """jaxlib faked to 0.13 in the launched process: the experiment's Eigen choice is not applied (XLA would
  abort on the unknown flag), the header says why in one line, the run trains and reports."""
  wd = str(tmp_path / "run")
  code = ("import runpy, sys\nfrom jaxcnn.backends.xla_cpu import policy\n"
          "policy.installed_jaxlib = lambda: (0, 13)\n"
          f"sys.argv = ['launch.py'] + {sys.argv[:0]!r} + sys.argv[1:]\n"
          f"runpy.run_path({os.path.join(ROOT, 'launch.py')!r}, run_name='__main__')\n")
  args = ["--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.model.filters=(4,8,4)",
          "--config.train.epochs=1", "--config.cpu_convolutions=eigen", f"--workdir={wd}",
          f"--config.dataset.data_dir={tfds_dir}"]
  r = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=subprocess_env(), capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  lines = [ln for ln in r.stdout.splitlines() if "jaxlib 0.13 is not one jaxcnn's CPU formulations" in ln]
  assert len(lines) == 1, r.stdout
  assert "Note:" not in r.stderr and "eigen" not in r.stdout.split("Result")[0], (r.stdout, r.stderr)
  assert "XLA's own" in open(os.path.join(wd, "report.md")).read()


def test_setup_process_says_once_what_it_cannot_apply_after_jax_started(monkeypatch):
  """This process started JAX long ago: the Eigen kernels cannot take effect any more, which the call
  says (a warning) instead of raising or changing XLA_FLAGS."""
  import jax
  jax.numpy.zeros(1).block_until_ready()  # JAX has started in this process (whichever tests ran before)
  flags = os.environ.get("XLA_FLAGS")
  with pytest.warns(RuntimeWarning, match="not applied: cpu_convolutions='eigen' (must be chosen before JAX|needs the XLA flag)"):
    done = jaxcnn.setup_process("eigen")
  assert os.environ.get("XLA_FLAGS") == flags and done.kernels == "ynnpack" and done.not_applied


def test_drawing_a_figure_leaves_the_processs_matplotlib_backend_alone(tmp_path):
  """A notebook's backend stays its own: jaxcnn draws on figures of their own (jaxcnn/plotting.py)."""
  code = ("import matplotlib\nmatplotlib.use('svg')\nimport matplotlib.pyplot as plt\n"
          "from jaxcnn.conv import checkerboard\nfrom jaxcnn.train import report\n"
          f"checkerboard.plot({str(tmp_path / 'c.png')!r}, size=4)\n"
          "report.plot_curves([{'epoch': e, 'train/loss': 1.0 / e, 'train/error': 0.4, 'test/loss': 1.0, 'test/error': 0.5, 'lr': 0.1} for e in (1, 2)], "
          f"{str(tmp_path / 'curves.png')!r})\n"
          "print(matplotlib.get_backend(), len(plt.get_fignums()))\n")
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=subprocess_env(), capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.split() == ["svg", "0"]
  for name in ("c.png", "curves.png"):
    assert open(tmp_path / name, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def _private_reaches(path: str, known: set[str]) -> list[str]:
  """`from jaxcnn.x import _name` and `alias._name` where alias is a jaxcnn module or another object
  (not self/cls): one module reaching into another's private parts."""
  tree = ast.parse(open(path).read(), path)
  aliases, out = {}, []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxcnn"):
      for a in node.names:
        if a.name.startswith("_") and not a.name.startswith("__"):
          out.append(f"{path}:{node.lineno}: from {node.module} import {a.name}")
        if f"{node.module}.{a.name}" in known:
          aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    elif isinstance(node, ast.Import):
      for a in node.names:
        if a.name.startswith("jaxcnn") and a.asname:
          aliases[a.asname] = a.name
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
        and isinstance(node.value, ast.Name) and node.value.id in aliases):
      out.append(f"{path}:{node.lineno}: {node.value.id}.{node.attr}")
  return out


def test_no_module_reaches_into_another_modules_private_names():
  known = set(modules())
  found = []
  for name in known:
    rel = name.split(".")[1:]
    path = os.path.join(PACKAGE, *rel)
    path = os.path.join(path, "__init__.py") if os.path.isdir(path) else path + ".py"
    found += _private_reaches(path, known)
  assert found == []
