"""launch.py as a user runs it: overrides reach the run, every mistake is one message and exit code 2."""
import json
import os
import subprocess
import sys

import numpy as np
import optax
import pytest

from conftest import subprocess_env
from jaxcnn.backends.xla_cpu import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(*args, devices=1, tfds_dir=None, env=None, timeout=300):
  """`python launch.py *args` as a user runs it, on CPU; `env`: extra environment variables.

  Without `--workdir` the run gets a fresh folder of its own: the default workdir (runs/<experiment>)
  is one per experiment, held by a lock while a run uses it, and the xdist workers run these launches
  side by side (two of them in runs/fcn_ucr_GunPoint_quick refused each other: "in use by another run").
  """
  if not any(a.startswith("--workdir") for a in args):
    import tempfile

    import conftest
    args = args + (f"--workdir={tempfile.mkdtemp(prefix='launch-', dir=conftest.LAUNCH_WORKDIRS)}/run",)
  env = subprocess_env(devices if devices > 1 else None, **(env or {}))
  if tfds_dir:
    args = args + (f"--config.dataset.data_dir={tfds_dir}",)
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args,message", [
    (["--config.train.epochz=3"],
     "unknown config key --config.train.epochz. Did you mean: --config.train.epochs"),
    (["--config.bogus=1"], "unknown config key --config.bogus. Valid keys: checkpoint.every_epochs"),
    (["--config.train.epochs=abc"], "flag --config.train.epochs=abc: invalid literal for int()"),
    (["--config.model.name=fcnn"], "Unknown model name 'fcnn'. Did you mean: fcn? Available models: alexnet, c3d"),
    (["--config.dataset.name=mnistt"], "Unknown dataset name 'mnistt'. Did you mean: mnist? Available datasets:"),
    (["--config.task.name=segmentaton"],
     "Unknown task name 'segmentaton'. Did you mean: segmentation, instance_segmentation? Available tasks: "
     "classification, instance_segmentation, segmentation"),
    (["--config=experiments/fcn_ucr.py:GunPint"],
     "UCR/UEA data set 'GunPint' not found in"),
    (["--config.dataset.manual_dir=/no/such/dir"], "--config.dataset.manual_dir=/no/such/dir does not exist"),
    (["--config=experiments/nope.py"], "config file experiments/nope.py not found"),
    (["--config.parallel=pmapp"], "config.parallel='pmapp' is not one of jit, pmap"),
    (["--config.report.paper_table=wang"], "config.report.paper_table='wang' is not one of wang2017_mlp"),
    (["--mode=eval", "--workdir=/nonexistent/run"], "No checkpoint in /nonexistent/run/checkpoints"),
    (["--mdoe=eval"], "Unknown command line flag 'mdoe'. Did you mean: mode ?"),
    (["--config=experiments/ucr_benchmark.py:fcn", "--mode=eval"],
     "--mode=eval works on one run, not a benchmark: point --workdir at one run's folder"),
    (["--coordinator_address=localhost:1234"],
     "--coordinator_address also needs --num_processes, --process_id: pass all three"),
    (["--config.precision=float16"], "config.precision='float16' is not one of float32, bfloat16"),
    (["--cpu_convolutions=onednn"], "flag --cpu_convolutions=onednn: value should be one of <ynnpack|eigen>"),
    (["--config.cpu_convolutions=onednn"],
     "config.cpu_convolutions='onednn': unknown CPU convolution kernels 'onednn'"),
    (["--config.model.filters=(8,8)"],
     "model 'fcn' cannot be built from config.model (filters=(8, 8), kernel_sizes=(8, 5, 3)): filters (8, 8) "
     "and kernel_sizes (8, 5, 3) must have the same length"),
    (["--workdir=README.md"], "--workdir=README.md is a file, not a folder: choose another --workdir"),
])
def test_mistakes_give_one_message_and_exit_code_2(args, message, tfds_dir):
  r = launch(*args, tfds_dir=tfds_dir)
  assert r.returncode == 2, r.stderr[-2000:]
  assert message in r.stderr


@pytest.mark.parametrize("args,message", [
    (["--config=experiments/imagenet.py:resnet18,synthetic", "--config.model.pretrained=/no/such.pth"],
     "--config.model.pretrained=/no/such.pth: no weight file at /no/such.pth"),
    (["--config=experiments/imagenet.py:efficientnet_lite0,synthetic", "--config.model.name=lenet5",
      "--config.model.pretrained=README.md"], "model 'lenet5' has no reference layout to load weights from"),
    (["--config=experiments/imagenet.py:resnet18", "--mode=predict", "--image=/no/such.jpg"],
     "--image=/no/such.jpg does not exist"),
    (["--config=experiments/imagenet.py:resnet18", "--mode=predict", "--image=README.md"],
     "--image=README.md is not an image file"),
])
def test_weight_file_and_image_mistakes_give_one_message_and_exit_code_2(args, message):
  """Caught before anything is built: no model is initialised, no data set read."""
  r = launch(*args)
  assert r.returncode == 2, r.stderr[-2000:]
  assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
  assert "Traceback" not in r.stderr
  assert "epoch" not in r.stdout  # nothing was trained


def test_overrides_reach_the_run_and_eval_mode(tmp_path, tfds_dir):
  wd = str(tmp_path / "run")
  # On 8 devices (a TPU v3-8, an 8-GPU node): the paper's batch of 6 runs in 8 rows a step, 2 masked.
  r = launch("--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.model.filters=(4,8,4)",
             "--config.train.epochs=2", "--config.optimizer.learning_rate=0.01", f"--workdir={wd}",
             devices=8, tfds_dir=tfds_dir)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "8 x cpu device(s)" in r.stdout and "global batch 6 (in 8 rows over 8 devices, 2 masked)" in r.stdout
  res = json.load(open(os.path.join(wd, "result.json")))
  # conv 8x1->4, 5x4->8, 3x8->4 with biases, BatchNorm scale+shift, dense 4->2.
  assert res["num_params"] == (8 * 4 + 4) + (5 * 4 * 8 + 8) + (3 * 8 * 4 + 4) + 2 * (4 + 8 + 4) + 4 * 2 + 2
  assert res["epochs_done"] == 2 and res["batch_size"] == 6  # min(67 // 10, 16)
  assert res["paper_error"] == 0.030
  hist = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
  assert hist[0]["lr"] == pytest.approx(0.01)
  assert "test error at the epoch of lowest train/loss" in r.stdout and "report.md" in r.stdout
  report = open(os.path.join(wd, "report.md")).read()
  assert '"cpu_convolutions": "ynnpack"' in report  # jaxlib's default
  # launch.py restarted itself with glibc's huge-page tunable (jaxcnn/backends/xla_cpu/host_memory.py)
  assert f'"host_malloc": "{"system" if host_memory.unsupported() else "hugepages"}"' in report
  assert "ynnpack convolutions, host malloc " in r.stdout
  # Evaluated with the other CPU convolution kernels (Eigen's, as a config may name them): the same
  # accuracy.
  ev = launch("--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.model.filters=(4,8,4)",
              "--mode=eval", f"--workdir={wd}", "--config.cpu_convolutions=eigen", tfds_dir=tfds_dir)
  assert ev.returncode == 0, ev.stderr[-3000:]
  assert f"test/accuracy: {res['final']['test/accuracy']:.4f}" in ev.stdout
  assert "(eigen convolutions):" in ev.stdout
  # The checkpoint of another model: the message lists the values it was trained with.
  other = launch("--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--mode=eval", f"--workdir={wd}",
                 tfds_dir=tfds_dir)
  assert other.returncode == 2 and "Traceback" not in other.stderr, other.stderr[-3000:]
  assert ("--mode=eval: checkpoint step 24 in " in other.stderr and "does not fit this config's "
          "model/optimizer. It was trained with --config.model.filters=[4, 8, 4] (now (128, 256, 128))"
          in other.stderr), other.stderr
  # The same when training resumes into that workdir with another model.
  wider = launch("--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.train.epochs=3",
                 f"--workdir={wd}", tfds_dir=tfds_dir)
  assert wider.returncode == 2 and "Traceback" not in wider.stderr, wider.stderr[-3000:]
  assert "--mode=train: checkpoint step 24 in " in wider.stderr and "--config.model.filters=[4, 8, 4]" in wider.stderr
  # Relaunching the finished run resumes at its last step and trains nothing more.
  again = launch("--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.model.filters=(4,8,4)",
                 "--config.train.epochs=2", "--config.optimizer.learning_rate=0.01", f"--workdir={wd}",
                 tfds_dir=tfds_dir)
  assert again.returncode == 0 and "Resuming from checkpoint at step 24" in again.stdout


def test_summary_flag_prints_the_model_table_without_training(tfds_dir):
  r = launch("--summary", tfds_dir=tfds_dir)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "fcn on ucr_uea (one example of shape [150, 1], float32)" in r.stdout
  assert "total params: 264,962" in r.stdout and "receptive field of the output: global" in r.stdout
  assert "epoch" not in r.stdout


def test_preemption_and_kills_at_random_moments_then_the_relaunch_ends_identical(tmp_path, tfds_dir):
  """Fault injection. The run is stopped three times, relaunched each time with the same command:
  - SIGTERM (preemption) mid-epoch: it saves a checkpoint with the partial epoch's sums and exits 143;
  - SIGKILL (no handler, no save) twice, at random moments: mid-step, mid-evaluation or mid-checkpoint.
  The end is exactly the end of an uninterrupted run: every epoch's metrics and the parameters."""
  import random
  import signal
  import time
  args = ["--config=experiments/fcn_ucr.py:ItalyPowerDemand", "--config.model.filters=(4,8,4)",
          "--config.train.epochs=40", "--config.train.log_every_epochs=1", "--config.checkpoint.every_epochs=2",
          f"--config.dataset.data_dir={tfds_dir}"]
  ref = launch(*args, f"--workdir={tmp_path / 'ref'}")
  assert ref.returncode == 0, ref.stderr[-2000:]
  env = subprocess_env(PYTHONUNBUFFERED="1")
  wd, rng, stops = tmp_path / "stopped", random.Random(0), []
  for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGKILL):
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch.py"), *args, f"--workdir={wd}"], cwd=ROOT,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = None
    for line in p.stdout:
      if line.startswith("epoch "):
        seen = line.split()[1]
        time.sleep(0.05 if sig == signal.SIGTERM else rng.uniform(0.0, 0.4))
        p.send_signal(sig)
        break
    out = p.stdout.read()
    code = p.wait(timeout=120)
    stops.append((sig.name, seen, sorted(os.listdir(wd / "checkpoints"))))
    print("stopped:", stops[-1])
    if sig == signal.SIGTERM:
      assert code == 128 + signal.SIGTERM and "Stopped by signal 15" in out and "checkpoint saved" in out, out
    else:
      assert code == -signal.SIGKILL and seen, out[-2000:]
  resumed = launch(*args, f"--workdir={wd}")
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "Resuming from checkpoint at step" in resumed.stdout, stops
  ha = [json.loads(line) for line in open(tmp_path / "ref" / "metrics.jsonl")]
  hb = [json.loads(line) for line in open(wd / "metrics.jsonl")]
  assert [h["epoch"] for h in hb] == list(range(1, 41)), stops
  for x, y in zip(ha, hb, strict=True):
    for k in x:
      assert x[k] == pytest.approx(y[k], rel=1e-6), (x["epoch"], k, stops)
  import orbax.checkpoint as ocp
  sa = ocp.StandardCheckpointer().restore(str(tmp_path / "ref" / "checkpoints" / "480" / "state"))
  sb = ocp.StandardCheckpointer().restore(str(wd / "checkpoints" / "480" / "state"))
  import jax
  import numpy as np
  for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  # the best checkpoint (the selected epoch's weights, written beside the checkpoints; the kills may have
  # hit its writing): the same step and weights as the uninterrupted run's
  bests = [[n for n in os.listdir(d / "checkpoints_best") if n.isdigit()] for d in (tmp_path / "ref", wd)]
  assert bests[0] == bests[1] and len(bests[0]) == 1, (bests, stops)
  ba = ocp.StandardCheckpointer().restore(str(tmp_path / "ref" / "checkpoints_best" / bests[0][0] / "state"))
  bb = ocp.StandardCheckpointer().restore(str(wd / "checkpoints_best" / bests[0][0] / "state"))
  for x, y in zip(jax.tree.leaves(ba), jax.tree.leaves(bb), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_eval_reads_only_the_weights_and_builds_no_optimizer(tmp_path, tfds_dir):
  """--mode=eval restores the model's weights alone (not the optimizer's state) and builds no optimizer:
  a run trained with Adam evaluates under a config naming SGD, to the same test error."""
  wd = str(tmp_path / "run")
  args = ("--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.model.filters=(4,8,4)",
          "--config.train.epochs=1", f"--workdir={wd}")
  assert launch(*args, tfds_dir=tfds_dir).returncode == 0
  err = json.load(open(os.path.join(wd, "result.json")))["final"]["test/error"]
  ev = launch(*args, "--mode=eval", "--config.optimizer.name=sgd", "--config.optimizer.momentum=0.9",
              tfds_dir=tfds_dir)
  assert ev.returncode == 0, ev.stderr[-3000:]
  assert f"test/error: {err:.4f}" in ev.stdout, ev.stdout
  from jaxcnn.train.runtime import Runtime
  from conftest import load_experiment
  c = load_experiment("fcn_ucr", "ItalyPowerDemand,runlocal")
  c.model.filters, c.dataset.data_dir = (4, 8, 4), tfds_dir
  rt = Runtime(c, wd, inference=True)
  assert rt.schedule is None and rt.abstract_state.opt_state == optax.EmptyState()
  step, state = rt.restore_latest("eval")
  assert step > 0 and int(state.step) == step


def test_export_of_a_trained_run_gives_its_test_error_in_onnxruntime_and_from_stablehlo(tmp_path, tfds_dir):
  """--mode=export of a trained run: the ONNX file run by onnxruntime and the StableHLO reloaded by
  jax.export classify the test split to the test error --mode=eval reports; a wrong flag is one message."""
  ort = pytest.importorskip("onnxruntime", reason="the onnx extra (in the test extra) is not installed")
  from jaxcnn import export
  from jaxcnn.train.components import build_components
  from conftest import load_experiment
  wd = str(tmp_path / "run")
  args = ("--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.model.filters=(4,8,4)",
          "--config.train.epochs=1", f"--workdir={wd}")
  assert launch(*args, tfds_dir=tfds_dir).returncode == 0
  err = json.load(open(os.path.join(wd, "result.json")))["final"]["test/error"]
  onnx_file = str(tmp_path / "fcn.onnx")
  r = launch(*args, "--mode=export", "--format=onnx", f"--output={onnx_file}", tfds_dir=tfds_dir)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "input x [batch, 24, 1] float32" in r.stdout and f"Wrote {onnx_file}" in r.stdout, r.stdout
  s = launch(*args, "--mode=export", tfds_dir=tfds_dir)  # StableHLO, into the workdir
  assert s.returncode == 0, s.stderr[-3000:]
  meta = json.load(open(onnx_file + ".json"))
  assert meta["classes"] == ["1", "2"] and meta["preprocessing"]["config"]["normalize"] == "train_global"
  c = load_experiment("fcn_ucr", "ItalyPowerDemand,runlocal")
  c.dataset.data_dir = tfds_dir
  ds = build_components(c).dataset
  test = [ds.preprocess(ds.evals["test"][i]) for i in range(len(ds.evals["test"]))]
  x, y = np.stack([t["x"] for t in test]), np.array([t["label"] for t in test])
  session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
  probs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))["probabilities"]
  assert float(np.mean(probs.argmax(-1) != y)) == pytest.approx(err, abs=1e-6)
  reloaded = export.load(os.path.join(wd, "export", "fcn.stablehlo"))(x)["probabilities"]
  np.testing.assert_allclose(np.asarray(reloaded), probs, rtol=1e-4, atol=1e-6)
  wrong = launch(*args, "--mode=eval", "--output=x.onnx", tfds_dir=tfds_dir)
  assert wrong.returncode == 2 and "--output=x.onnx is for --mode=export" in wrong.stderr, wrong.stderr[-2000:]


def test_early_stopping_and_the_best_checkpoint_that_eval_uses(tmp_path, tfds_dir):
  """The default experiment's runlocal variant (GunPoint): a run whose selection metric stops improving
  ends after `early_stopping_patience` epochs, says so,
  and launched again trains no further; the selected epoch's weights are kept beside the latest
  checkpoint, and --mode=eval uses them by default (the selected epoch's test error, which the report
  prints) or the latest with --checkpoint=latest."""
  wd = str(tmp_path / "run")
  # learning rate 0 and the whole training set in one batch: the training loss of every epoch is the
  # same up to the order of the sums, so with patience 2 the run stops within the first epochs of 10,
  # two epochs after the one of lowest train/loss (the FCN protocol's selection)
  args = ("--config=experiments/fcn_ucr.py:GunPoint,runlocal", "--config.model.filters=(4,8,4)",
          "--config.train.epochs=10", "--config.train.batch_size=50", "--config.optimizer.learning_rate=0",
          "--config.train.eval_every_epochs=1", "--config.checkpoint.every_epochs=5",
          "--config.train.early_stopping_patience=2", f"--workdir={wd}")
  r = launch(*args, tfds_dir=tfds_dir)
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.load(open(os.path.join(wd, "result.json")))
  chosen, stop = res["selected"]["epoch"], res["epochs_done"]  # one step per epoch: steps are epochs
  assert stop == chosen + 2 < 10 and res["stopped_early"] == {"epoch": stop, "selected_epoch": chosen,
                                                               "select_by": "train/loss", "patience": 2}
  assert (f"Early stopping at epoch {stop}: no improvement of train/loss for 2 epochs "
          f"(config.train.early_stopping_patience=2); the selected epoch is {chosen}." in r.stdout), r.stdout
  assert len(open(os.path.join(wd, "metrics.jsonl")).readlines()) == stop
  assert sorted(os.listdir(os.path.join(wd, "checkpoints_best"))) == [str(chosen)]
  assert str(stop) in os.listdir(os.path.join(wd, "checkpoints"))  # the stop is checkpointed
  again = launch(*args, tfds_dir=tfds_dir)
  assert again.returncode == 0 and "This run stopped early; nothing more to train." in again.stdout, again.stdout
  assert len(open(os.path.join(wd, "metrics.jsonl")).readlines()) == stop
  # --mode=eval: the best checkpoint by default, its test error the report's selected one
  ev = launch(*args, "--mode=eval", tfds_dir=tfds_dir)
  assert ev.returncode == 0, ev.stderr[-3000:]
  assert (f"The best checkpoint (step {chosen}, epoch {chosen}: train/loss {res['selected']['train/loss']:.4g})"
          in ev.stdout), ev.stdout
  assert f"test/error: {res['selected']['test/error']:.4f}" in ev.stdout, ev.stdout
  latest = launch(*args, "--mode=eval", "--checkpoint=latest", tfds_dir=tfds_dir)
  assert latest.returncode == 0 and f"The latest checkpoint (step {stop})" in latest.stdout, latest.stdout
  assert f"test/error: {res['final']['test/error']:.4f}" in latest.stdout
  # a step that is not kept, a best checkpoint a run did not keep, --checkpoint in training: one message each
  gone = launch(*args, "--mode=eval", "--checkpoint=99", tfds_dir=tfds_dir)
  assert gone.returncode == 2 and "--checkpoint=99: no checkpoint of that step in" in gone.stderr, gone.stderr[-2000:]
  final = launch("--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.model.filters=(4,8,4)",
                 "--config.train.epochs=1", "--config.report.select_by=final", f"--workdir={tmp_path / 'final'}",
                 tfds_dir=tfds_dir)
  assert final.returncode == 0 and not os.path.exists(tmp_path / "final" / "checkpoints_best")
  nobest = launch("--config=experiments/fcn_ucr.py:ItalyPowerDemand,runlocal", "--config.model.filters=(4,8,4)",
                  "--mode=eval", "--checkpoint=best", f"--workdir={tmp_path / 'final'}", tfds_dir=tfds_dir)
  assert nobest.returncode == 2 and "--checkpoint=best: no best checkpoint in" in nobest.stderr, nobest.stderr[-2000:]
  training = launch(*args, "--checkpoint=best", tfds_dir=tfds_dir)
  assert training.returncode == 2 and "--checkpoint=best is for --mode=eval/predict/cam/export" in training.stderr
