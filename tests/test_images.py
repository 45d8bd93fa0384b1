"""Image data: CIFAR-10 (python and binary files), an ImageNet-style folder, synthetic images, the
moving-shapes videos, and per-epoch augmentation that a resumed run reproduces."""
import os
import pickle

import numpy as np
import pytest

from jaxcnn.data import pipeline
from jaxcnn.data.base import DatasetError
from jaxcnn.data.images import cifar10, image_folder, pad_crop_flip, synthetic_images
from jaxcnn.data.moving_shapes import make_clip, moving_shapes


def fake_cifar(root, binary=False, per_batch=6):
  rng = np.random.default_rng(0)
  folder = os.path.join(root, "cifar-10-batches-bin" if binary else "cifar-10-batches-py")
  os.makedirs(folder)
  expected = []
  for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    data = rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8)   # rows: R plane, G plane, B plane
    labels = rng.integers(0, 10, per_batch)
    expected.append((data, labels))
    if binary:
      rec = np.concatenate([labels[:, None].astype(np.uint8), data], axis=1)
      rec.tofile(os.path.join(folder, name + ".bin"))
    else:
      with open(os.path.join(folder, name), "wb") as f:
        pickle.dump({b"data": data, b"labels": labels.tolist()}, f)
  return expected


@pytest.mark.parametrize("binary", [False, True])
def test_cifar10_reads_python_and_binary_files_channels_last(tmp_path, binary):
  expected = fake_cifar(str(tmp_path), binary)
  ds = cifar10(manual_dir=str(tmp_path))
  assert (len(ds.train), len(ds.evals["test"]), ds.num_classes) == (30, 6, 10)
  data, labels = expected[1]  # data_batch_2, first row = training example 6
  ex = ds.train[6]
  assert int(ex["label"]) == labels[0]
  np.testing.assert_array_equal(ex["image"][..., 0].ravel(), data[0, :1024])     # red plane
  np.testing.assert_array_equal(ex["image"][3, 4], data[0, [3 * 32 + 4, 1024 + 3 * 32 + 4, 2048 + 3 * 32 + 4]])
  x = np.stack([ds.preprocess(ds.train[i])["x"] for i in range(30)])
  np.testing.assert_allclose(x.reshape(-1, 3).mean(0), 0, atol=1e-4)  # train mean/std normalisation
  np.testing.assert_allclose(x.reshape(-1, 3).std(0), 1, atol=1e-3)


def test_cifar10_errors(tmp_path):
  with pytest.raises(DatasetError, match="pass --config.dataset.manual_dir"):
    cifar10()
  with pytest.raises(DatasetError, match="CIFAR-10 not found in"):
    cifar10(manual_dir=str(tmp_path))
  fake_cifar(str(tmp_path), binary=True)
  path = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
  path.write_bytes(path.read_bytes()[:-7])
  with pytest.raises(DatasetError, match="data_batch_3.bin: .* not a whole number of 3,073-byte"):
    cifar10(manual_dir=str(tmp_path))


def test_pad_crop_flip_is_a_window_of_the_padded_image():
  rng0 = np.random.default_rng(0)
  x = rng0.normal(size=(8, 8, 2)).astype(np.float32)
  padded = np.pad(x, ((2, 2), (2, 2), (0, 0)))
  windows = {(i, j, f): (padded[i:i + 8, j:j + 8][:, ::-1] if f else padded[i:i + 8, j:j + 8])
             for i in range(5) for j in range(5) for f in (0, 1)}
  seen = set()
  for seed in range(40):
    y = pad_crop_flip(x, np.random.default_rng(seed), pad=2)
    match = [k for k, w in windows.items() if np.array_equal(w, y)]
    assert len(match) == 1
    seen.add(match[0])
  assert {k[2] for k in seen} == {0, 1} and len({k[:2] for k in seen}) > 5


def test_augmentation_changes_every_epoch_and_is_reproducible():
  ds = synthetic_images(shape=(8, 8, 3), num_classes=2, num_train=4, num_test=2)
  aug = lambda ex, rng: {**ex, "x": pad_crop_flip(ex["x"], rng, pad=2)}  # noqa: E731

  def epochs():
    it = pipeline.train_iterator(ds.train, ds.preprocess, batch_size=4, seed=3, num_epochs=2, augment=aug)
    return [next(it) for _ in range(2)]
  a, b = epochs(), epochs()
  np.testing.assert_array_equal(a[0]["x"], b[0]["x"])   # same seed, same augmentations
  order = [np.argsort(e["label"] * 10 + np.arange(4)) for e in a]
  assert not np.array_equal(a[0]["x"][order[0]], a[1]["x"][order[1]])  # epoch 2 draws anew


def test_image_folder_decodes_crops_and_normalises(tmp_path):
  from PIL import Image
  rng = np.random.default_rng(0)
  for split, n in (("train", 3), ("val", 2)):
    for cls in ("n01", "n02"):
      os.makedirs(tmp_path / split / cls)
      for i in range(n):
        arr = rng.integers(0, 256, (40 + 7 * i, 50, 3)).astype(np.uint8)
        Image.fromarray(arr).save(tmp_path / split / cls / f"{i}.{'jpg' if i % 2 else 'png'}")
  ds = image_folder(manual_dir=str(tmp_path), size=32, resize=36)
  assert ds.class_names == ["n01", "n02"] and (len(ds.train), len(ds.evals["test"])) == (6, 4)
  ev = ds.preprocess(ds.evals["test"][3])
  assert ev["x"].shape == (32, 32, 3) and ev["label"] == 1 and ev["x"].dtype == np.float32
  it = pipeline.train_iterator(ds.train, ds.train_preprocess, batch_size=3, seed=0, num_epochs=1,
                               augment=ds.augment)
  batch = next(it)
  assert batch["x"].shape == (3, 32, 32, 3) and set(batch) == {"x", "label", "mask"}
  (tmp_path / "train" / "n01" / "broken.jpg").write_bytes(b"not a jpeg")
  ds = image_folder(manual_dir=str(tmp_path), size=32, resize=36)
  bad = [i for i in range(len(ds.train)) if ds.train[i]["path"].endswith("broken.jpg")][0]
  with pytest.raises(DatasetError, match="broken.jpg: cannot decode the image"):
    ds.preprocess(ds.train[bad])
  with pytest.raises(DatasetError, match="expects manual_dir/train/<class>"):
    image_folder(manual_dir=str(tmp_path / "train"))


def test_moving_shapes_frames_do_not_tell_the_class_but_motion_does(tmp_path):
  rng = np.random.default_rng(0)
  clips = {c: np.stack([make_clip(rng, c, 8, 24) for _ in range(60)]) for c in range(4)}
  # Per-frame statistics agree across classes (the start is uniform on a torus) ...
  means = [clips[c][:, 0].astype(np.float32).mean() for c in range(4)]
  assert np.ptp(means) < 0.1 * np.mean(means)
  # ... while frame-to-frame changes move in the class's direction: pixels that light up (leading edge)
  # lie ahead of those that go dark (trailing edge); circular means, since the frame wraps around.
  def axis_mean(mask, axis, size=24):
    ang = 2 * np.pi * np.nonzero(mask)[axis] / size
    return np.arctan2(np.sin(ang).sum(), np.cos(ang).sum())
  for c, v in enumerate([(0, 1), (0, -1), (1, 0), (-1, 0)]):
    for clip in clips[c][:10, ..., 0].astype(np.float32):
      d = clip[1:] - clip[:-1]
      lead, trail = d > 90, d < -90
      for axis in (0, 1):
        if v[axis]:
          step = np.angle(np.exp(1j * (axis_mean(lead, axis + 1) - axis_mean(trail, axis + 1))))
          assert np.sign(step) == v[axis]
  ds = moving_shapes(num_train=8, num_test=4, frames=4, size=16, data_dir=str(tmp_path))
  assert ds.preprocess(ds.train[0])["x"].shape == (4, 16, 16, 1)
  assert sorted(int(ds.train[i]["label"]) for i in range(8)) == [0, 0, 1, 1, 2, 2, 3, 3]
  again = moving_shapes(num_train=8, num_test=4, frames=4, size=16, data_dir=str(tmp_path / "other"))
  np.testing.assert_array_equal(ds.train[5]["image"], again.train[5]["image"])  # seeded


def test_an_image_folders_training_files_are_listed_only_when_a_mode_reads_them(tmp_path):
  """--mode=eval/predict/cam build no training split: the folder's class names come from its training
  sub-folders, its files are listed on first use (ImageNet's 1.28 million files, for a training run only)."""
  from PIL import Image

  from conftest import load_experiment
  from jaxcnn.train.runtime import Runtime
  for split, n in (("train", 3), ("val", 2)):
    for cls in ("n01", "n02"):
      os.makedirs(tmp_path / split / cls)
      for i in range(n):
        Image.fromarray(np.full((40, 50, 3), 60 * i, np.uint8)).save(tmp_path / split / cls / f"{i}.png")
  ds = image_folder(manual_dir=str(tmp_path), size=32, resize=36)
  assert ds.class_names == ["n01", "n02"] and not ds.train.made
  assert ds.example()["x"].shape == (32, 32, 3) and not ds.train.made  # an eval example initialises
  assert len(ds.train) == 6 and ds.train.made and ds.train[5]["label"] == 1
  c = load_experiment("imagenet", "resnet18")
  c.dataset.update(manual_dir=str(tmp_path), size=32, resize=36)
  rt = Runtime(c, str(tmp_path / "run"), inference=True)
  assert not rt.c.dataset.train.made and rt.num_train == 0 and rt.schedule is None
  assert Runtime(c, str(tmp_path / "run")).num_train == 6  # training lists them
