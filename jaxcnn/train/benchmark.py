"""A benchmark: one experiment config run over several data sets and seeds, summarised in one table.

A config with a `benchmark` section (`experiments/ucr_benchmark.py`) names the data sets
(`benchmark.datasets`, comma-separated values of `config.dataset.subset`), the number of seeds
(`benchmark.seeds`: seeds 0 .. n-1) and the published error of each data set (`report.paper_table`,
jaxcnn/published.py).
Every (data set, seed) run is an ordinary run of the one trainer in `workdir/<data set>/seed<k>`, so a
stopped benchmark resumes where it stopped: finished runs are read back from their `result.json`,
the interrupted one resumes from its checkpoint. `workdir/benchmark.md` and `benchmark.json` hold the
table: data set, paper's error, ours (mean ± std over seeds, at the epoch the protocol selects),
per-seed errors, epochs and wall time.
"""
from __future__ import annotations

import copy
import json
import os
import time

import jax
import numpy as np

from jaxcnn import published
from jaxcnn.errors import ConfigError


def datasets_of(config) -> list[str]:
  names = [n.strip() for n in str(config.benchmark.datasets).split(",") if n.strip()]
  if not names:
    raise ConfigError("config.benchmark.datasets is empty: give comma-separated data set names, e.g. "
                      "--config.benchmark.datasets=GunPoint,ArrowHead")
  if len(set(names)) != len(names):
    raise ConfigError(f"config.benchmark.datasets lists a data set twice: {','.join(names)}")
  if int(config.benchmark.seeds) < 1:
    raise ConfigError(f"config.benchmark.seeds={config.benchmark.seeds} must be at least 1")
  return names


def run_config(config, name: str, seed: int):
  """The config of one (data set, seed) run: the benchmark's config without its `benchmark` section."""
  c = copy.deepcopy(config)
  with c.unlocked():
    del c["benchmark"]
  c.dataset.subset = name
  c.seed = seed
  c.experiment = f"{config.experiment}/{name}/seed{seed}"
  return c


def _finished(path: str, epochs: int) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    result = json.load(f)
  return result if result.get("epochs_done") == epochs else None


def _pct(v) -> str:
  return "n/a" if v is None else f"{100 * v:.2f}"


def ensemble_error(results: list[dict], split: str = "test") -> float | None:
  """Test error of the ensemble of the runs: the mean of their class probabilities at each one's selected
  epoch (`predictions.npz`, written with `report.save_predictions`), then the argmax. None when a run
  has no saved predictions."""
  probs, labels = [], None
  for r in results:
    path = os.path.join(r.get("workdir", ""), r.get("predictions") or "")
    if not r.get("predictions") or not os.path.exists(path):
      return None
    with np.load(path) as d:
      probs.append(d[f"{split}/probs"])
      if labels is None:
        labels = d[f"{split}/labels"]
      elif not np.array_equal(labels, d[f"{split}/labels"]):
        raise ValueError(f"{path}: the {split} labels differ from the other seeds' (different data?)")
  return float(np.mean(np.mean(probs, axis=0).argmax(-1) != labels))


def _summed_confusion(results: list[dict]) -> list[list[int]] | None:
  """The test confusion matrices at the selected epochs, added over the seeds (None if one is missing)."""
  mats = [r["selected"].get("test/confusion") for r in results]
  if not mats or any(m is None for m in mats):
    return None
  return np.sum(np.asarray(mats, np.int64), axis=0).tolist()


def summarize(config, runs: dict[str, list[dict]]) -> list[dict]:
  """One row per data set from its runs' results (errors at the epoch the protocol selects)."""
  rows = []
  for name, results in runs.items():
    errors = [r["selected"].get("test/error") for r in results]
    errors = [e for e in errors if e is not None]
    finals = [r["final"].get("test/error") for r in results if r["final"].get("test/error") is not None]
    cite, paper = published.for_config(config, name)
    rows.append({
        "dataset": name, "paper_error": paper, "paper_source": cite, "seeds": len(results),
        "mean_error": float(np.mean(errors)) if errors else None,
        "std_error": float(np.std(errors)) if errors else None,
        "errors": errors, "final_errors": finals, "ensemble_error": ensemble_error(results),
        "confusion": _summed_confusion(results), "class_names": results[0].get("class_names"),
        "num_train": results[0]["num_train"], "num_test": results[0]["num_test"],
        "epochs": results[0]["epochs_done"], "wall_time_s": float(sum(r["wall_time_s"] for r in results)),
    })
  return rows


def table(rows: list[dict]) -> list[str]:
  lines = ["| data set | train / test | paper error (%) | ours (%), mean ± std | per seed (%) | "
           "ensemble of the seeds (%) | epochs | wall time (s, all seeds) |",
           "|---|---|---:|---:|---|---:|---:|---:|"]
  for r in rows:
    ours = "n/a" if r["mean_error"] is None else f"**{_pct(r['mean_error'])}** ± {_pct(r['std_error'])}"
    paper = (_pct(r["paper_error"]) if r["paper_error"] is not None else
             published.NOT_IN_TABLE if published.NOT_IN_TABLE in (r.get("paper_source") or "") else "n/a")
    lines.append(f"| {r['dataset']} | {r['num_train']} / {r['num_test']} | {paper} | "
                 f"{ours} | {', '.join(_pct(e) for e in r['errors'])} | {_pct(r.get('ensemble_error'))} | "
                 f"{r['epochs']} | {r['wall_time_s']:.0f} |")
  return lines


def write(workdir: str, config, rows: list[dict], wall_time_s: float) -> str:
  from jaxcnn.train.report import confusion_table, versions
  lines = [f"# {config.experiment}", "",
           f"{config.model.name} on {len(rows)} data set(s), seeds 0..{int(config.benchmark.seeds) - 1}; "
           f"the error is the test error at the epoch the protocol selects "
           f"(`report.select_by={config.report.select_by}`); the ensemble averages the seeds' class "
           f"probabilities at their selected epochs. Paper: {published.citation(config)}.", "",
           *table(rows), "",
           f"Total wall time of the runs: {sum(r['wall_time_s'] for r in rows):.0f} s "
           f"({wall_time_s:.0f} s in this invocation, including data preparation and compilation).", ""]
  worse = [r for r in rows if r["paper_error"] is not None and r["mean_error"] is not None
           and r["mean_error"] - r["std_error"] > r["paper_error"]]
  if worse:
    lines += ["Worse than the paper by more than one standard deviation: " +
              ", ".join(f"{r['dataset']} ({_pct(r['mean_error'])} vs {_pct(r['paper_error'])})"
                        for r in worse) + ".", ""]
  for r in rows:
    names, mat = r.get("class_names"), r.get("confusion")
    if mat is None or not names or len(names) > 12:
      continue
    lines += [f"**{r['dataset']}**: test confusion at the selected epoch, summed over the {r['seeds']} "
              "seed(s) (rows: true class, columns: predicted)", "", *confusion_table(names, mat), ""]
  lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()), ""]
  path = os.path.join(workdir, "benchmark.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  with open(os.path.join(workdir, "benchmark.json"), "w") as f:
    json.dump({"experiment": config.experiment, "rows": rows}, f, indent=1)
  return path


def run_benchmark(config, workdir: str, *, console=None, devices=None) -> dict:
  """Runs (or resumes) every (data set, seed) of the benchmark, then writes the table."""
  from jaxcnn.train import components, loop
  console = console or loop.default_console()
  names = datasets_of(config)
  seeds = int(config.benchmark.seeds)
  from jaxcnn import registry
  for name in names:  # fail on a bad config or data set name before hours of training
    c = run_config(config, name, 0)
    components.check_config(c)
    registry.DATASETS.build(c.dataset.name, **components.config_kwargs(c.dataset))
  t0 = time.time()
  runs: dict[str, list[dict]] = {}
  total = len(names) * seeds
  for i, name in enumerate(names):
    for seed in range(seeds):
      k = i * seeds + seed + 1
      d = os.path.join(workdir, name, f"seed{seed}")
      c = run_config(config, name, seed)
      result = _finished(os.path.join(d, "result.json"), int(c.train.epochs))
      if result is None:
        console.print(f"[bold]run {k}/{total}[/bold]: {name}, seed {seed} -> {d}")
        result = loop.train_and_evaluate(c, d, console=console, devices=devices)
      else:
        console.print(f"run {k}/{total}: {name}, seed {seed}: done earlier ({d}/result.json)")
      runs.setdefault(name, []).append(dict(result, workdir=d))
      if jax.process_count() > 1:  # every process sees the run's files before deciding on the next
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(f"benchmark run {d}")
  if jax.process_index() != 0:  # process 0 writes the table
    return {"rows": [], "report": None}
  rows = summarize(config, runs)
  path = write(workdir, config, rows, time.time() - t0)
  return {"rows": rows, "report": path}
