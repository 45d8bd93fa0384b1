"""C3D (Tran et al. 2015) on the seeded moving-shapes videos: 3D convolutions learning a temporal pattern.

  python launch.py --config=experiments/c3d_moving_shapes.py
  python launch.py --config=experiments/c3d_moving_shapes.py:runlocal        # smoke test

The class of a clip is the direction its shape moves in (right, left, down, up); every single frame has
the same distribution whatever the class, so a per-frame classifier is at chance (25 %) and only a model
that convolves over time can do better. The network is the paper's C3D (eight 3x3x3 convolutions, pool1
1x2x2, pools 2-5 2x2x2, two dense layers) with every filter count divided by 8 and 256-unit dense
layers, on 8 frames of 32x32 (the paper: 16 x 112 x 112 RGB, Sports-1M), trained with Adam at 3e-4 for
20 epochs. (At 1e-3 on 16 frames the network sat on a plateau for 10 epochs, having learned left/right
but not up/down: 50 % error.) `--config.model.width=1 --config.model.fc_units=4096` is the paper's width,
`--config.dataset.frames=16` the paper's clip length.
"""
import ml_collections
from ml_collections import config_dict

from jaxcnn.configs import base_config, parse_arg


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  _, parts = parse_arg(arg, leading=False, options=("runlocal",))
  c = base_config("c3d_moving_shapes", model=dict(name="c3d", width=8, fc_units=256, dropout=0.5),
                  dataset=dict(name="moving_shapes", num_classes=4, frames=8, size=32, num_train=2000,
                               num_test=500, seed=0, data_dir=config_dict.placeholder(str)))
  c.optimizer.learning_rate = 3e-4
  c.schedule.warmup_epochs = 0
  c.train.update(epochs=20, eval_batch_size=250)
  c.report.update(paper="no published number (synthetic data); chance is 25 %", unit="clips",
                  note="seeded synthetic moving-shape clips; the class is the direction of motion")
  if "runlocal" in parts:
    c.train.epochs = 1
    c.dataset.num_train = 64
    c.dataset.num_test = 32
  return c
