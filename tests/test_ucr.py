import os
import shutil

import numpy as np
import pytest

from jaxcnn.data import DatasetError, ucr


def test_gunpoint_official_split(tfds_dir):
  ds = ucr.ucr_uea("GunPoint", data_dir=tfds_dir)
  assert (len(ds.train), len(ds.evals["test"])) == (50, 150)
  assert ds.num_classes == 2 and ds.class_names == ["1", "2"]
  ex = ds.example()
  assert ex["x"].shape == (150, 1) and ex["x"].dtype == np.float32 and "valid" not in ex
  # Paper normalisation: the *training* set's global mean/std -> all train values have mean 0, std 1.
  xs = np.stack([ds.preprocess(ds.train[i])["x"] for i in range(len(ds.train))])
  assert abs(xs.mean()) < 1e-5 and abs(xs.std() - 1) < 1e-5
  # ... and test values are normalised with the same (train) statistics, so theirs are not exactly 0/1.
  xt = np.stack([ds.preprocess(ds.evals["test"][i])["x"] for i in range(150)])
  raw = np.stack([ds.evals["test"][i]["series"] for i in range(150)])
  np.testing.assert_allclose(xt, (raw - ds.info["train_mean"]) / ds.info["train_std"], rtol=1e-5, atol=1e-5)
  counts = np.bincount([ds.train[i]["label"] for i in range(50)])
  assert counts.tolist() == [24, 26]  # GunPoint's official training split


def test_per_series_normalisation(tfds_dir):
  ds = ucr.ucr_uea("GunPoint", normalize="per_series", data_dir=tfds_dir)
  for i in (0, 7, 49):
    x = ds.preprocess(ds.train[i])["x"]
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-4


def test_variable_length_padding_and_mask(tfds_dir):
  ds = ucr.ucr_uea("JapaneseVowels", data_dir=tfds_dir)
  assert (len(ds.train), len(ds.evals["test"]), ds.num_classes) == (270, 370, 9)
  assert not ds.info["equal_length"] and ds.info["channels"] == 12
  lengths = set()
  for i in range(20):
    ex = ds.preprocess(ds.train[i])
    n = int(ex["valid"].sum())
    lengths.add(n)
    assert ex["x"].shape == (ds.info["length"], 12) and not ex["x"][n:].any()
    assert ex["valid"][:n].all()
  assert len(lengths) > 1


def test_missing_data_set_lists_available(tfds_dir):
  with pytest.raises(DatasetError) as e:
    ucr.ucr_uea("GunPint", data_dir=tfds_dir)
  assert "'GunPint' not found" in str(e.value) and "GunPoint" in str(e.value)
  assert "ItalyPowerDemand" in str(e.value)
  with pytest.raises(DatasetError, match="manual_dir=/no/such/dir does not exist"):
    ucr.ucr_uea("GunPoint", manual_dir="/no/such/dir", data_dir=tfds_dir)
  with pytest.raises(DatasetError, match="normalize='zscore' is not one of"):
    ucr.ucr_uea("GunPoint", normalize="zscore", data_dir=tfds_dir)


def test_manual_dir_copy_is_built_separately(tmp_path, tfds_dir):
  """A user's own copy (here: GunPoint with one training label changed) is read, not the cached one."""
  src = os.path.join(ucr.shipped_dir(), "GunPoint")
  dst = tmp_path / "archive" / "GunPoint"
  dst.mkdir(parents=True)
  shutil.copy(os.path.join(src, "GunPoint_TEST.ts"), dst)
  lines = open(os.path.join(src, "GunPoint_TRAIN.ts")).read().splitlines()
  first = next(i for i, ln in enumerate(lines) if ln and ln[0] not in "#@")
  lab = lines[first].rsplit(":", 1)
  lines[first] = lab[0] + ":" + ("2" if lab[1] == "1" else "1")
  (dst / "GunPoint_TRAIN.ts").write_text("\n".join(lines) + "\n")
  mine = ucr.ucr_uea("GunPoint", manual_dir=str(tmp_path / "archive"), data_dir=tfds_dir)
  shipped = ucr.ucr_uea("GunPoint", data_dir=tfds_dir)
  assert mine.info["tfds_dir"] != shipped.info["tfds_dir"]
  diffs = sum(mine.train[i]["label"] != shipped.train[i]["label"] for i in range(50))
  assert diffs == 1
