"""U-Net road segmentation: model shapes, the road metrics against hand-made masks and numpy references,
tiled prediction, the road data builder and the CLI (train, eval, predict)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import subprocess_env, jit_init
from jaxcnn import segment
from jaxcnn.data import DatasetError
from jaxcnn.data import roads as R
from jaxcnn.models.unet import unet
from jaxcnn.tasks import segmentation as S

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synthetic_scene(rng: np.random.Generator, size: int):
  """A grass-and-roofs texture with 1-3 straight grey roads of random width; mask 255 on the roads."""
  img = np.stack([rng.normal(m, 18, (size, size)) for m in (70, 110, 60)], -1)
  for _ in range(rng.integers(3, 7)):  # roofs: bright rectangles that are not roads
    y, x, h, w = rng.integers(0, size, 4) // 1
    img[y:y + 4 + h % 12, x:x + 4 + w % 12] = rng.uniform(150, 230)
  mask = np.zeros((size, size), np.uint8)
  for _ in range(rng.integers(1, 4)):
    width, pos = int(rng.integers(3, 8)), int(rng.integers(0, size - 8))
    if rng.random() < 0.5:
      mask[:, pos:pos + width] = 255
    else:
      mask[pos:pos + width, :] = 255
  road = mask > 0
  img[road] = np.stack([rng.normal(128, 10, road.sum())] * 3, -1)
  return img.clip(0, 255).astype(np.uint8), mask


def make_road_folder(root: str, n: int = 12, size: int = 48, seed: int = 0, layout: str = "epfl"):
  """A tiny road data set in the ETH/EPFL (`images/`, `groundtruth/`) or Massachusetts layout."""
  from PIL import Image
  rng = np.random.default_rng(seed)
  if layout == "epfl":
    dirs = {None: ("images", "groundtruth")}
    ext = (".png", ".png")
  else:
    dirs = {s: (f"{s}/sat", f"{s}/map") for s in ("train", "valid", "test")}
    ext = (".tiff", ".tif")
  for split, (img_dir, mask_dir) in dirs.items():
    os.makedirs(os.path.join(root, img_dir), exist_ok=True)
    os.makedirs(os.path.join(root, mask_dir), exist_ok=True)
    for i in range(n if split in (None, "train") else max(2, n // 4)):
      img, mask = synthetic_scene(rng, size)
      Image.fromarray(img).save(os.path.join(root, img_dir, f"tile_{i:03d}{ext[0]}"))
      Image.fromarray(mask).save(os.path.join(root, mask_dir, f"tile_{i:03d}{ext[1]}"))
  return root


# ------------------------------------------------------------------------------------------- model

@pytest.mark.parametrize("shape,depth,upsample", [((1, 32, 48, 3), 2, "transposed"),
                                                   ((2, 48, 16, 4), 3, "resize")])
def test_unet_output_shape_equals_input_shape(shape, depth, upsample):
  model = unet(depth=depth, features=4, upsample=upsample)
  x = jax.ShapeDtypeStruct(shape, jnp.float32)  # shapes only: nothing is compiled or run
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  y = jax.eval_shape(model.apply, variables, x)
  assert y.shape == shape[:3] + (1,) and y.dtype == jnp.float32


def test_unet_rejects_sizes_not_divisible_by_its_stride():
  model = unet(depth=3, features=4)
  with pytest.raises(ValueError, match="multiples of 2\\*\\*depth = 8"):
    model.init(jax.random.key(0), jnp.ones((1, 36, 40, 3)))


def test_unet_parameter_count_matches_the_closed_form():
  """The paper's U-Net (64 maps, depth 4, no BatchNorm): counted from the architecture by hand."""
  def conv(k, cin, cout):
    return k * k * cin * cout + cout
  f, total, cin = 64, 0, 3
  for level in range(5):  # 4 encoder levels + the bottleneck
    c = f * 2 ** level
    total += conv(3, cin, c) + conv(3, c, c)
    cin = c
  for level in reversed(range(4)):
    c = f * 2 ** level
    total += conv(2, 2 * c, c)  # up-convolution halves the maps
    total += conv(3, 2 * c, c) + conv(3, c, c)  # after concatenating the skip
  total += conv(1, f, 1)
  model = unet(features=64, norm=None)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 16, 16, 3)))
  assert sum(np.prod(p.shape) for p in jax.tree.leaves(shapes["params"])) == total == 31_031_745


# ----------------------------------------------------------------------------------------- metrics

def _hist(prob, gt, relax=3, bins=100):
  prob, gt = jnp.asarray(prob, jnp.float32)[None], jnp.asarray(gt, jnp.float32)[None]
  return jax.device_get(S.relaxed_histograms(prob, gt, jnp.ones_like(gt), relax, bins))


def test_breakeven_of_a_perfect_and_of_a_shifted_prediction():
  gt = np.zeros((40, 40))
  gt[:, 20] = 1
  assert S.breakeven(_hist(gt, gt))[0] == pytest.approx(1.0)
  # Two pixels off: no pixel overlaps (F1 0), but within the 3-pixel slack both ways.
  shifted = np.roll(gt, 2, axis=1)
  assert S.breakeven(_hist(shifted, gt))[0] == pytest.approx(1.0)
  assert S.breakeven(_hist(shifted, gt, relax=1))[0] == pytest.approx(0.0)
  assert S.breakeven(_hist(np.roll(gt, 5, axis=1), gt))[0] == pytest.approx(0.0)


def test_breakeven_where_precision_and_recall_cross():
  """True roads A (p = 0.9) and C (p = 0.3), a false road B (p = 0.6) far from both, equal lengths:
  t <= 0.3: P = 2/3, R = 1; 0.3 < t <= 0.6: P = R = 1/2; t > 0.6: P = 1, R = 1/2. Breakeven 0.5."""
  gt, prob = np.zeros((30, 60)), np.zeros((30, 60))
  gt[:, 5] = gt[:, 55] = 1
  prob[:, 5], prob[:, 30], prob[:, 55] = 0.9, 0.6, 0.3
  t, p, r = S.relaxed_curve(_hist(prob, gt))
  assert p[t == 0.2][0] == pytest.approx(2 / 3) and r[t == 0.2][0] == pytest.approx(1.0)
  assert p[t == 0.5][0] == pytest.approx(0.5) and r[t == 0.5][0] == pytest.approx(0.5)
  assert p[t == 0.8][0] == pytest.approx(1.0) and r[t == 0.8][0] == pytest.approx(0.5)
  value, threshold = S.breakeven(_hist(prob, gt))
  assert value == pytest.approx(0.5) and 0.3 < threshold <= 0.61


def _relaxed_loop(pred, gt, relax):
  """Saito et al.'s definition as plain loops: counts of predicted pixels with a true road pixel in their
  (2 relax + 1)^2 window, and of true road pixels with a predicted one in theirs."""
  h, w = gt.shape
  near_p = near_r = 0
  for y in range(h):
    for x in range(w):
      win = (slice(max(0, y - relax), y + relax + 1), slice(max(0, x - relax), x + relax + 1))
      near_p += pred[y, x] and gt[win].any()
      near_r += gt[y, x] and pred[win].any()
  return near_p / max(pred.sum(), 1), near_r / max(gt.sum(), 1)


def test_relaxed_precision_recall_match_a_plain_loop():
  rng = np.random.default_rng(0)
  gt = np.zeros((24, 28), bool)
  gt[rng.integers(0, 24, 30), rng.integers(0, 28, 30)] = True
  prob = rng.random((24, 28)) ** 3
  t, p, r = S.relaxed_curve(_hist(prob, gt, relax=2, bins=10))
  for k in (1, 3, 5, 8):
    want_p, want_r = _relaxed_loop(prob >= k / 10, gt, 2)
    assert p[k - 1] == pytest.approx(want_p) and r[k - 1] == pytest.approx(want_r)


def test_patch_f1_matches_the_challenge_rule():
  """The ETH/EPFL rule: a 16x16 patch is road when its mean > 0.25."""
  rng = np.random.default_rng(1)
  prob = rng.random((64, 48)) ** 2
  gt = (rng.random((64, 48)) < 0.3).astype(np.float32)
  label = lambda m: np.array([[m[i:i + 16, j:j + 16].mean() > 0.25 for j in range(0, 48, 16)]  # noqa: E731
                              for i in range(0, 64, 16)])
  p, g = label((prob >= 0.5).astype(float)), label(gt)
  c = jax.device_get(S.patch_counts(jnp.asarray(prob)[None], jnp.asarray(gt)[None], jnp.ones((1, 64, 48))))
  assert (c["patch_tp"], c["patch_fp"], c["patch_fn"]) == ((p & g).sum(), (p & ~g).sum(), (~p & g).sum())


def test_loss_is_the_mean_bce_over_valid_pixels_and_ignores_padding():
  task = S.Segmentation()
  rng = np.random.default_rng(2)
  z = rng.normal(size=(2, 8, 8, 1)).astype(np.float32)
  y = (rng.random((2, 8, 8, 1)) < 0.4).astype(np.float32)
  valid = np.ones((2, 8, 8), bool)
  valid[:, 6:] = False
  loss = np.asarray(task.loss(jnp.asarray(z), {"label": y, "pixel_valid": valid}))
  p = 1 / (1 + np.exp(-z[..., 0].astype(np.float64)))
  bce = -(y[..., 0] * np.log(p) + (1 - y[..., 0]) * np.log(1 - p))
  np.testing.assert_allclose(loss, [bce[i][valid[i]].mean() for i in range(2)], rtol=1e-5)
  z2 = z.copy()
  z2[:, 6:] = 100.0  # whatever the model says on padding does not matter
  np.testing.assert_allclose(task.loss(jnp.asarray(z2), {"label": y, "pixel_valid": valid}), loss, rtol=1e-6)
  # + 0.5 x soft Dice, 1 - (2 sum(p y) + 1) / (sum(p) + sum(y) + 1) over the valid pixels (smoothing 1).
  dice_task = S.Segmentation(dice_weight=0.5)
  pv, yv = [p[i][valid[i]] for i in range(2)], [y[i, ..., 0][valid[i]] for i in range(2)]
  dice = [1 - (2 * (a * b).sum() + 1) / (a.sum() + b.sum() + 1) for a, b in zip(pv, yv)]
  np.testing.assert_allclose(dice_task.loss(jnp.asarray(z2), {"label": y, "pixel_valid": valid}),
                             loss + 0.5 * np.array(dice), rtol=1e-5)
  sums = jax.device_get(task.metric_sums(jnp.asarray(z), {"label": y, "pixel_valid": valid},
                                         jnp.ones(2, bool), confusion=True))
  assert sums["tp"] + sums["fp"] + sums["fn"] + sums["tn"] == valid.sum()


# ------------------------------------------------------------------------------------ tiled predict

def test_tiled_prediction_equals_one_pass_over_the_whole_image():
  """Windows on the stride grid, margins wider than the network's reach (depth 1: receptive field 20,
  10 pixels each side): the stitched result is the single-pass result, also for a size that needs
  padding. (Depth 1 compiles in half the time of depth 2; tiling does not depend on the depth.)"""
  model = unet(depth=1, features=4)
  rng = np.random.default_rng(3)
  x = rng.normal(size=(71, 89, 3)).astype(np.float32)  # padded to 72 x 90 inside
  variables = jit_init(model, jax.random.key(0), jnp.ones((1, 32, 32, 3)))  # jitted: eager init is slow
  variables = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(jax.random.key(1), v.shape), variables)
  apply = jax.jit(lambda a: model.apply(variables, a))
  full = np.zeros((72, 90, 3), np.float32)
  full[:71, :89] = x
  want = np.asarray(apply(full[None]))[0, :71, :89]
  got = segment.predict_tiled(lambda a: np.asarray(apply(a)), x, tile=64, margin=12, stride=2)
  assert got.shape == (71, 89, 1)
  np.testing.assert_allclose(got, want, atol=1e-5)
  # A margin narrower than the network's reach changes pixels near the seams (so the test can fail).
  rough = segment.predict_tiled(lambda a: np.asarray(apply(a)), x, tile=64, margin=4, stride=2)  # same shapes
  assert np.abs(rough - want).max() > 1e-3


def test_overlay_colours():
  rgb = np.zeros((1, 4, 3), np.uint8)
  pred = np.array([[1, 0, 1, 0]], bool)
  gt = np.array([[1, 1, 0, 0]], bool)
  out = segment.overlay(rgb, pred, gt, alpha=1.0)
  assert [tuple(c) for c in out[0]] == [segment.TP_COLOR, segment.FN_COLOR, segment.FP_COLOR, (0, 0, 0)]


# -------------------------------------------------------------------------------------------- data

def test_epfl_layout_split_normalisation_and_padding(tmp_path, tfds_dir):
  root = make_road_folder(str(tmp_path / "roads"), n=10, size=40)
  ds = R.roads(manual_dir=root, data_dir=tfds_dir, crop_size=32, stride=16)
  assert len(ds.train) == 8 and len(ds.evals["validation"]) == 2
  again = R.roads(manual_dir=root, data_dir=tfds_dir, crop_size=32, stride=16)
  assert list(again.evals["validation"].indices) == list(ds.evals["validation"].indices)
  ex = ds.preprocess(ds.evals["validation"][0])
  assert ex["x"].shape == (48, 48, 3) and ex["label"].shape == (48, 48, 1)  # 40 -> 48 (stride 16)
  assert ex["pixel_valid"][:40, :40].all() and not ex["pixel_valid"][40:].any()
  train = np.stack([ds.train_preprocess(ds.train[i])["x"] for i in range(len(ds.train))])
  np.testing.assert_allclose(train.reshape(-1, 3).mean(0), 0, atol=1e-4)  # the training split's stats
  np.testing.assert_allclose(train.reshape(-1, 3).std(0), 1, atol=1e-3)


def test_augmentation_moves_image_and_mask_together():
  h = w = 20
  yy, xx = np.mgrid[:h, :w].astype(np.float32)
  ex = {"x": np.stack([yy, xx, yy * 0], -1), "label": (yy * 100 + xx)[..., None],
        "pixel_valid": np.ones((h, w), bool)}
  seen = set()
  for seed in range(12):
    out = R.augment_crop(ex, np.random.default_rng(seed), crop_size=8)
    again = R.augment_crop(ex, np.random.default_rng(seed), crop_size=8)
    np.testing.assert_array_equal(out["x"], again["x"])  # reproducible from the generator
    assert out["x"].shape == (8, 8, 3)
    np.testing.assert_array_equal(out["label"][..., 0], out["x"][..., 0] * 100 + out["x"][..., 1])
    seen.add(out["x"][0, 0, :2].tobytes())
  assert len(seen) > 6
  small = R.augment_crop(ex, np.random.default_rng(0), crop_size=32)  # larger than the image: padded
  assert small["x"].shape == (32, 32, 3) and small["pixel_valid"].sum() == h * w


def test_massachusetts_layout_keeps_the_official_splits(tmp_path, tfds_dir):
  root = make_road_folder(str(tmp_path / "mass"), n=8, size=40, layout="massachusetts")
  ds = R.roads(manual_dir=root, data_dir=tfds_dir, crop_size=32, stride=8)
  assert len(ds.train) == 8 and set(ds.evals) == {"validation", "test"}
  assert all(len(s) == 2 for s in ds.evals.values())
  assert ds.info["layout"] == "massachusetts"


def test_road_data_errors_name_the_problem(tmp_path, tfds_dir):
  with pytest.raises(DatasetError, match="manual_dir"):
    R.roads(manual_dir=None)
  with pytest.raises(DatasetError, match="does not exist"):
    R.roads(manual_dir=str(tmp_path / "nowhere"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(DatasetError, match="no road images found"):
    R.roads(manual_dir=str(tmp_path / "empty"))
  root = make_road_folder(str(tmp_path / "r"), n=3, size=32)
  os.remove(os.path.join(root, "groundtruth", "tile_001.png"))
  with pytest.raises(DatasetError, match="no mask of the same name.*tile_001"):
    R.roads(manual_dir=root, data_dir=tfds_dir)
  with pytest.raises(DatasetError, match="multiple of stride"):
    R.roads(manual_dir=root, crop_size=40, stride=16)


def test_damaged_road_files_are_named_and_leave_no_half_built_data(tmp_path):
  import hashlib
  root = make_road_folder(str(tmp_path / "r"), n=4, size=32)
  names = [f"{d}/tile_{i:03d}.png" for d in ("images", "groundtruth") for i in range(4)]
  with open(os.path.join(root, "SHA256SUMS"), "w") as f:
    for n in names:
      f.write(f"{hashlib.sha256(open(os.path.join(root, n), 'rb').read()).hexdigest()}  {n}\n")
  bad = os.path.join(root, "images", "tile_002.png")
  os.truncate(bad, os.path.getsize(bad) // 2)  # a copy cut short
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(DatasetError, match=f"{bad}: sha256 .* does not match .* in {root}/SHA256SUMS"):
    R.roads(manual_dir=root, data_dir=data_dir)
  # Without a checksum file the build decodes every file: the error names it and the TFDS data dir
  # keeps nothing of the failed build.
  os.remove(os.path.join(root, "SHA256SUMS"))
  with pytest.raises(DatasetError, match=f"{bad}: not a readable image"):
    R.roads(manual_dir=root, data_dir=data_dir)
  left = [os.path.relpath(os.path.join(d, f), data_dir) for d, dirs, files in os.walk(data_dir)
          for f in files + dirs]
  assert not [p for p in left if not p.startswith("downloads")], left
  # A build killed half-way (its .incomplete folder survives a SIGKILL) is cleared before the next one.
  from jaxcnn.data import base
  cleared = os.path.join(data_dir, "road_images", "x", "1.0.0")
  os.makedirs(cleared + ".incompleteQ1W2")

  class Builder:  # what _prepare asks of a TFDS builder
    name, builder_config = "road_images", type("C", (), {"name": "x"})

    def __init__(self):
      self.data_dir, self.data_path = data_dir, cleared

    def is_prepared(self):
      return False

    def download_and_prepare(self):
      assert not os.path.exists(cleared + ".incompleteQ1W2")

  base._prepare(Builder())


# --------------------------------------------------------------------------------------------- CLI

def run_cli(*args):
  if os.environ.get("JAXCNN_TEST_SEED"):  # as conftest.load_experiment: the learning test under seed k
    args = (*args, f"--config.seed={os.environ['JAXCNN_TEST_SEED']}")
  return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True, text=True,
                        env=subprocess_env())


def test_cli_trains_learns_and_predicts_a_folder(tmp_path, tfds_dir):
  """A short run on synthetic roads learns (validation IoU far above the all-background 0), writes the
  report with overlays, and `--mode=predict` segments a folder of a different image size."""
  root = make_road_folder(str(tmp_path / "roads"), n=24, size=64)
  wd = str(tmp_path / "run")
  common = ["--config=experiments/unet_roads.py:runlocal", f"--config.dataset.manual_dir={root}",
            f"--config.dataset.data_dir={tfds_dir}", f"--workdir={wd}", "--config.model.features=8",
            "--config.dataset.crop_size=48", "--config.train.batch_size=4"]
  p = run_cli(*common, "--config.train.epochs=6", "--config.optimizer.learning_rate=0.01")
  assert p.returncode == 0, p.stderr[-3000:]
  result = json.load(open(os.path.join(wd, "result.json")))
  assert result["final"]["validation/iou"] > 0.5, result["final"]
  assert result["final"]["validation/relaxed_breakeven"] > 0.6
  report = open(os.path.join(wd, "report.md")).read()
  assert "| validation |" in report and "overlays_validation.png" in report
  assert os.path.getsize(os.path.join(wd, "overlays_validation.png")) > 10_000

  # --mode=eval (in-process, as the CLI calls it) reproduces the final metrics from the checkpoint.
  from jaxcnn.errors import ConfigError
  from jaxcnn.train import evaluation
  from jaxcnn.train.prediction import predict_images
  sys.path.insert(0, os.path.join(ROOT, "tests"))
  from conftest import load_experiment
  c = load_experiment("unet_roads", "runlocal")
  c.dataset.manual_dir, c.dataset.data_dir, c.model.features, c.dataset.crop_size = root, tfds_dir, 8, 48
  c.train.batch_size, c.train.epochs, c.optimizer.learning_rate = 8, 6, 0.01  # 8 test devices
  evaluated = evaluation.evaluate_checkpoint(c, wd)
  assert evaluated["validation/iou"] == pytest.approx(result["final"]["validation/iou"], abs=1e-6)

  other = make_road_folder(str(tmp_path / "other"), n=2, size=100, seed=7)  # 100x100: not on the grid
  out = str(tmp_path / "pred")
  p = run_cli(*common, "--mode=predict", f"--input_dir={other}/images", f"--mask_dir={other}/groundtruth",
              f"--output_dir={out}")
  assert p.returncode == 0, p.stderr[-3000:]
  assert "tile_000.png (100x100)" in p.stdout and "All pixels" in p.stdout
  metrics = json.load(open(os.path.join(out, "metrics.json")))
  assert metrics["overall"]["iou"] > 0.4
  from PIL import Image
  assert np.asarray(Image.open(os.path.join(out, "tile_000_prob.png"))).shape == (100, 100)
  assert np.asarray(Image.open(os.path.join(out, "tile_000_overlay.png"))).shape == (100, 100, 3)

  # Bad folders: one clear error each (in-process: the CLI turns ConfigError into exit code 2).
  with pytest.raises(ConfigError, match=r"is \(64, 64\) but .* is \(100, 100\)"):
    predict_images(c, wd, f"{other}/images", f"{root}/groundtruth")
  with pytest.raises(ConfigError, match="is not a folder of images"):
    predict_images(c, wd, f"{tmp_path}/nothing")
  with pytest.raises(ConfigError, match="has no mask for 1 image"):
    os.remove(os.path.join(other, "groundtruth", "tile_001.png"))
    predict_images(c, wd, f"{other}/images", f"{other}/groundtruth")


def test_period2_energy_finds_a_checkerboard():
  from jaxcnn.conv.checkerboard import period2_energy
  yy, xx = np.mgrid[:32, :32]
  smooth = np.sin(yy / 5.0) + np.cos(xx / 7.0)
  board = ((yy + xx) % 2).astype(float)
  assert period2_energy(smooth) < 0.01
  assert period2_energy(board) == pytest.approx(1.0)
  assert period2_energy(smooth + 0.3 * board) > 10 * period2_energy(smooth)
