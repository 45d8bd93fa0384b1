"""The UCR/UEA benchmark: one model, every classification data set the aeon wheel ships, several seeds.

  python launch.py --config=experiments/ucr_benchmark.py:fcn            # also :resnet, :inceptiontime, :tcn
  python launch.py --config=experiments/ucr_benchmark.py:fcn --config.benchmark.datasets=GunPoint,OSULeaf \
      --config.benchmark.seeds=5
  python launch.py --config=experiments/ucr_benchmark.py:fcn,runlocal   # 5 epochs per run: a smoke test

Each (data set, seed) is the model's run of `experiments/fcn_ucr.py` (the published protocol: see that
file) in `workdir/<data set>/seed<k>`; `workdir/benchmark.md` tables the test error at the epoch the
protocol selects (mean ± std over seeds) beside the paper's (the model's table in jaxcnn/published.py,
looked up for every data set, or "not in the paper's table"). Running the command again resumes.
Add `--config.dataset.manual_dir=/path/to/Univariate_ts` (and the names in `benchmark.datasets`) to run
data sets of the full archives.
"""

import ml_collections

from jaxcnn.configs import parse_arg, sibling

# Univariate (UCR) and multivariate (UEA) classification sets shipped in the aeon wheel.
SHIPPED = ("GunPoint", "ItalyPowerDemand", "ArrowHead", "OSULeaf", "ACSF1", "BasicMotions", "JapaneseVowels",
           "PickupGestureWiimoteZ")


def get_config(arg: str = "fcn") -> ml_collections.ConfigDict:
  fcn_ucr = sibling(__file__, "fcn_ucr")
  model, opts = parse_arg(arg, default="fcn", names=fcn_ucr.MODELS, what="model",
                          options=("runlocal", "quick"), example="ucr_benchmark.py:inceptiontime")
  options = [o for o in ("runlocal", "quick") if o in opts]
  c = fcn_ucr.get_config(",".join(["GunPoint", *options] + ([model] if model != "fcn" else [])))
  c.experiment = f"ucr_benchmark:{arg}"
  c.benchmark = ml_collections.ConfigDict(dict(
      datasets=",".join(SHIPPED),  # comma-separated names (config.dataset.subset of each run)
      # seeds 0 .. seeds-1 per data set; InceptionTime's published numbers are an ensemble of 5
      seeds=5 if model == "inceptiontime" else 3,
  ))
  c.report.paper_error = None
  c.report.save_predictions = True  # each run's test probabilities, for the ensemble of the seeds
  return c
