"""Architectures, one file per family, each registered by name in `jaxcnn.registry.MODELS`."""
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
