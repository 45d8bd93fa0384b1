"""FCN (Wang, Yan & Oates 2017) on a UCR/UEA data set, with the authors' training protocol.

  python launch.py --config=experiments/fcn_ucr.py:GunPoint
  python launch.py --config=experiments/fcn_ucr.py:ItalyPowerDemand --config.train.epochs=2000
  python launch.py --config=experiments/fcn_ucr.py:GunPoint,runlocal     # smoke test: a few epochs

The argument is the data set name, optionally followed by ",runlocal" (5 epochs), ",quick" (1000 of
the paper's 2000 epochs: what `python launch.py` with no flags runs, about 2-3 minutes on 2 CPU cores)
and/or a model other than the FCN: ",resnet" (Wang et al.'s ResNet, 1000 epochs as in their ResNet.py),
",inceptiontime" (one network of Ismail Fawaz et al. 2020's ensemble, their protocol below) or ",tcn"
(Bai et al. 2018's TCN; our protocol, below). The FCN protocol is what the
authors' code (github.com/cauchyturing/UCR_Time_Series_Classification_Deep_Learning_Baseline, FCN.py)
does: Adam (Keras 1 defaults: lr 1e-3, epsilon 1e-8), ReduceLROnPlateau on the training loss (factor
0.5, patience 50, min_lr 1e-4), batch size min(N_train // 10, 16) (Python 2 integer division), 2000
epochs, z-normalisation with the training set's global mean and std, and the reported number is the
test error at the epoch with the lowest training loss.

InceptionTime (`classifiers/inception.py` of github.com/hfawaz/InceptionTime): batch 64 (the whole
training set when it is smaller), 1500 epochs, Adam (Keras defaults: lr 1e-3, epsilon 1e-7), the same
ReduceLROnPlateau on the training loss and the same selection (the checkpoint with the lowest training
loss predicts the test set), each series z-normalised on its own (their UCR 2018 loader). The paper's
numbers are for the ensemble of 5 such networks; one run here is one member, and
`experiments/ucr_benchmark.py:inceptiontime` trains 5 and averages their test probabilities.
TCN: the paper did not evaluate on UCR; we use the InceptionTime protocol with Adam lr 2e-3 (Bai et al.'s
sequential-MNIST setting) and their sequential-MNIST model (8 levels of 25 channels, kernel 7, dropout
0.05; a receptive field of 3061 steps, longer than every shipped series), but z-normalised with the
training set's global mean and std as the FCN is, not per series: per-series z-normalisation erases
each channel's level and amplitude, which is what tells the multivariate sensor sets' classes apart
(3 seeds each: JapaneseVowels 25.7-29.2 % test error per series, 3.0-4.3 % global; BasicMotions
5-12.5 % against 0-2.5 %; README "The UCR/UEA benchmark"). The univariate UCR sets come z-normalised per series already, so
there the two agree. `--config.dataset.normalize=per_series` gives the former protocol.
"""
import ml_collections
from ml_collections import config_dict

from jaxcnn.configs import base_config, parse_arg

# Each model's published protocol, as data: the model's constructor arguments (`model`), and what
# differs from the FCN protocol of Wang et al. (the `config` overrides, by dotted key). The paper table
# the reports print beside our error (jaxcnn/published.py: where each came from) is looked up for the
# run's data set (`dataset.subset`), whatever `manual_dir` holds; a set that is not in the table says so
# in the report. `--config.report.paper_error=X` overrides.
PROTOCOLS = {
    "fcn": dict(
        model=dict(name="fcn", filters=(128, 256, 128), kernel_sizes=(8, 5, 3)),
        config={"report.paper": "Wang, Yan & Oates 2017, FCN", "report.paper_table": "wang2017_fcn"}),
    "resnet": dict(  # Wang et al.'s ResNet for time series, same protocol, 1000 epochs (their ResNet.py)
        model=dict(name="resnet_ts", filters=(64, 128, 128), kernel_sizes=(8, 5, 3)),
        # On CPU, XLA's Eigen convolutions: they made its steps 1.7x faster on 2 cores (a tie since
        # launch.py runs with huge pages; kept so the benchmark's ResNet rows stay comparable).
        config={"cpu_convolutions": "eigen", "train.epochs": 1000,
                "report.paper": "Wang, Yan & Oates 2017, ResNet", "report.paper_table": "wang2017_resnet"}),
    "inceptiontime": dict(
        model=dict(name="inception_time", depth=6, filters=32, kernel_sizes=(40, 20, 10), bottleneck=32,
                   residual_every=3),
        config={"dataset.normalize": "per_series", "optimizer.eps": 1e-7, "train.batch_size": 64,
                "train.epochs": 1500, "report.paper": "Ismail Fawaz et al. 2020, InceptionTime (ensemble of 5)",
                "report.paper_table": "inceptiontime2020"}),
    "tcn": dict(
        model=dict(name="tcn", channels=25, levels=8, kernel_size=7, dropout=0.05),
        config={"optimizer.eps": 1e-7, "optimizer.learning_rate": 2e-3, "train.batch_size": 64,
                "train.epochs": 1500, "report.paper": "Bai, Kolter & Koltun 2018 (no UCR results)",
                "report.paper_table": ""}),
}
MODELS = tuple(PROTOCOLS)
PAPER_TABLES = {m: p["config"]["report.paper_table"] for m, p in PROTOCOLS.items() if p["config"]["report.paper_table"]}


def _set(c: ml_collections.ConfigDict, dotted: str, value) -> None:
  *path, key = dotted.split(".")
  for k in path:
    c = c[k]
  c[key] = value


def get_config(arg: str = "GunPoint") -> ml_collections.ConfigDict:
  name, opts = parse_arg(arg, default="GunPoint", what="data set", options=("runlocal", "quick", *MODELS[1:]),
                         example="fcn_ucr.py:GunPoint,runlocal")
  models = [o for o in MODELS if o in opts]
  if len(models) > 1:
    raise ValueError(f"choose one model, not {', '.join(models)}")
  arch = models[0] if models else "fcn"
  protocol = PROTOCOLS[arch]

  # On CPU, XLA's convolution kernels: jaxlib's YNNPACK (the shared default), which Eigen slows down for
  # these models (bench/README.md), unless the protocol says otherwise.
  # Every model key but `name` is passed to the model constructor (num_classes comes from the data set).
  c = base_config(f"{arch}_ucr:{name}", model=dict(protocol["model"]), dataset=dict(
      name="ucr_uea", subset=name, normalize="train_global",
      data_dir=config_dict.placeholder(str),    # TFDS data dir (default ~/tensorflow_datasets)
      manual_dir=config_dict.placeholder(str),  # a folder of .ts files (default: the aeon wheel's)
  ), task=dict(name="classification", label_smoothing=0.0))

  # Wang et al.'s FCN protocol (Adam at 1e-3, the shared default); PROTOCOLS says what the other models change.
  c.schedule.update(name="plateau", factor=0.5, patience=50, min_lr=1e-4, min_delta=1e-4)
  c.train.update(
      epochs=2000,
      batch_size=0,          # 0: the paper's min(N_train // 10, 16)
      eval_batch_size=256,
      eval_every_epochs=10,  # periodic test evaluation (curves) ...
      eval_on_improvement=True,  # ... and at every epoch that lowers the training loss, which is all
                                 # the paper's selection needs (same result as evaluating every epoch)
      log_every_epochs=10,
      # one grain reader thread: the batches of the next steps are read (shuffle, normalise, pad) while
      # the device computes; in the main thread that was ~25 % of a small data set's epoch (TCN on
      # ItalyPowerDemand, 300 epochs: 36 and 33 s -> 29 and 30 s; the same batches, the same result)
      num_threads=1,
  )
  c.checkpoint.every_epochs = 100
  c.report.update(
      select_by="train/loss",  # the reported number: test metrics at the epoch of lowest train loss
      paper_table="",           # jaxcnn/published.py; "" for none
      # test probabilities at the selected epoch -> predictions.npz (one more test-set pass per
      # selection; ucr_benchmark.py turns it on for its ensembles)
      save_predictions=False,
  )
  for key, value in protocol["config"].items():
    _set(c, key, value)
  if "quick" in opts:
    full = c.train.epochs
    c.experiment += ",quick"
    c.train.epochs = full // 2
    c.report.note = (f"quick run: {c.train.epochs} of the protocol's {full} epochs; "
                     f"--config=experiments/fcn_ucr.py:{arg.replace(',quick', '')} runs the full protocol")
  if "runlocal" in opts:
    c.train.epochs = 5
    c.checkpoint.every_epochs = 2
  return c
