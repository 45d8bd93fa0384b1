"""Mask R-CNN (He, Gkioxari, Dollár & Girshick 2017): instance segmentation with COCO evaluation.

  python launch.py --config=experiments/mask_rcnn.py:shapes                 # CPU, synthetic shapes
  python launch.py --config=experiments/mask_rcnn.py:shapes,runlocal        # a 1-minute smoke test
  python launch.py --config=experiments/mask_rcnn.py:coco_r50_c4 --config.dataset.manual_dir=/data/coco
  python launch.py --config=experiments/mask_rcnn.py:coco_r50_fpn --config.dataset.manual_dir=/data/coco
  python launch.py --config=experiments/mask_rcnn.py:shapes,fpn             # the FPN variant on CPU
  python launch.py --config=experiments/mask_rcnn.py:nuclei --config.dataset.manual_dir=../shared/data/nuclei
  (also coco_r101_c4, coco_r101_fpn)

Then, with the same config and workdir: `--mode=eval` (COCO AP of the last checkpoint, detections JSON)
and `--mode=predict --input_dir=IMAGES` (COCO-format results and one overlay PNG per image: masks, boxes,
class names and scores).

`:shapes` trains the small C4 network (`mask_rcnn_small`: basic blocks of width 16, anchors 16/32/64 x 3
ratios) from scratch on the seeded synthetic scenes (`shapes_instances`: 128 x 128 images, up to 6 disks,
rectangles, triangles and rings with occlusion, 2000 train / 200 val), Adam 2e-3 with a 1-epoch warm-up
and a cosine decay, batch 8. README "Instance segmentation" has its measured AP and time.

`,fpn` swaps in the FPN variant (`mask_rcnn_small_fpn`: P2-P6, one anchor size per level, 2-fc box
head, 28 x 28 masks).

`:nuclei` trains the small FPN network from scratch on real fluorescence microscopy in the 2018 Data
Science Bowl's layout (`nuclei`: random 128 x 128 crops of each image's training part, 256 an epoch, 40
epochs; COCO mask and box AP on the held-out part, cut into 128 x 128 tiles; with several images, a
seeded quarter of them is held out instead), up to 48 detections a tile.

`:coco_*` is the paper's schedule (its 1x: 160k iterations
at batch 16, i.e. 2 images on each of 8 devices; lr 0.02 divided by 10 at 120k; weight decay 1e-4,
momentum 0.9; a linear warm-up from lr/10 over the first 1000 iterations; images resized to short side
800, long side at most 1333, then padded to a fixed 1344 x 1344 so every step has one shape). The epoch
count is the nearest whole number of epochs over COCO 2017 train (118,287 images; 22 epochs = 162,646
iterations at batch 16) and the drop is at exactly 120k. The paper fine-tunes an ImageNet-pretrained
ResNet: `--config.model.pretrained=resnet50-0676ba61.pth '--config.model.freeze=backbone/conv1,backbone/norm1,backbone/stage1_*,backbone/stage*/*norm*'`
(torchvision's file; jaxcnn downloads nothing) loads it into the backbone and freezes the stem, res2 and
every BatchNorm's scale and shift as torchvision does (trainable_backbone_layers=3, FrozenBatchNorm2d). Without it the backbone starts from scratch, and the 1x schedule falls short of
the published AP (He, Girshick & Dollár 2019 match it from scratch only with about 3x longer schedules
and normalisation that trains, e.g. `--config.model.frozen_bn=False` with large per-device batches).
Made for a TPU/GPU pod; not run here.

Published mask AP (He et al. 2017, Table 2a, COCO minival = 2017 val): ResNet-50-C4 30.3, ResNet-101-C4
32.7, ResNet-50-FPN 33.6, ResNet-101-FPN 35.4; on test-dev (Table 1) ResNet-101-C4 33.1, ResNet-101-FPN
35.7 (box AP 38.2, Table 3).
"""
import ml_collections
from ml_collections import config_dict

from jaxcnn.configs import base_config, parse_arg, sgd

COCO_TRAIN_IMAGES = 118287
PAPER_MASK_AP = {"coco_r50_c4": 0.303, "coco_r101_c4": 0.327, "coco_r50_fpn": 0.336, "coco_r101_fpn": 0.354}
OPTIONS = ("runlocal", "fpn")


def _base(experiment: str) -> ml_collections.ConfigDict:
  """The shared defaults with the detection task; each variant sets its model and data set. The CPU runs'
  optimiser (shapes, nuclei): Adam at 2e-3 (the shared Adam otherwise), no weight decay."""
  c = base_config(experiment, model=dict(name=""), dataset=dict(name=""),
                  task=dict(name="instance_segmentation", mask_threshold=0.5, write_results=True, mask_paste="box"))
  c.optimizer.learning_rate = 2e-3
  c.predict = ml_collections.ConfigDict(dict(overlays=8, score_threshold=0.5))
  return c


def _nuclei(c, runlocal: bool) -> ml_collections.ConfigDict:
  """The small FPN network from scratch on real microscopy (jaxcnn/data/nuclei.py): random 128 x 128
  crops of the training part of each image, COCO AP on the held-out part's tiles."""
  # Proposals and detections per image: a tile holds up to about 20 nuclei; to predict a whole image at
  # once, raise them (e.g. --config.model.detections_per_image=200 --config.model.post_nms_test=400
  # --config.model.pre_nms_test=3000: they change no weight).
  c.model = ml_collections.ConfigDict(dict(name="mask_rcnn_small_fpn", width=16, detections_per_image=48,
                                           pre_nms_test=600, post_nms_test=100))
  c.dataset = ml_collections.ConfigDict(dict(name="nuclei", manual_dir=config_dict.placeholder(str),
                                             data_dir=config_dict.placeholder(str), crop=128, max_instances=48,
                                             holdout="auto", val_fraction=0.25, seed=0, crops_per_epoch=256))
  c.schedule.update(name="warmup_cosine", warmup_epochs=2)
  c.train.update(epochs=40, batch_size=8, eval_batch_size=4, eval_every_epochs=10, log_every_epochs=5)
  c.checkpoint.every_epochs = 5
  c.predict.overlays = 4
  # XLA's Eigen convolution kernels: the full run's training took 300 / 294 s against YNNPACK's 332 / 342 s,
  # run back to back in both orders on 2 cores (docs/detection.md); --mode=predict on the whole image:
  # no difference (about 10 s either way, mostly compiles).
  c.cpu_convolutions = "eigen"
  c.report.update(unit="tiles",
                  paper="none: the Data Science Bowl scored its own metric, not COCO AP, on its test images")
  if runlocal:
    c.train.epochs = 1
    c.train.eval_every_epochs = 1
    c.dataset.crops_per_epoch = 16
  return c


def get_config(arg: str = "shapes") -> ml_collections.ConfigDict:
  name, opts = parse_arg(arg, default="shapes", names=("shapes", "nuclei", *PAPER_MASK_AP), options=OPTIONS)
  c = _base(f"mask_rcnn_{name}" + ("_fpn" if "fpn" in opts else ""))
  if name == "nuclei":
    return _nuclei(c, "runlocal" in opts)
  if name == "shapes":
    c.model = ml_collections.ConfigDict(dict(name="mask_rcnn_small_fpn" if "fpn" in opts else "mask_rcnn_small",
                                             width=16))
    # Both train with XLA's Eigen convolution kernels: 80 steps took 57 / 51 s against YNNPACK's 74 / 71 s
    # for C4, 41 / 39 s against 46 / 48 s for FPN (both orders back to back, compile and evaluation
    # included); the full runs: docs/detection.md.
    c.cpu_convolutions = "eigen"
    c.dataset = ml_collections.ConfigDict(dict(name="shapes_instances", size=128, max_instances=6,
                                               num_train=2000, num_val=200, seed=0,
                                               data_dir=config_dict.placeholder(str)))
    c.schedule.update(name="warmup_cosine", warmup_epochs=1)
    c.train.update(epochs=16, batch_size=8, eval_batch_size=40, eval_every_epochs=4)
    c.report.update(unit="images",
                    paper="none: a synthetic data set (the paper's numbers are COCO's, see :coco_r50_c4)")
  else:
    if "fpn" in opts:
      raise ValueError(f"{name} names its backbone already; use coco_r50_fpn / coco_r101_fpn")
    depth, variant = (101 if "r101" in name else 50), name.split("_")[-1]
    c.model = ml_collections.ConfigDict(dict(name=f"mask_rcnn_r{depth}_{variant}"))
    # The paper's start: an ImageNet ResNet's weights in the backbone (torchvision's file, e.g.
    # resnet50-0676ba61.pth; RPN, FPN and heads keep their initialisation) with the stem and res2
    # frozen, as torchvision's trainable_backbone_layers=3: --config.model.pretrained=FILE
    # --config.model.freeze=backbone/conv1,backbone/norm1,backbone/stage1_*,backbone/stage*/*norm* (FPN) or
    # conv1,norm1,c4_blocks_0,c4_blocks_1,c4_blocks_2,c4_blocks_*/*norm*,res5_*/*norm* (C4): the glob
    # entries keep every BatchNorm's scale and shift fixed, as FrozenBatchNorm2d does. BatchNorm's
    # running statistics are frozen either way.
    c.model.pretrained = config_dict.placeholder(str)
    c.model.freeze = ()
    if variant == "fpn":
      # torchvision's maskrcnn_resnet50_fpn: the top 2000 (training) / 1000 (test) anchors of each level,
      # NMS within each level, the best 2000 / 1000 over all (rpn.proposals_per_level); anchor corners in
      # whole pixels; RoIAlign without the half-cell shift. So its COCO weights
      # (--config.model.pretrained=maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth) run as they were trained.
      c.model.update(dict(per_level_proposals=True, pre_nms_train=2000, post_nms_train=2000,
                          pre_nms_test=1000, post_nms_test=1000, round_anchors=True, roi_aligned=False))
      # Its evaluation too: each image padded to a multiple of 32 (one compile per padded shape; training
      # keeps the fixed 1344 x 1344), proposals and boxes clipped to the image inside the padding, masks
      # pasted by paste_masks_in_image. tests/test_mask_rcnn_torchvision.py: the same detections.
      c.task.mask_paste = "torchvision"
      # On CPU (docs/detection.md, the R50-FPN at 1344 x 800, measured back to back): XLA's multi-threaded
      # Eigen convolutions train faster (the 8-object step 1.27x torchvision's time against 1.43x with
      # YNNPACK), jaxlib's YNNPACK infers faster (0.75x against 0.92x); --mode=eval / predict take the
      # second. The --cpu_convolutions flag overrides both.
      c.cpu_convolutions, c.cpu_convolutions_inference = "eigen", "ynnpack"
    c.dataset = ml_collections.ConfigDict(dict(name="coco", manual_dir=config_dict.placeholder(str),
                                               train_split="train2017", eval_split="val2017",
                                               min_size=800, max_size=1333, pad_to=1344,
                                               eval_pad_to=0 if variant == "fpn" else 1344,
                                               max_instances=100))
    c.optimizer.update(sgd(0.02, weight_decay=1e-4))
    spe = COCO_TRAIN_IMAGES / 16
    c.schedule.update(name="piecewise", boundaries_epochs=(120_000 / spe,), factor=0.1, warmup_epochs=1000 / spe)
    c.train.update(epochs=22, batch_size=16, eval_batch_size=16, eval_every_epochs=2, num_threads=16)
    c.report.update(unit="images",
                    paper=(f"He et al. 2017, Table 2a: COCO minival mask AP {100 * PAPER_MASK_AP[name]:.1f} "
                           f"(ResNet-{depth}-{variant.upper()}, ImageNet-pretrained backbone)"))
  if "runlocal" in opts:
    c.train.epochs = 1
    c.train.eval_every_epochs = 1
    if name == "shapes":
      c.dataset.size = 64
      c.dataset.max_instances = 3
      c.dataset.num_train = 32
      c.dataset.num_val = 8
      c.train.eval_batch_size = 8
      c.predict.overlays = 4
    else:
      c.train.batch_size = 2
      c.dataset.min_size, c.dataset.max_size, c.dataset.pad_to = 320, 512, 512
      c.dataset.eval_pad_to = min(c.dataset.eval_pad_to, 512)
  return c
