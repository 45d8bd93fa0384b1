"""FCN (Wang, Yan & Oates 2017) on a UCR/UEA data set, with the authors' training protocol.

  python launch.py --config=experiments/fcn_ucr.py:GunPoint
  python launch.py --config=experiments/fcn_ucr.py:ItalyPowerDemand --config.train.epochs=2000
  python launch.py --config=experiments/fcn_ucr.py:GunPoint,runlocal     # smoke test: a few epochs

The argument is the data set name, optionally followed by ",runlocal" (5 epochs), ",quick" (1000 of
the paper's 2000 epochs: what `python launch.py` with no flags runs, about 2-3 minutes on 2 CPU cores)
and/or ",resnet" (the paper's ResNet instead of the FCN). The protocol is what the
authors' code (github.com/cauchyturing/UCR_Time_Series_Classification_Deep_Learning_Baseline, FCN.py)
does: Adam (Keras 1 defaults: lr 1e-3, epsilon 1e-8), ReduceLROnPlateau on the training loss (factor
0.5, patience 50, min_lr 1e-4), batch size min(N_train // 10, 16) (Python 2 integer division), 2000
epochs, z-normalisation with the training set's global mean and std, and the reported number is the
test error at the epoch with the lowest training loss.
"""
import ml_collections
from ml_collections import config_dict

# Test error rates of FCN in Wang et al. 2017, Table II (the 44 UCR data sets they used). Data sets
# shipped in the aeon wheel that the paper did not use (ArrowHead, ACSF1, the UEA multivariate ones)
# have no entry.
PAPER_FCN_ERROR = {
    "GunPoint": 0.000,
    "ItalyPowerDemand": 0.030,
    "OSULeaf": 0.012,
}
PAPER = "Wang, Yan & Oates 2017, FCN, Table II"


def get_config(arg: str = "GunPoint") -> ml_collections.ConfigDict:
  parts = [p for p in (arg or "GunPoint").split(",") if p]
  name = parts[0]
  runlocal = "runlocal" in parts[1:]
  unknown = set(parts[1:]) - {"runlocal", "quick", "resnet"}
  if unknown:
    raise ValueError(f"unknown option(s) {sorted(unknown)} after the data set name; valid: runlocal, "
                     "quick, resnet (e.g. fcn_ucr.py:GunPoint,runlocal)")

  c = ml_collections.ConfigDict()
  c.experiment = f"fcn_ucr:{name}"
  c.seed = 0
  c.parallel = "jit"            # "jit" (jit + shard_map over a device mesh) or "pmap"

  # Every key but `name` is passed to the model constructor (num_classes comes from the data set).
  if "resnet" in parts[1:]:  # Wang et al.'s ResNet for time series, same protocol
    c.experiment = f"resnet_ucr:{name}"
    c.model = ml_collections.ConfigDict(dict(name="resnet_ts", filters=(64, 128, 128),
                                             kernel_sizes=(8, 5, 3)))
  else:
    c.model = ml_collections.ConfigDict(dict(name="fcn", filters=(128, 256, 128),
                                             kernel_sizes=(8, 5, 3)))
  c.dataset = ml_collections.ConfigDict(dict(
      name="ucr_uea", subset=name, normalize="train_global",
      data_dir=config_dict.placeholder(str),    # TFDS data dir (default ~/tensorflow_datasets)
      manual_dir=config_dict.placeholder(str),  # a folder of .ts files (default: the aeon wheel's)
  ))
  c.task = ml_collections.ConfigDict(dict(name="classification", label_smoothing=0.0))

  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, momentum=0.0))
  c.schedule = ml_collections.ConfigDict(dict(
      name="plateau", factor=0.5, patience=50, min_lr=1e-4, min_delta=1e-4))

  c.train = ml_collections.ConfigDict(dict(
      epochs=2000,
      batch_size=0,          # 0: the paper's min(N_train // 10, 16)
      eval_batch_size=256,
      eval_every_epochs=10,  # periodic test evaluation (curves) ...
      eval_on_improvement=True,  # ... and at every epoch that lowers the training loss, which is all
                                 # the paper's selection needs (same result as evaluating every epoch)
      log_every_epochs=10,
      num_threads=0,         # grain reader threads (0: read in the main thread; UCR data is tiny)
  ))
  c.checkpoint = ml_collections.ConfigDict(dict(every_epochs=100, keep=2))
  c.report = ml_collections.ConfigDict(dict(
      select_by="train/loss",  # the reported number: test metrics at the epoch of lowest train loss
      paper=PAPER,
      paper_error=config_dict.placeholder(float),
      note="",
  ))
  if name in PAPER_FCN_ERROR and c.model.name == "fcn":
    c.report.paper_error = PAPER_FCN_ERROR[name]

  if "quick" in parts[1:]:
    c.experiment += ",quick"
    c.report.note = ("quick run: 1000 of the paper's 2000 epochs; "
                     f"--config=experiments/fcn_ucr.py:{name} runs the full protocol")
    c.train.epochs = 1000
  if runlocal:
    c.train.epochs = 5
    c.checkpoint.every_epochs = 2
  return c
