"""MNIST from IDX files: the reader, the TFDS builder, checksums, clear errors, and the LeNet-5
experiment through launch.py (train, --mode=eval on any IDX pair, --mode=cam)."""
import gzip
import hashlib
import json
import os

import numpy as np
import pytest

from jaxcnn.data.base import DatasetError
from jaxcnn.data.mnist import IdxFormatError, mnist, read_idx
from test_cli import launch


def write_idx(path, array):
  codes = {np.uint8: 0x08, np.int32: 0x0C}
  a = np.ascontiguousarray(array)
  header = bytes([0, 0, codes[a.dtype.type], a.ndim]) + np.asarray(a.shape, ">i4").tobytes()
  data = header + a.astype(a.dtype.newbyteorder(">") if a.dtype.itemsize > 1 else a.dtype).tobytes()
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(data)


def fake_digits(n, seed):
  """Each label lights a different 6x6 square of a 28x28 image, plus noise: learnable in a few steps."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, n).astype(np.uint8)
  images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
  for i, c in enumerate(labels):
    r, k = 2 + 8 * (c // 3), 2 + 8 * (c % 3)
    images[i, r:r + 6, k:k + 6] = 255
  return images, labels


def make_mnist_dir(root, n_train=64, n_test=24, part=True, sums=True):
  os.makedirs(root, exist_ok=True)
  test = "t10k-part" if part else "t10k"
  files = {}
  for split, n, seed in (("train", n_train, 0), (test, n_test, 1)):
    images, labels = fake_digits(n, seed)
    files[f"{split}-images-idx3-ubyte.gz"] = images
    files[f"{split}-labels-idx1-ubyte.gz"] = labels
  for name, a in files.items():
    write_idx(os.path.join(root, name), a)
  if sums:
    with open(os.path.join(root, "SHA256SUMS"), "w") as f:
      for name in files:
        f.write(f"{hashlib.sha256(open(os.path.join(root, name), 'rb').read()).hexdigest()}  {name}\n")
  return root


def test_read_idx_roundtrip_and_format_errors(tmp_path):
  a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  for name in ("a.idx", "a.idx.gz"):
    write_idx(str(tmp_path / name), a)
    np.testing.assert_array_equal(read_idx(str(tmp_path / name)), a)
  raw = open(tmp_path / "a.idx", "rb").read()
  (tmp_path / "short.idx").write_bytes(raw[:-5])
  with pytest.raises(IdxFormatError, match=r"short.idx: 35 bytes, the header \(2, 3, 4\) needs 40"):
    read_idx(str(tmp_path / "short.idx"))
  (tmp_path / "bad.idx").write_bytes(b"PK\x03\x04" + raw[4:])
  with pytest.raises(IdxFormatError, match="bad.idx: not an IDX file"):
    read_idx(str(tmp_path / "bad.idx"))


def test_builder_reads_a_manual_dir_and_preprocesses_like_the_paper(tmp_path):
  root = make_mnist_dir(str(tmp_path / "mnist"))
  ds = mnist(manual_dir=root, data_dir=str(tmp_path / "tfds"))
  assert (len(ds.train), len(ds.evals["test"]), ds.num_classes) == (64, 24, 10)
  assert ds.info["partial_test_set"] and "24 of the official 10,000" in ds.info["note"]
  images, labels = fake_digits(64, 0)
  ex = ds.train[5]
  np.testing.assert_array_equal(ex["image"][..., 0], images[5])
  assert int(ex["label"]) == labels[5]
  x = ds.preprocess(ex)["x"]
  assert x.shape == (32, 32, 1)
  # LeCun et al. 1998: background (and the 2-pixel border) -0.1, full ink 1.175.
  assert x[0, 0, 0] == pytest.approx(-0.1) and x.max() == pytest.approx(1.175)
  unit = mnist(manual_dir=root, data_dir=str(tmp_path / "tfds"), pad_to=28, normalize="unit")
  np.testing.assert_allclose(unit.preprocess(ex)["x"][..., 0], images[5] / 255.0, rtol=1e-6)


def test_data_errors_name_the_problem(tmp_path):
  with pytest.raises(DatasetError, match="pass --config.dataset.manual_dir"):
    mnist()
  with pytest.raises(DatasetError, match="does not exist"):
    mnist(manual_dir=str(tmp_path / "nope"))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(DatasetError, match="MNIST train files not found"):
    mnist(manual_dir=str(empty))
  root = make_mnist_dir(str(tmp_path / "corrupt"))
  with open(os.path.join(root, "train-labels-idx1-ubyte.gz"), "ab") as f:
    f.write(b"x")
  with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte.gz: sha256 .* does not match"):
    mnist(manual_dir=root, data_dir=str(tmp_path / "tfds"))
  assert not os.path.exists(tmp_path / "tfds" / "mnist_idx")  # nothing half-built
  with pytest.raises(DatasetError, match="must be 'IMAGES,LABELS'"):
    mnist(manual_dir=make_mnist_dir(str(tmp_path / "ok")), data_dir=str(tmp_path / "tfds2"),
          eval_files="only-one.gz")


def test_lenet_train_eval_on_any_idx_pair_and_cam_through_the_cli(tmp_path):
  root = make_mnist_dir(str(tmp_path / "mnist"), part=False, sums=False)
  other = make_mnist_dir(str(tmp_path / "other"), n_test=30, part=False, sums=False)
  wd, tfds = str(tmp_path / "run"), str(tmp_path / "tfds")
  common = ("--config=experiments/lenet_mnist.py:gap,runlocal", f"--config.dataset.manual_dir={root}",
            "--config.train.batch_size=16")
  r = launch(*common, f"--workdir={wd}", tfds_dir=tfds)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "test error at the final epoch (1, the paper's protocol)" in r.stdout
  assert "test split = t10k-images-idx3-ubyte.gz (24 images)" in r.stdout
  res = json.load(open(os.path.join(wd, "result.json")))
  assert res["num_params"] == 156 + 12 + 1516 + (9 * 16 * 120 + 120) + (120 * 10 + 10)
  ev = launch(*common, "--mode=eval", f"--workdir={wd}",
              f"--config.dataset.eval_files={other}/t10k-images-idx3-ubyte.gz,"
              f"{other}/t10k-labels-idx1-ubyte.gz", tfds_dir=tfds)
  assert ev.returncode == 0, ev.stderr[-3000:]
  assert "t10k-images-idx3-ubyte.gz (30 images)" in ev.stdout and "test/accuracy" in ev.stdout
  confusion = [line.split() for line in ev.stdout.splitlines() if line.startswith("    ")]
  assert confusion[0] == [str(d) for d in range(10)]  # header: the class names, then a row per class
  assert [row[0] for row in confusion[1:]] == confusion[0]
  assert sum(int(v) for row in confusion[1:] for v in row[1:]) == 30
  cam = launch(*common, "--mode=cam", "--cam_indices=0,3,5", f"--cam_out={tmp_path}/cam.png",
               f"--workdir={wd}", tfds_dir=tfds)
  assert cam.returncode == 0, cam.stderr[-3000:]
  assert os.path.getsize(tmp_path / "cam.png") > 10_000 and "#3: true" in cam.stdout
  bad = launch(*common, "--mode=cam", "--cam_indices=0,99", f"--workdir={wd}", tfds_dir=tfds)
  assert bad.returncode == 2 and "--cam_indices [99] out of range: the test split has 24" in bad.stderr
