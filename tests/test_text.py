"""Character-level text classification (Zhang, Zhao & LeCun 2015): quantiser, CSV data, model, CLI."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import jit_init
from jaxcnn import registry
from jaxcnn.data import DatasetError
from jaxcnn.data import text as T
from jaxcnn.models import char_cnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_ag_news() -> str | None:
  """The offline AG News rows (`../shared/data/ag_news_subset`), where this checkout can see them."""
  for base in (os.environ.get("JAXCNN_SHARED_DATA"), os.path.join(ROOT, "..", "shared", "data"),
               "/work/shared/data"):
    if base and os.path.isfile(os.path.join(base, "ag_news_subset", "test.csv")):
      return os.path.join(base, "ag_news_subset")
  return None


# ----------------------------------------------------------------------------------------- quantiser

def test_alphabet_is_the_papers_70_positions():
  assert len(T.ALPHABET) == 70
  assert T.ALPHABET[:36] == "abcdefghijklmnopqrstuvwxyz0123456789"
  assert T.ALPHABET[-1] == "\n"
  assert len(T.ALPHABET) - 36 - 1 == 33  # the "33 other characters"
  # '-' is listed twice; like Crepe's dict, the later position wins and 69 characters are distinct.
  assert T.ALPHABET.count("-") == 2 and len(set(T.ALPHABET)) == 69
  assert T.quantize("-", 1)[0] == T.ALPHABET.rindex("-")


def test_quantize_backward_lowercase_unknown_and_length():
  x = T.quantize("Ab,é\n")
  assert x.shape == (1014,) and x.dtype == np.int8
  # backward: frame 0 is the last character; upper case folds; é is outside the alphabet (-1 = zeros)
  assert list(x[:5]) == [69, -1, T.ALPHABET.index(","), 1, 0]
  assert (x[5:] == -1).all()  # padding
  forward = T.quantize("Ab,é\n", reverse=False)
  assert list(forward[:5]) == [0, 1, T.ALPHABET.index(","), -1, 69]
  # longer than 1014: the last 1014 characters are kept (the first is what Crepe drops)
  long = "x" + "a" * 1013 + "b"
  q = T.quantize(long)
  assert q[0] == 1 and (q[1:] == 0).all() and len(q) == 1014


def test_one_hot_on_device_gives_zero_vectors_for_unknown():
  x = jnp.asarray(T.quantize("a?z~", 8))[None]
  onehot = np.asarray(char_cnn.encode(x))
  assert onehot.shape == (1, 8, 70)
  ref = np.zeros((8, 70), np.float32)
  for i, c in enumerate(reversed("a?z~")):
    ref[i, T.ALPHABET.rindex(c)] = 1.0
  np.testing.assert_array_equal(onehot[0], ref)
  assert onehot[0, 4:].sum() == 0


def test_join_fields_is_crepes():
  assert T.join_fields(["Title ", " a\\nb"]) == "a\nb Title"


# ----------------------------------------------------------------------------------------- CSV data

def write_csv(path, rows):
  with open(path, "w", newline="", encoding="utf-8") as f:
    csv.writer(f, quoting=csv.QUOTE_ALL).writerows(rows)


def make_csv_dir(root):
  """A folder in the paper's layout: train.csv (60 rows), test.csv (21 rows), classes.txt (3 classes)."""
  os.makedirs(root, exist_ok=True)
  rng = np.random.default_rng(0)
  words = {1: "stocks market profit", 2: "match goal season", 3: "vote minister war"}

  def rows(n):
    out = []
    for i in range(n):
      k = int(rng.integers(1, 4))
      out.append([str(k), f"title {i}", f"{words[k]} number {i}"])
    return out
  write_csv(os.path.join(root, "train.csv"), rows(60))
  write_csv(os.path.join(root, "test.csv"), rows(21))
  with open(os.path.join(root, "classes.txt"), "w") as f:
    f.write("Business\nSports\nWorld\n")
  return str(root)


@pytest.fixture()
def csv_folder(tmp_path):
  import pathlib
  return pathlib.Path(make_csv_dir(str(tmp_path / "toy_csv")))


def test_char_csv_official_layout(csv_folder, tmp_path):
  ds = T.char_csv(manual_dir=str(csv_folder), data_dir=str(tmp_path / "tfds"))
  assert (len(ds.train), len(ds.evals["test"]), ds.num_classes) == (60, 21, 3)
  assert ds.class_names == ["Business", "Sports", "World"]
  labels, texts = T.read_csv(str(csv_folder / "train.csv"))
  for i in (0, 17, 59):  # TFDS keeps file order
    assert ds.train[i]["text"] == texts[i] and ds.train[i]["label"] == labels[i]
  ex = ds.preprocess(ds.train[0])
  np.testing.assert_array_equal(ex["x"], T.quantize(texts[0]))
  assert ex["label"] == labels[0]
  np.testing.assert_array_equal(ds.encode("Hi")["x"], T.quantize("Hi"))


def test_char_csv_errors(csv_folder, tmp_path):
  with pytest.raises(DatasetError, match="manual_dir"):
    T.char_csv()
  with pytest.raises(DatasetError, match="does not exist"):
    T.char_csv(manual_dir=str(tmp_path / "nope"))
  only_test = tmp_path / "only_test"
  only_test.mkdir()
  (only_test / "test.csv").write_text((csv_folder / "test.csv").read_text())
  with pytest.raises(DatasetError, match="train.csv not found.*subset_file=test.csv"):
    T.char_csv(manual_dir=str(only_test))
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "train.csv").write_text('"1","a","b"\n"x","c","d"\n')
  (bad / "test.csv").write_text('"1","a","b"\n')
  with pytest.raises(T.CsvFormatError, match=r"train.csv, line 2: the class 'x' is not an integer"):
    T.char_csv(manual_dir=str(bad), data_dir=str(tmp_path / "tfds"))
  (bad / "train.csv").write_text('"1","a","b"\n"2","c"\n')
  with pytest.raises(T.CsvFormatError, match="line 2: 2 fields, the first row has 3"):
    T.read_csv(str(bad / "train.csv"))
  (bad / "test.csv").write_text('"0","a","b"\n')
  with pytest.raises(T.CsvFormatError, match="numbered from 1"):
    T.read_csv(str(bad / "test.csv"))
  with pytest.raises(DatasetError, match="eval_csv=.*does not exist"):
    T.char_csv(manual_dir=str(csv_folder), data_dir=str(tmp_path / "tfds"), eval_csv="/no/file.csv")


def test_eval_csv_replaces_the_test_split(csv_folder, tmp_path):
  other = tmp_path / "other.csv"
  write_csv(other, [["2", "t", "goal"], ["1", "t", "profit"]])
  ds = T.char_csv(manual_dir=str(csv_folder), data_dir=str(tmp_path / "tfds"), eval_csv=str(other))
  assert len(ds.evals["test"]) == 2 and ds.evals["test"][0] == {"text": "goal t", "label": 1}
  write_csv(other, [["4", "t", "d"]])
  with pytest.raises(T.CsvFormatError, match="class 4"):
    T.char_csv(manual_dir=str(csv_folder), data_dir=str(tmp_path / "tfds"), eval_csv=str(other))


def test_stratified_split_is_deterministic_balanced_and_disjoint():
  labels = np.repeat(np.arange(4), [50, 40, 30, 20])
  tr, te = T.stratified_split(labels, 0.2, seed=3)
  tr2, te2 = T.stratified_split(labels, 0.2, seed=3)
  np.testing.assert_array_equal(te, te2)
  assert np.bincount(labels[te]).tolist() == [10, 8, 6, 4]
  assert not set(tr) & set(te) and len(tr) + len(te) == len(labels)
  assert not np.array_equal(T.stratified_split(labels, 0.2, seed=4)[1], te)


def test_subset_file_split(csv_folder, tmp_path):
  ds = T.char_csv(manual_dir=str(csv_folder), data_dir=str(tmp_path / "tfds"), subset_file="train.csv",
                  holdout_fraction=0.25)
  labels, texts = T.read_csv(str(csv_folder / "train.csv"))
  _, te = T.stratified_split(labels, 0.25, 0)
  assert len(ds.evals["test"]) == len(te) and len(ds.train) == 60 - len(te)
  assert ds.evals["test"][0]["text"] == texts[te[0]]
  assert "stratified split" in ds.info["note"]


# ----------------------------------------------------------------------------------------- model

def np_reference(params, idx: np.ndarray, alphabet_size=70) -> np.ndarray:
  """The network in plain numpy: valid 1D convolutions (loops over taps), ReLU, max-pool 3/3, dense."""
  x = np.zeros(idx.shape + (alphabet_size,), np.float64)
  b, n = np.nonzero(idx >= 0)
  x[b, n, idx[b, n]] = 1.0
  for i, (k, pool) in enumerate(char_cnn.LAYERS, start=1):
    w, bias = (np.asarray(params[f"conv{i}"][p], np.float64) for p in ("kernel", "bias"))
    out_len = x.shape[1] - k + 1
    y = np.zeros((x.shape[0], out_len, w.shape[-1])) + bias
    for t in range(k):
      y += x[:, t:t + out_len] @ w[t]
    x = np.maximum(y, 0)
    if pool:
      m = x.shape[1] // pool
      x = x[:, :m * pool].reshape(x.shape[0], m, pool, -1).max(axis=2)
  x = x.reshape(x.shape[0], -1)
  for name in ("fc1", "fc2", "head"):
    x = x @ np.asarray(params[name]["kernel"], np.float64) + np.asarray(params[name]["bias"])
    if name != "head":
      x = np.maximum(x, 0)
  return x


def test_char_cnn_matches_numpy_reference():
  model = char_cnn.CharCNN(num_classes=4, features=8, fc_units=16)
  idx = np.stack([T.quantize("Stocks rally, oil falls.", 300), T.quantize("GOAL! " * 40, 300)])
  v = jit_init(model, jax.random.PRNGKey(0), jnp.asarray(idx))
  got = model.apply(v, jnp.asarray(idx))
  np.testing.assert_allclose(np.asarray(got), np_reference(v["params"], idx), rtol=2e-4, atol=2e-5)
  # a float one-hot input is taken as already encoded
  onehot = np.asarray(char_cnn.encode(jnp.asarray(idx)))
  np.testing.assert_allclose(np.asarray(model.apply(v, jnp.asarray(onehot))), np.asarray(got), rtol=1e-6)


@pytest.mark.parametrize("size,features,units", [("small", 256, 1024), ("large", 1024, 2048)])
def test_param_counts_and_frames(size, features, units):
  registry.load_all()
  model = registry.MODELS.build(f"char_cnn_{size}", num_classes=4)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x),
                          jax.ShapeDtypeStruct((1, 1014), jnp.int8))
  n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))
  convs = (70 * 7 + 1) * features + (features * 7 + 1) * features + 4 * (features * 3 + 1) * features
  fcs = (34 * features + 1) * units + (units + 1) * units + (units + 1) * 4
  assert n == convs + fcs
  assert char_cnn.frame_lengths() == [1008, 336, 330, 110, 108, 106, 104, 102, 34]
  # the paper's std: every parameter (biases too) drawn from N(0, std)
  v = jit_init(model, jax.random.PRNGKey(0), jnp.zeros((1, 1014), jnp.int8)) if size == "small" else None
  if v is not None:
    assert abs(float(jnp.std(v["params"]["fc1"]["kernel"])) - 0.05) < 0.002
    assert abs(float(jnp.std(v["params"]["conv2"]["bias"])) - 0.05) < 0.01


def test_summary_shows_the_papers_frame_lengths():
  from jaxcnn.summary import summary_table
  registry.load_all()
  table = summary_table(registry.MODELS.build("char_cnn_small", num_classes=4), (1014,), "int8")
  for name, frames in (("conv1", 1008), ("pool1", 336), ("conv2", 330), ("pool2", 110), ("conv6", 102),
                       ("pool6", 34)):
    line = next(l for l in table.splitlines() if l.startswith(f"CharCNN/{name} "))
    assert f"[1, {frames}, 256]" in line, line
  assert "11,339,780" in table


def test_too_short_input_is_a_clear_error():
  model = char_cnn.CharCNN(num_classes=4, features=4, fc_units=4)
  with pytest.raises(ValueError, match="too short"):
    model.init(jax.random.PRNGKey(0), jnp.zeros((1, 20), jnp.int8))


# ----------------------------------------------------------------------------------------- end to end

def run_cli(*args, cwd=ROOT):
  return subprocess.run([sys.executable, "launch.py", *args], cwd=cwd, capture_output=True, text=True,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_cli_train_eval_predict(csv_folder, tmp_path):
  common = ["--config=experiments/char_cnn.py:ag_news,runlocal", f"--config.dataset.manual_dir={csv_folder}",
            f"--config.dataset.data_dir={tmp_path / 'tfds'}", f"--workdir={tmp_path / 'run'}",
            "--config.model.features=16", "--config.model.fc_units=32", "--config.dataset.length=200",
            "--config.train.batch_size=16"]
  r = run_cli(*common)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "test error at the final epoch" in r.stdout and "official split: 60 train / 21 test" in r.stdout
  r = run_cli(*common, "--mode=eval")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "test/accuracy" in r.stdout and "Business" in r.stdout
  r = run_cli(*common, "--mode=predict", "--text=goal for the season", "--text=profit")
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.count("->") == 2
  r = run_cli(*common, "--mode=predict")
  assert r.returncode == 2 and "--mode=predict needs inputs" in r.stderr
  r = run_cli(*common[:-1], "--config.dataset.manual_dir=/no/such/dir")
  assert r.returncode == 2 and "does not exist" in r.stderr


# Slow (48 s) and on a knife edge: on 8 devices it learns (error < 0.60); the same recipe on 1 device stays
# at chance (0.750). It needs a recipe with margin before it earns a place in the default run.
@pytest.mark.slow
@pytest.mark.skipif(shared_ag_news() is None, reason="../shared/data/ag_news_subset is not visible here")
def test_short_run_learns_above_chance_on_real_ag_news_rows(tmp_path):
  """A narrow char-CNN on the first 128 frames (the title and the start of the description), Adam, no
  dropout, 6 epochs of the stratified split of the shipped AG News rows: well below the 75 % of chance.
  (The paper's recipe needs far more data and steps to leave chance: see README's char-CNN section.)"""
  from conftest import load_experiment
  from jaxcnn.train import loop
  config = load_experiment("char_cnn", "ag_news_subset")
  config.dataset.manual_dir = shared_ag_news()
  config.dataset.data_dir = str(tmp_path / "tfds")
  config.dataset.length = 128
  config.model.features, config.model.fc_units, config.model.dropout = 64, 128, 0.0
  config.optimizer.name, config.optimizer.learning_rate = "adam", 2e-3
  config.schedule.name = "constant"
  config.train.epochs, config.train.batch_size = 6, 32
  result = loop.train_and_evaluate(config, str(tmp_path / "run"))
  err = result["final"]["test/error"]
  assert err < 0.60, f"test error {err:.3f} on 1,320 test rows: not clearly better than chance (0.75)"
