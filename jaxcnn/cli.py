"""The command line behind `launch.py`: absl flags + an ml_collections config file with overrides.

  python launch.py --config=experiments/fcn_ucr.py:GunPoint --config.train.epochs=300 --workdir=runs/gp

Every user mistake (unknown config key, wrong value type, unknown model/dataset/task name, missing data,
model arguments that do not fit, a workdir that is a file or held by another run) ends with one message
on stderr and exit code 2, before any training starts; a full disk ends with one message and exit code
74 (README, "Mistakes and faults").
"""
from __future__ import annotations

import difflib
import os
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from jaxcnn.errors import ConfigError

FLAGS = flags.FLAGS
USAGE_ERROR = 2


def define_flags(default_config: str) -> None:
  config_flags.DEFINE_config_file(
      "config", default_config, "Experiment config file, `path.py[:argument]`; override any value with "
      "--config.<key>=<value>.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Where checkpoints, metrics, TensorBoard events and report.md go "
                      "(default: runs/<experiment>). Relaunching with the same workdir resumes.")
  flags.DEFINE_enum("mode", "train", tuple(MODES), "train (resumes if workdir has a checkpoint), eval "
                    "(evaluate the latest checkpoint of workdir), cam (class activation maps of the "
                    "latest checkpoint for --cam_indices, written as a PNG), predict (classify "
                    "--text / --text_file, or segment the images of --input_dir, with the latest "
                    "checkpoint) or compile (compile the run's programs for --target without data or "
                    "hardware: memory per device, fits or not, FLOPs, a roofline bound; exit 0 when "
                    "everything fits, 3 when not) or export (the inference program with the latest checkpoint's "
                    "weights as --format=stablehlo or onnx, for other runtimes).")
  flags.DEFINE_string("target", None, "--mode=compile: what to compile for: a cloud TPU slice "
                      "GENERATION:TOPOLOGY (v5e:2x4, v5e:4x4, v4:2x2x2, v5p:2x2x2, v6e:4x4, v3:4x4; needs "
                      "the TPU compiler: pip install \"jax[tpu]==<your jax version>\"), h100xN (N GPUs; needs "
                      "jax[cuda13]), cpu (this machine), or list (the accelerators' figures and their sources).")
  flags.DEFINE_list("cam_indices", None, "--mode=cam: indices of the examples of --cam_split to draw "
                    "(default: the first example of each class).")
  flags.DEFINE_string("cam_split", "test", "--mode=cam: the split the examples come from.")
  flags.DEFINE_string("cam_out", None, "--mode=cam: the PNG to write (default: workdir/cam_<split>.png).")
  flags.DEFINE_multi_string("text", None, "--mode=predict: a text to classify (repeatable).")
  flags.DEFINE_multi_string("image", None, "--mode=predict (image classification): an image file to "
                            "classify (repeatable); prints its top-5 classes.")
  flags.DEFINE_string("text_file", None, "--mode=predict: a file of texts to classify, one per line.")
  flags.DEFINE_string("input_dir", None, "--mode=predict (segmentation): a folder of images to segment "
                      "(any size; overlapping tiles of --config.predict.tile pixels).")
  flags.DEFINE_string("mask_dir", None, "--mode=predict (segmentation): ground-truth masks with the "
                      "images' file names; adds TP/FN/FP colours and metrics.")
  flags.DEFINE_enum("cpu_convolutions", None, ("ynnpack", "eigen"), "On CPU, the kernels that run "
                    "the convolutions: ynnpack (jaxlib's default, one thread each) or eigen (XLA's "
                    "multi-threaded Eigen kernels; faster for some models, slower for others: see "
                    "jaxcnn/backends/xla_cpu/xla_setup.py). Default: $JAXCNN_CPU_CONVOLUTIONS, else the config's "
                    "cpu_convolutions (the experiment's measured choice), else ynnpack.")
  flags.DEFINE_string("output_dir", None, "--mode=predict (segmentation): where the probability masks, "
                      "overlays and metrics.json go (default: workdir/predictions).")
  flags.DEFINE_bool("distributed", False, "Join a multi-process run, letting JAX detect the cluster "
                    "(cloud TPU, SLURM, Open MPI): run the same command on every host.")
  flags.DEFINE_string("coordinator_address", None, "Multi-process run elsewhere: HOST:PORT of process 0 "
                      "(with --num_processes and --process_id).")
  flags.DEFINE_integer("num_processes", None, "Multi-process run: how many processes take part.")
  flags.DEFINE_integer("process_id", None, "Multi-process run: this process's index, 0..num_processes-1.")
  flags.DEFINE_enum("format", "stablehlo", ("stablehlo", "onnx"), "--mode=export: stablehlo "
                    "(jax.export's serialised program: any JAX, XLA or IREE runtime) or onnx (onnxruntime and "
                    "the other ONNX runtimes; pip install 'jaxcnn[onnx]').")
  flags.DEFINE_string("output", None, "--mode=export: the file to write (default: "
                      "workdir/export/<model>.stablehlo or .onnx); its description goes beside it as FILE.json.")
  flags.DEFINE_string("checkpoint", None, "--mode=eval/predict/cam/export: which checkpoint: best (the epoch "
                      "config.report.select_by picks, kept beside the latest), latest, ema (the latest "
                      "checkpoint's moving average of the weights, config.train.ema_decay) or a step number. "
                      "Default: best when the run kept one, else latest; the output says which.")
  flags.DEFINE_bool("summary", False, "Print the model's per-layer table (output shape, parameters, "
                    "MACs, receptive field) on the data set's input shape, and exit.")


def _leaf_keys(cfg, prefix="") -> list[str]:
  out = []
  for k, v in cfg.items():
    if hasattr(v, "items"):
      out += _leaf_keys(v, f"{prefix}{k}.")
    else:
      out.append(f"{prefix}{k}")
  return out


def usage_error(msg: str) -> None:
  print(f"error: {msg}", file=sys.stderr)
  sys.exit(USAGE_ERROR)


def _config_arg(argv) -> str | None:
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _override_keys(argv) -> list[str]:
  keys = []
  for a in argv[1:]:
    if a.startswith("--config."):
      keys.append(a[len("--config."):].split("=", 1)[0])
  return keys


def _unknown_key_message(key: str, valid: list[str]) -> str:
  close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
  section = key.rsplit(".", 1)[0] if "." in key else ""
  nearby = [k for k in valid if section and k.startswith(section + ".")]
  hint = f" Did you mean: {', '.join('--config.' + c for c in close)}?" if close else ""
  where = f" under config.{section}" if nearby else ""
  return f"unknown config key --config.{key}.{hint} Valid keys{where}: {', '.join(nearby or valid)}"


def check_config_args(argv: list[str], default_config: str) -> None:
  """Validates --config and every --config.<key> override before ml_collections sees them (it applies
  overrides while the flag is defined, and reports mistakes as tracebacks)."""
  spec = _config_arg(argv) or default_config
  path = spec.partition(":")[0]
  if not os.path.isfile(path):
    usage_error(f"config file {path} not found (from --config={spec}). Experiment configs live in "
                "experiments/, e.g. --config=experiments/fcn_ucr.py:GunPoint.")
  try:
    base = _load_config(spec)
  except Exception as e:  # pylint: disable=broad-except
    usage_error(f"--config={spec}: {type(e).__name__}: {e}")
  valid = _leaf_keys(base)
  for key in _override_keys(argv):
    if key not in valid:
      usage_error(_unknown_key_message(key, valid))


def _name_lists(argv: list[str]) -> list[str]:
  """`--config.<...>.freeze=a,b*/c` as the tuple of names it means: ml_collections reads a tuple override
  with `ast.literal_eval`, which takes `a,b` for one string but refuses the glob characters of `b*/c`."""
  out = []
  for arg in argv:
    key, eq, value = arg.partition("=")
    if eq and key.startswith("--config.") and key.endswith(".freeze") and value and value[0] not in "([\"'":
      arg = f"{key}={tuple(v.strip() for v in value.split(',') if v.strip())!r}"
    out.append(arg)
  return out


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with one clear message and exit code 2 for every mistake."""
  try:
    return FLAGS(_name_lists(argv))
  except flags.Error as e:
    usage_error(str(e).replace("\n", " "))
  return []


def _load_config(spec: str):
  """The config named by `spec` (`path.py[:arg]`), without overrides."""
  import importlib.util
  path, _, arg = spec.partition(":")
  mod_spec = importlib.util.spec_from_file_location("_jaxcnn_cfg", path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  return mod.get_config(arg) if arg else mod.get_config()


def default_workdir(config) -> str:
  name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(config.get("experiment", "run")))
  return os.path.join("runs", name)


def _pct(v) -> str:
  return "n/a" if v is None else f"{100 * v:.2f} %"


DISK_FULL = 74  # sysexits.h EX_IOERR


def _no_absent_tpu() -> None:
  """libtpu installed (for `--mode=compile`, or by a TPU image) on a host with no TPU and no GPU: JAX
  would start the TPU runtime at every launch, which prints its failure to find a TPU (six lines of
  libtpu's own logging, alarming and harmless). The run's devices are this host's CPU then, so JAX is
  told so; JAX_PLATFORMS, when set, decides as always."""
  import glob
  from jaxcnn import targets
  if os.environ.get("JAX_PLATFORMS") or targets.libtpu_version() is None:
    return
  if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*") or glob.glob("/dev/nvidia[0-9]*") \
      or os.path.exists("/dev/kfd"):
    return
  import jax
  jax.config.update("jax_platforms", "cpu")


def _setup_process() -> None:
  """Logging, the XLA:CPU convolution kernels (before anything starts a JAX backend: the flag, else the
  environment, else the experiment's choice) and the multi-process group."""
  from absl import logging
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)  # TFDS and JAX log at INFO/WARNING about normal things
  _no_absent_tpu()
  if FLAGS.mode == "compile" and (FLAGS.target or "").lower() != "cpu" and not os.environ.get("JAX_PLATFORMS"):
    # Compiling for a TPU slice needs no device of this machine's: JAX stays on the CPU, instead of
    # starting the TPU runtime that libtpu's install brings (which, on a machine without a TPU, prints
    # its failure to find one).
    import jax
    jax.config.update("jax_platforms", "cpu")
    # libtpu lets one process at a time load it (/tmp/libtpu_lockfile), for the chips' sake: a compile for
    # a slice touches none, and may run beside a training run or another compile.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jaxcnn import distributed, process
  from jaxcnn.backends.xla_cpu import policy, xla_setup
  process.quiet_disk_full_hooks()
  xla_setup.spare_collective_threads()
  config_value, config_key = xla_setup.config_choice(FLAGS.config, FLAGS.mode)
  kernels, source = xla_setup.choose(FLAGS.cpu_convolutions, config_value, config_key=config_key)
  if kernels is not None:
    try:
      xla_setup.configure(kernels)
    except ValueError as e:
      if source.startswith("config") and kernels in xla_setup.KERNELS:
        # the experiment's preference, not the user's request: same convolutions, only slower (on a
        # jaxlib the CPU backend does not know, the run's header says why, so no note here)
        if policy.Policy().known:
          print(f"Note: {source}={kernels!r} not applied ({e}); XLA's default kernels run "
                "the convolutions (same results).", file=sys.stderr)
      else:
        usage_error(f"{source}={kernels!r}: {e}" if source.startswith("config") else str(e))
    if FLAGS.cpu_convolutions == "ynnpack" and xla_setup.eigen_convolutions():
      usage_error(f"--cpu_convolutions=ynnpack, but XLA_FLAGS already sends convolutions to Eigen "
                  f"({xla_setup.ENV}={os.environ.get(xla_setup.ENV)!r} or {xla_setup.FLAG} in "
                  "XLA_FLAGS): unset it or drop the flag")
  policy.set_process_policy(process.policy_of_process())  # what the CPU formulations are traced for
  try:
    distributed.initialize(auto=FLAGS.distributed, coordinator_address=FLAGS.coordinator_address,
                           num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  except ConfigError as e:
    usage_error(str(e))


def _task_class(config):
  """The config's registered task class (jaxcnn/tasks/base.py: what the CLI may ask it)."""
  from jaxcnn import registry
  registry.load_all()
  return registry.TASKS.get(config.task.name)


# ------------------------------------------------------------------------------------------ the modes
# Each mode is `(config, workdir, console) -> None`; `main` picks one by --mode (and --summary).

def _summary(config, workdir, console) -> None:
  del workdir
  from jaxcnn.summary import summary_table
  from jaxcnn.train.components import build_components
  c = build_components(config)
  x = c.dataset.example()["x"]
  console.print(f"{config.model.name} on {config.dataset.name} (one example of shape "
                f"{list(x.shape)}, {x.dtype}):")
  print(summary_table(c.init_model, x.shape, x.dtype))


def _cam(config, workdir, console) -> None:
  try:
    indices = None if FLAGS.cam_indices is None else [int(i) for i in FLAGS.cam_indices]
  except ValueError:
    raise ConfigError(f"--cam_indices={','.join(FLAGS.cam_indices)} must be integers, e.g. "
                      "--cam_indices=0,5,9") from None
  from jaxcnn.interpret import CAMError
  from jaxcnn.train.cam import cam_checkpoint
  try:
    out = cam_checkpoint(config, workdir, indices=indices, out=FLAGS.cam_out, split=FLAGS.cam_split)
  except CAMError as e:
    raise ConfigError(f"--mode=cam with model {config.model.name!r}: {e}") from None
  console.print(f"Class activation maps of {out['checkpoint']} ({FLAGS.cam_split} split):", markup=False)
  for r in out["examples"]:
    console.print(f"  #{r['index']}: true {r['true']}, predicted {r['predicted']}")
  console.print(f"Wrote {out['path']}")


def _predict(config, workdir, console) -> None:
  """--image (image classification), --input_dir (a folder: segmentation or instance segmentation, by
  the task's kind), else --text / --text_file (text classification)."""
  from jaxcnn.train import prediction
  if FLAGS.image:
    from jaxcnn.train.classify import classify_images
    out = classify_images(config, workdir, FLAGS.image)
    console.print(out["weights"] + ":", markup=False)
    for r in out["predictions"]:
      console.print(f"  {r['image']}", markup=False)
      console.print("    " + "  ".join(f"{name} {p:.3f}" for name, p in r["top"]), markup=False)
    return
  if FLAGS.input_dir:  # the task says what predicting a folder of files means (or that it does not)
    _task_class(config).predict_folder(config, workdir, FLAGS.input_dir, FLAGS.output_dir, FLAGS.mask_dir,
                                       console)
    return
  texts = list(FLAGS.text or [])
  if FLAGS.text_file:
    if not os.path.isfile(FLAGS.text_file):
      raise ConfigError(f"--text_file={FLAGS.text_file} does not exist")
    with open(FLAGS.text_file, encoding="utf-8") as f:
      texts += [line.rstrip("\n") for line in f if line.strip()]
  out = prediction.predict_checkpoint(config, workdir, texts)
  console.print(f"{out['checkpoint'][0].upper() + out['checkpoint'][1:]}:", markup=False)
  for r in out["predictions"]:
    probs = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])
    short = r["text"] if len(r["text"]) <= 100 else r["text"][:97] + "..."
    console.print(f"  {short!r}")
    console.print(f"    -> [bold]{r['predicted']}[/bold]  " +
                  "  ".join(f"{name} {p:.3f}" for name, p in probs))


def _eval(config, workdir, console) -> None:
  from jaxcnn.backends.xla_cpu import xla_setup
  from jaxcnn.train.evaluation import PRINTED_CONFUSION_CLASSES, evaluate_checkpoint
  out = evaluate_checkpoint(config, workdir, console=console)
  names = [str(n) for n in out["class_names"]]
  kernels = xla_setup.cpu_kernels()
  console.print(out["weights"] + (f", {out['data']}" if out["data"] else "")
                + (f" ({kernels} convolutions)" if kernels else "") + ":", markup=False)
  per_class: dict[str, list[str]] = {}
  for k, v in out.items():
    if "/AP-" in k:  # per-class AP (detection): one line per split and type, below
      head, name = k.split("/AP-", 1)
      per_class.setdefault(head, []).append(f"{name} {'n/a' if v < 0 else f'{v:.3f}'}")
      continue
    if "/" not in k:
      continue
    if k.endswith("confusion"):
      if len(names) > PRINTED_CONFUSION_CLASSES:
        console.print(f"  {k}: {len(names)} x {len(names)} in eval.json")
        continue
      console.print(f"  {k} (rows: true, columns: predicted):")
      w = max(6, *(len(n) for n in names)) + 1
      console.print("    " + " " * w + "".join(f"{n[:w - 1]:>{w}}" for n in names))
      for name, row in zip(names, v):
        console.print(f"    {name[:w - 1]:<{w}}" + "".join(f"{c:>{w}d}" for c in row))
    else:
      console.print(f"  {k}: {v:.4f}")
  for head, cells in per_class.items():
    console.print(f"  {head} AP per class: " + "  ".join(cells), markup=False)
  if out.get("paper_error") is not None:
    top5 = out.get("paper_top5_error")
    console.print(f"  published: {out['paper']} (error {_pct(out['paper_error'])}"
                  + (f", top-5 error {_pct(top5)}" if top5 is not None else "") + ")", markup=False)
  elif out.get("paper"):
    console.print(f"  published: {out['paper']}", markup=False)
  if out.get("report"):
    console.print(f"Wrote {out['report']} and eval.json")


def _benchmark(config, workdir, console) -> None:
  from jaxcnn import distributed
  from jaxcnn.train.benchmark import run_benchmark, table
  out = run_benchmark(config, workdir, console=console)
  if not distributed.is_primary():
    return
  console.print()
  console.print(f"[bold]{config.experiment}[/bold] (test error at the epoch the protocol selects):")
  for line in table(out["rows"]):
    console.print("  " + line)
  console.print(f"Wrote {out['report']} and benchmark.json; each run's report.md is in "
                f"{workdir}/<data set>/seed<k>/")


def _compile(config, workdir, console) -> None:
  """--mode=compile --target=...: the run's programs compiled for the target (jaxcnn/train/preflight.py);
  exit status 3 when one does not fit."""
  del workdir
  from jaxcnn import targets
  from jaxcnn.train import preflight
  if not FLAGS.target:
    raise ConfigError(f"--mode=compile needs --target: {targets.known()}; --target=list shows them")
  if FLAGS.target == "list":
    for line in targets.table():
      console.print(line, markup=False)
    return
  target = targets.resolve(FLAGS.target)
  console.print(f"Compiling {config.get('experiment', config.model.name)} for {target.describe()} "
                "(no data, no accelerator) ...", markup=False)
  report = preflight.compile_run(config, target, progress=lambda m: console.print(m, style="dim", markup=False))
  console.print()
  for line in preflight.format_report(report):
    console.print(line, markup=False)
  if not report.fits:
    sys.exit(preflight.DOES_NOT_FIT)


def _export(config, workdir, console) -> None:
  """--mode=export --format=stablehlo|onnx [--output=FILE]: the run's inference program with the newest
  checkpoint's weights (jaxcnn/export.py)."""
  from jaxcnn.train.export_run import export_checkpoint
  console.print(f"Exporting {config.model.name} from {workdir} as {FLAGS.format} ...", markup=False)
  out = export_checkpoint(config, workdir, FLAGS.format, FLAGS.output)
  x = out["inputs"][0]
  console.print(f"{out['checkpoint'][0].upper() + out['checkpoint'][1:]}", markup=False)
  console.print(f"  input {x['name']} {_dims(x['shape'])} {x['dtype']}, {x['layout']}", markup=False)
  for o in out["outputs"]:
    console.print(f"  output {o['name']} {_dims(o['shape'])} {o['dtype']}", markup=False)
  if out.get("batch_fixed"):
    console.print(f"  {out['batch_fixed']}", markup=False)
  console.print(f"Wrote {out['path']} ({out['bytes'] / 2 ** 20:.1f} MiB) and {out['path']}.json", markup=False)


def _dims(shape) -> str:
  return "[" + ", ".join("batch" if d is None else str(d) for d in shape) + "]"


def _train(config, workdir, console) -> None:
  from jaxcnn import distributed
  from jaxcnn.train import loop
  result = loop.train_and_evaluate(config, workdir, console=console)
  if distributed.is_primary():
    _print_result(config, workdir, console, result)


MODES = {"train": _train, "eval": _eval, "cam": _cam, "predict": _predict, "compile": _compile,
         "export": _export}


def main(argv) -> None:
  del argv
  _setup_process()
  from jaxcnn import distributed
  from jaxcnn.train import loop
  config = FLAGS.config
  workdir = FLAGS.workdir or default_workdir(config)
  from rich.console import Console
  # Every process runs the same program; process 0 speaks for all of them.
  console = Console(highlight=False, soft_wrap=True, quiet=not distributed.is_primary())
  from jaxcnn.train.preflight import DOES_NOT_FIT, DoesNotFitError
  from jaxcnn.train.workdir import DiskFullError, check_workdir, check_writable
  try:
    check_workdir(workdir)
    if FLAGS.mode in ("train", "eval") and not FLAGS.summary:  # they write into the workdir
      check_writable(workdir)
    if FLAGS.target and FLAGS.mode != "compile":
      raise ConfigError(f"--target={FLAGS.target} is for --mode=compile (a training run uses the devices "
                        "it runs on)")
    if FLAGS.checkpoint:
      if FLAGS.mode in ("train", "compile"):
        raise ConfigError(f"--checkpoint={FLAGS.checkpoint} is for --mode=eval/predict/cam/export (training "
                          "resumes from the newest checkpoint)")
      config.checkpoint.restore = FLAGS.checkpoint
    if FLAGS.output and FLAGS.mode != "export":
      raise ConfigError(f"--output={FLAGS.output} is for --mode=export (--mode=predict writes to --output_dir, "
                        "--mode=cam to --cam_out)")
    if "benchmark" in config and FLAGS.mode == "compile":  # every run of a benchmark compiles alike
      raise ConfigError("--mode=compile compiles one run, not a benchmark: use "
                        "--config=experiments/fcn_ucr.py:<data set>[,model], one of the benchmark's runs")
    if "benchmark" in config and FLAGS.mode != "train":
      raise ConfigError(f"--mode={FLAGS.mode} works on one run, not a benchmark: point --workdir at one "
                        "run's folder (<workdir>/<data set>/seed<k>) and use "
                        "--config=experiments/fcn_ucr.py:<data set>[,model] with the same model.")
    mode = (_summary if FLAGS.summary else _benchmark if "benchmark" in config else MODES[FLAGS.mode])
    mode(config, workdir, console)
  except DoesNotFitError as e:  # a ConfigError, with its own status: the run's step needs more memory
    print(f"error: {e}", file=sys.stderr)
    sys.exit(DOES_NOT_FIT)
  except (ConfigError, FileNotFoundError) as e:
    usage_error(str(e))
  except loop.NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  except DiskFullError as e:
    sys.stdout.flush()
    print(f"error: {e}", file=sys.stderr, flush=True)
    # orbax's and tensorboardX's writer threads fail on the same full disk: one message is enough
    os._exit(DISK_FULL)


def _print_result(config, workdir, console, result) -> None:
  """What `python launch.py` prints after training: the headline numbers beside the paper's, and the
  files the run wrote."""
  task = _task_class(config)
  console.print()
  for line in task.result_lines(config, result):
    console.print(line)
  console.print("Wrote:")
  outputs = task.outputs(workdir, result)
  width = max(len(what) for what, _ in outputs) + 1
  for what, path in outputs:
    console.print(f"  {what:<{width}} {path}")




def run(default_config: str) -> None:
  check_config_args(sys.argv, default_config)
  define_flags(default_config)
  app.run(main, flags_parser=parse_flags)
