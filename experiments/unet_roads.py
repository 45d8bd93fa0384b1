"""U-Net road segmentation from aerial images (the lecture's application; Ronneberger et al. 2015).

  python launch.py --config=experiments/unet_roads.py --config.dataset.manual_dir=../shared/data/roads
  python launch.py --config=experiments/unet_roads.py:resize ...     # decoder: resize + conv
  python launch.py --config=experiments/unet_roads.py:massachusetts --config.dataset.manual_dir=DIR
  python launch.py --config=experiments/unet_roads.py:runlocal ...   # smoke test (1 epoch, tiny net)

Then `--mode=predict --input_dir=IMAGES [--mask_dir=MASKS] [--output_dir=OUT]` with the same config
writes probability masks and the lecture's TP/FN/FP overlays for any folder of images of any size
(overlapping tiles), and prints the metrics when masks are given.

Default (CPU-sized): the ETH/EPFL road images (400x400, 90 of them; 72 train / 18 validation by a seeded
hold-out), U-Net of depth 4 with 16 feature maps at the first level (the paper: 64; `--config.model.
features=64` is the paper's network, 31.0 M parameters) with BatchNorm and dropout 0.5, random 256x256
crops with flips and 90-degree rotations, pixel-wise binary cross-entropy, Adam 1e-3 with a cosine decay,
batch 8. Evaluation is on the whole validation images at probability threshold 0.5, plus the relaxed
(rho = 3) precision/recall breakeven and the challenge's 16x16 patch F1.

`:massachusetts` is the Massachusetts Roads setting (Mnih 2013): 1500x1500 tiles, official splits, the
paper-width U-Net; made for a GPU/TPU run with the user's copy of the data.
"""
import ml_collections
from ml_collections import config_dict

from jaxcnn.configs import base_config, parse_arg

OPTIONS = ("runlocal", "resize", "massachusetts", "dice")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  _, parts = parse_arg(arg, leading=False, options=OPTIONS)
  c = base_config("unet_roads",
                  model=dict(name="unet", depth=4, features=16, dropout=0.5, norm="batch", upsample="transposed"),
                  dataset=dict(name="roads", manual_dir=config_dict.placeholder(str),
                               data_dir=config_dict.placeholder(str), val_fraction=0.2, split_seed=0,
                               crop_size=256, stride=16),
                  task=dict(name="segmentation", dice_weight=0.0, relax=3, bins=100, patch_size=16,
                            patch_fraction=0.25))
  # On CPU, XLA's multi-threaded Eigen convolutions: training steps 1.64x faster than with jaxlib's
  # one-thread YNNPACK ones on 2 cores (bench/README.md); "ynnpack" for jaxlib's default.
  c.cpu_convolutions = "eigen"
  c.schedule.warmup_epochs = 0
  c.train.update(epochs=100, batch_size=8, eval_batch_size=6, eval_every_epochs=10, log_every_epochs=10)
  c.checkpoint.every_epochs = 10
  c.predict = ml_collections.ConfigDict(dict(tile=512, margin=64, threshold=0.5, overlays=6))
  c.report.update(
      unit="images",
      paper=("no published result on this 90-image part of the ETH/EPFL training set; see README "
             "'Road segmentation' for the published figures on other data"),
      note="pixel metrics over all validation pixels at threshold 0.5")
  if "resize" in parts:
    c.experiment = "unet_roads_resize"
    c.model.upsample = "resize"
  if "dice" in parts:
    c.experiment += "_dice"
    c.task.dice_weight = 1.0
  if "massachusetts" in parts:
    c.experiment = "unet_massachusetts" + ("_resize" if "resize" in parts else "")
    c.model.features = 64
    c.train.epochs = 100
    c.train.batch_size = 16
    c.train.eval_batch_size = 4
    c.train.eval_every_epochs = 5
    c.predict.tile = 512
    c.predict.margin = 96
    c.report.paper = ("Mnih 2013 (thesis), Massachusetts Roads test set, relaxed breakeven rho=3: "
                      "CNN 0.8873, + post-processing net 0.9006")
  if "runlocal" in parts:
    c.model.features = 4
    c.model.depth = 2
    c.dataset.crop_size = 64
    c.dataset.stride = 4
    c.train.epochs = 1
    c.train.eval_every_epochs = 1
    c.train.log_every_epochs = 1
    c.checkpoint.every_epochs = 1
    c.predict.tile = 64
    c.predict.margin = 8
  return c
