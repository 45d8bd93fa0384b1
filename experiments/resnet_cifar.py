"""CIFAR ResNets (He, Zhang, Ren & Sun 2016, section 4.2) on CIFAR-10 from your copy of the data.

  python launch.py --config=experiments/resnet_cifar.py:resnet20 --config.dataset.manual_dir=~/data/cifar10
  python launch.py --config=experiments/resnet_cifar.py:resnet110 --config.dataset.manual_dir=...
  python launch.py --config=experiments/resnet_cifar.py:resnet20,synthetic,runlocal   # no data needed

The argument is the depth (resnet20, resnet32, resnet44, resnet56, resnet110), then optionally
"synthetic" (seeded random 32x32x3 images, to try the pipeline without CIFAR-10) and "runlocal" (a few
steps). The protocol is the paper's: SGD with momentum 0.9, weight decay 1e-4, mini-batch 128, learning
rate 0.1 divided by 10 at 32k and 48k iterations and stopped at 64k (the paper trains on 45k images and
validates on 5k; on all 50k that is 82 / 123 / 164 epochs of 391 steps), the standard augmentation (4-pixel
padding, random 32x32 crop, horizontal flip), option A shortcuts. For ResNet-110 the paper warms up at
lr 0.01 until the training error is below 80 % (about 400 iterations), then goes back to 0.1:
`--config.schedule.warmup_epochs=1` approximates it with a 1-epoch linear warm-up. The reported number is
the test error at the end of training.

Paper test errors (Table 6): ResNet-20 8.75 %, -32 7.51 %, -44 7.17 %, -56 6.97 %, -110 6.43 % (best of
5 runs; mean 6.61 %). A global batch of 128 runs on 1, 2, 4 or 8 devices (GPUs/TPU cores) unchanged;
for more devices scale the batch and the learning rate together (Goyal et al. 2017).
"""
import ml_collections
from ml_collections import config_dict

from jaxcnn.configs import base_config, parse_arg, sgd

PAPER_ERROR = {20: 0.0875, 32: 0.0751, 44: 0.0717, 56: 0.0697, 110: 0.0643}


def get_config(arg: str = "resnet20") -> ml_collections.ConfigDict:
  depths = {f"resnet{d}": d for d in PAPER_ERROR}
  name, opts = parse_arg(arg, default="resnet20", names=depths, what="model",
                         options=("synthetic", "runlocal"))
  depth = depths[name]
  if "synthetic" in opts:
    dataset = dict(name="synthetic_images", shape=(32, 32, 3), num_classes=10, num_train=512, num_test=128, seed=0)
  else:
    dataset = dict(name="cifar10", manual_dir=config_dict.placeholder(str), augment=True)
  c = base_config(f"cifar10_{name}" + ("_synthetic" if "synthetic" in opts else ""),
                  model=dict(name=f"cifar_resnet{depth}", projection="zeropad"), dataset=dataset)
  c.optimizer.update(sgd(0.1, weight_decay=1e-4))
  c.schedule.update(name="piecewise", boundaries_epochs=(82, 123), factor=0.1, warmup_epochs=0)
  c.train.update(epochs=164, batch_size=128, eval_batch_size=1000, num_threads=8)
  c.report.update(paper=f"He et al. 2016, Table 6, ResNet-{depth}", unit="images")
  if "synthetic" in opts:
    c.report.note = "synthetic images: a pipeline check, not CIFAR-10"
  else:
    c.report.paper_error = PAPER_ERROR[depth]
  if "runlocal" in opts:
    c.train.epochs = 1
    c.train.batch_size = 64
    c.train.num_threads = 0
  return c
