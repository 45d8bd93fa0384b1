"""ImageNet ResNets (He et al. 2016) with torchvision's reference recipe, from your copy of ImageNet.

  python launch.py --config=experiments/resnet_imagenet.py:resnet50 --config.dataset.manual_dir=/data/imagenet
  python launch.py --config=experiments/resnet_imagenet.py:resnet50,synthetic,runlocal   # no data needed

`manual_dir` holds `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG` (the validation images sorted into class
folders, as torchvision's and most reference scripts expect). The argument is the model (resnet18, resnet34,
resnet50, resnet101, resnet152), then optionally "synthetic" (seeded random 224x224x3 images) and
"runlocal" (a few steps on small images). The recipe is torchvision's (references/classification, which
its ResNet weights were trained with, close to the paper's): SGD momentum 0.9, lr 0.1 for a global batch
of 256 (scale linearly with the batch, Goyal et al. 2017), weight decay 1e-4, 90 epochs, lr divided by 10
every 30 epochs, random-resized 224 crops and flips; evaluation on the centre 224 crop of the image
resized to 256. `--config.precision=bfloat16` computes in bfloat16 (parameters stay float32).

Reference single-crop top-1 errors (torchvision's model documentation, its reproduction of the paper):
ResNet-18 30.24 %, -34 26.70 %, -50 23.87 %, -101 22.63 %, -152 21.69 %.
"""
import ml_collections
from ml_collections import config_dict

REFERENCE_ERROR = {18: 0.3024, 34: 0.2670, 50: 0.2387, 101: 0.2263, 152: 0.2169}


def get_config(arg: str = "resnet50") -> ml_collections.ConfigDict:
  parts = [p for p in (arg or "resnet50").split(",") if p]
  name, opts = parts[0], set(parts[1:])
  depths = {f"resnet{d}": d for d in REFERENCE_ERROR}
  if name not in depths:
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(depths)}")
  unknown = opts - {"synthetic", "runlocal"}
  if unknown:
    raise ValueError(f"unknown option(s) {sorted(unknown)}; valid: synthetic, runlocal")
  c = ml_collections.ConfigDict()
  c.experiment = f"imagenet_{name}" + ("_synthetic" if "synthetic" in opts else "")
  c.seed = 0
  c.parallel = "jit"
  c.precision = "float32"      # "bfloat16": bfloat16 compute, float32 parameters and optimizer state
  c.cpu_convolutions = "ynnpack"  # on CPU: XLA's convolution kernels, "ynnpack" (jaxlib's) or "eigen"
  c.model = ml_collections.ConfigDict(dict(name=name, zero_init_last=False))
  if "synthetic" in opts:
    c.dataset = ml_collections.ConfigDict(dict(name="synthetic_images", shape=(224, 224, 3),
                                               num_classes=1000, num_train=256, num_test=64, seed=0))
  else:
    c.dataset = ml_collections.ConfigDict(dict(name="image_folder", manual_dir=config_dict.placeholder(str),
                                               size=224, resize=256, train_split="train", eval_split="val"))
  c.task = ml_collections.ConfigDict(dict(name="classification", label_smoothing=0.0, aux_weight=0.3))
  c.optimizer = ml_collections.ConfigDict(dict(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=False,
                                               weight_decay=1e-4, b1=0.9, b2=0.999, eps=1e-8))
  c.schedule = ml_collections.ConfigDict(dict(name="piecewise", boundaries_epochs=(30, 60), factor=0.1,
                                              warmup_epochs=0))
  c.train = ml_collections.ConfigDict(dict(epochs=90, batch_size=256, eval_batch_size=256,
                                           eval_every_epochs=1, eval_on_improvement=False,
                                           log_every_epochs=1, num_threads=16))
  c.checkpoint = ml_collections.ConfigDict(dict(every_epochs=1, keep=2))
  c.report = ml_collections.ConfigDict(dict(
      select_by="final", paper="torchvision's ResNet reproduction, single 224 crop", unit="images",
      paper_error=config_dict.placeholder(float), note=""))
  if "synthetic" in opts:
    c.report.note = "synthetic images: a pipeline check, not ImageNet"
  else:
    c.report.paper_error = REFERENCE_ERROR[depths[name]]
  if "runlocal" in opts:
    c.train.epochs = 1
    c.train.batch_size = 16
    c.train.num_threads = 0
    if "synthetic" in opts:
      c.dataset.shape = (64, 64, 3)
      c.dataset.num_train = 32
      c.dataset.num_test = 16
  return c
