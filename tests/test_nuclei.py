"""The nuclei data set (jaxcnn/data/nuclei.py): the Data Science Bowl layout, the held-out part, the
training crops, the COCO ground truth, and one clear error for each kind of broken folder."""
import os

import numpy as np
import pytest
from PIL import Image

from jaxcnn.data import DatasetError
from jaxcnn.data import nuclei as N

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_bowl_folder(root, n_images=1, size=(256, 320), seed=0):
  """`root/stage1_train/<id>/{images,masks}/` with disks of radius 6-10 (no overlaps), their count known."""
  rng = np.random.default_rng(seed)
  counts = {}
  for k in range(n_images):
    name = f"img{k:02d}"
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    image = rng.integers(0, 30, (h, w)).astype(np.uint8)
    taken = np.zeros((h, w), bool)
    d = os.path.join(root, "stage1_train", name)
    os.makedirs(os.path.join(d, "images"))
    os.makedirs(os.path.join(d, "masks"))
    n = 0
    for _ in range(400):
      r = int(rng.integers(6, 11))
      cy, cx = int(rng.integers(r, h - r)), int(rng.integers(r, w - r))
      disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
      if (taken & np.pad(disk, 0)).any() or taken[max(cy - r - 2, 0):cy + r + 3, max(cx - r - 2, 0):cx + r + 3].any():
        continue
      taken |= disk
      image[disk] = 200
      Image.fromarray(disk.astype(np.uint8) * 255).save(os.path.join(d, "masks", f"{n:03d}.png"))
      n += 1
      if n == 40:
        break
    Image.fromarray(image).save(os.path.join(d, "images", f"{name}.png"))  # grey, as many Bowl images
    counts[name] = n
  return root, counts


def test_the_layout_the_held_out_band_and_the_coco_ground_truth(tmp_path):
  root, counts = make_bowl_folder(str(tmp_path / "bowl"))
  ds = N.nuclei(manual_dir=root, data_dir=str(tmp_path / "tfds"), crop=64, crops_per_epoch=32)
  assert ds.info["holdout"] == "region" and ds.num_classes == 2 and ds.class_names == ["background", "nucleus"]
  assert f"{counts['img00']} nuclei" in ds.info["note"] and "columns 192-320 of img00" in ds.info["note"]
  # the held-out band (a quarter of 320 columns, rounded up to two 64-wide tiles) down the 256 rows
  val = ds.evals["val"]
  assert [(r["y"], r["x"]) for r in val] == [(y, x) for y in (0, 64, 128, 192) for x in (192, 256)]
  gt = ds.coco_ground_truth("val")
  assert [im["id"] for im in gt["images"]] == list(range(1, 9))
  for k, row in enumerate(val, start=1):
    ex = ds.preprocess(row)
    n = int(ex["gt_valid"].sum())
    assert n == sum(a["image_id"] == k for a in gt["annotations"])
    for box, mask in zip(ex["gt_boxes"][:n], ex["gt_masks"][:n]):  # each box is its mask's extent
      rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
      np.testing.assert_array_equal(box, [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
  # training crops: inside the training part (columns < 192), the same image under rotations / flips
  rng = np.random.default_rng(0)
  seen = set()
  for j in range(20):
    ex = ds.augment(ds.train_preprocess(ds.train[j]), rng)
    assert ex["x"].shape == (64, 64, 3) and ex["gt_masks"].shape == (48, 64, 64)
    assert ex["gt_valid"].sum() == len(np.unique(ex["gt_masks"][ex["gt_valid"]].reshape(-1, 64 * 64), axis=0))
    seen.add(float(ex["x"].sum()))
  assert len(seen) > 10  # random windows


def test_several_images_hold_out_whole_images(tmp_path):
  root, _ = make_bowl_folder(str(tmp_path / "bowl"), n_images=4, size=(128, 128))
  ds = N.nuclei(manual_dir=os.path.join(root, "stage1_train"), data_dir=str(tmp_path / "tfds"), crop=64)
  assert ds.info["holdout"] == "images" and "1 of the images (seed 0)" in ds.info["note"]
  assert len(ds.evals["val"]) == 4  # one held-out 128x128 image in four 64x64 tiles


def _break(tmp_path, how):
  root, _ = make_bowl_folder(str(tmp_path / "bowl"), size=(160, 256))
  d = os.path.join(root, "stage1_train", "img00")
  if how == "size":
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(os.path.join(d, "masks", "999.png"))
  elif how == "no_masks":
    for f in os.listdir(os.path.join(d, "masks")):
      os.remove(os.path.join(d, "masks", f))
  elif how == "not_png":
    with open(os.path.join(d, "masks", "notes.txt"), "w") as f:
      f.write("not a mask")
  elif how == "empty_mask":
    Image.fromarray(np.zeros((160, 256), np.uint8)).save(os.path.join(d, "masks", "999.png"))
  elif how == "no_images":
    os.remove(os.path.join(d, "images", "img00.png"))
    os.rmdir(os.path.join(d, "images"))
  return root


@pytest.mark.parametrize("how,message", [
    ("size", r"999.png is 100x100 but its image img00.png is 256x160: every mask must have its image's size"),
    ("no_masks", r"img00: no masks \(masks/\*.png, one per nucleus\)"),
    ("not_png", r"notes.txt: not a PNG file"),
    ("empty_mask", r"999.png is empty"),
    ("no_images", r"img00 has no images/ folder"),
])
def test_a_broken_folder_is_one_error_naming_the_file(tmp_path, how, message):
  root = _break(tmp_path, how)
  with pytest.raises(DatasetError, match=message):
    N.nuclei(manual_dir=root, data_dir=str(tmp_path / "tfds"), crop=64)
  assert not os.path.exists(tmp_path / "tfds" / "dsb_nuclei")  # nothing half-built


def test_the_shipped_real_image_when_this_checkout_can_see_it(tmp_path):
  from test_text import shared_ag_news
  base = shared_ag_news()
  folder = base and os.path.join(os.path.dirname(base), "nuclei")
  if not folder or not os.path.isdir(folder):
    pytest.skip("../shared/data/nuclei is not visible here (the synthetic folders above test the builder)")
  ds = N.nuclei(manual_dir=folder, data_dir=str(tmp_path / "tfds"))
  assert "1 image(s), 102 nuclei" in ds.info["note"] and "columns 256-384" in ds.info["note"]
  assert len(ds.evals["val"]) == 4 and len(ds.coco_ground_truth("val")["annotations"]) == 38


def test_a_short_run_learns_to_segment_the_held_out_nuclei(tmp_path):
  """A short nuclei run that learns, as a user runs it: `launch.py --config=experiments/mask_rcnn.py:nuclei`
  (the small FPN network from scratch, with the config's kernels: Eigen's) on a folder in the Bowl's
  layout, 8 epochs of 64 random 64 x 64 crops (64 steps), COCO AP on the held-out band, which training
  never sees. An empty prediction scores 0; seeds 0, 1, 2 (`JAXCNN_TEST_SEED`) gave segm AP
  0.601 / 0.560 / 0.542, segm AP50 0.800 / 0.774 / 0.788, bbox AP50 0.822 / 0.774 / 0.809 (in-process
  under YNNPACK, before the config chose Eigen: 0.591 / 0.578 / 0.585, 0.801 / 0.812 / 0.806,
  0.839 / 0.812 / 0.829; 4 epochs: segm AP 0.04-0.21), hence the thresholds below."""
  import json

  from test_cli import launch
  bowl = make_bowl_folder(str(tmp_path / "bowl"))[0]
  run = tmp_path / "run"
  seed = os.environ.get("JAXCNN_TEST_SEED")
  r = launch("--config=experiments/mask_rcnn.py:nuclei", f"--config.dataset.manual_dir={bowl}",
             f"--config.dataset.data_dir={tmp_path / 'tfds'}", "--config.dataset.crop=64",
             "--config.dataset.crops_per_epoch=64", "--config.train.epochs=8",
             "--config.train.eval_every_epochs=8", "--config.checkpoint.every_epochs=8",
             "--config.predict.overlays=0", f"--workdir={run}",
             *([f"--config.seed={seed}"] if seed else []))
  assert r.returncode == 0, r.stdout + r.stderr
  assert "data nuclei (64 train, 8 val)" in r.stdout, r.stdout  # the held-out band, as 64 x 64 tiles
  if "JAXCNN_CPU_CONVOLUTIONS" not in os.environ:  # (a user's choice wins over the config's, by design)
    assert "eigen convolutions" in r.stdout, r.stdout
  with open(run / "metrics.jsonl") as f:
    final = [json.loads(line) for line in f][-1]
  print({k: round(v, 3) for k, v in final.items() if k in ("val/segm/AP", "val/segm/AP50", "val/bbox/AP50")})
  assert final["epoch"] == 8
  assert final["val/segm/AP"] >= 0.35 and final["val/segm/AP50"] >= 0.6 and final["val/bbox/AP50"] >= 0.6, final
  # per-class AP (one class here: the overall AP) in the metrics, the report and --mode=eval
  assert final["val/segm/AP-nucleus"] == pytest.approx(final["val/segm/AP"], abs=1e-9)
  assert final["val/bbox/AP-nucleus"] == pytest.approx(final["val/bbox/AP"], abs=1e-9)
  report = (run / "report.md").read_text()
  assert f"| nucleus | {100 * final['val/segm/AP']:.1f} | {100 * final['val/bbox/AP']:.1f} |" in report
  ev = launch("--config=experiments/mask_rcnn.py:nuclei", f"--config.dataset.manual_dir={bowl}",
              f"--config.dataset.data_dir={tmp_path / 'tfds'}", "--config.dataset.crop=64",
              "--config.dataset.crops_per_epoch=64", "--mode=eval", f"--workdir={run}",
              *([f"--config.seed={seed}"] if seed else []))
  assert ev.returncode == 0, ev.stderr[-3000:]
  assert f"val/segm AP per class: nucleus {final['val/segm/AP']:.3f}" in ev.stdout, ev.stdout
