"""Architectures, one file per family, each registered by name in `jaxcnn.registry.MODELS`.

The model contract (what the trainer, the tasks, `jaxcnn.arithmetic`, CAM and the weight loader rely on):

- A registered constructor `build(num_classes, ..., axis_name=None, dtype=None) -> flax.linen.Module`,
  registered with its natural input: `@MODELS.register("name", input_shape=(224, 224, 3))` (one example,
  channels last, no batch axis; `input_dtype="int8"` for token indices). The trainer injects
  `num_classes` (from the data set), `axis_name` ("data" inside the parallel step: BatchNorm reduces its
  statistics over it; None elsewhere) and `dtype` (None for float32, "bfloat16" to compute in bfloat16
  with float32 parameters); every other keyword comes from `config.model`.
- `model.apply(variables, x, train=bool, mask=None)`: `x` `[batch, *spatial, channels]`; `mask` marks
  the valid examples `[batch]` (padding rows of a batch that does not divide over the devices) or
  positions `[batch, length]` (variable-length series), and BatchNorm's statistics ignore the rest
  (`jaxcnn.conv.BatchNorm`). Returns logits `[batch, num_classes]` (a task may define other outputs:
  `(logits, aux)` for GoogLeNet's auxiliary heads, a dict of losses for Mask R-CNN in training).
  Randomness (dropout) comes only from the `dropout` RNG stream.
- Variables: `params`, and `batch_stats` for BatchNorm running statistics.
- Models that end in global average pooling + dense call `common.sow_cam_features(self, maps)` on their
  last feature maps, so `--mode=cam` (jaxcnn.interpret) can draw class activation maps.
- To load a reference implementation's weights, add its names to `jaxcnn/pretrained/layouts.py`.

Adding a model is one file here (built from the typology's blocks, `jaxcnn.conv`) and its import below.
"""
from jaxcnn.models import fcn  # noqa: F401
from jaxcnn.models import resnet_ts  # noqa: F401
from jaxcnn.models import c3d  # noqa: F401
from jaxcnn.models import char_cnn  # noqa: F401
from jaxcnn.models import googlenet  # noqa: F401
from jaxcnn.models import lenet  # noqa: F401
from jaxcnn.models import resnet  # noqa: F401
from jaxcnn.models import vgg  # noqa: F401
from jaxcnn.models import unet  # noqa: F401
from jaxcnn.models import inception_time  # noqa: F401
from jaxcnn.models import tcn  # noqa: F401
from jaxcnn.models import mask_rcnn  # noqa: F401
from jaxcnn.models import efficientnet  # noqa: F401
