"""Data sets (TFDS builders in array_record format, no TensorFlow) and grain input pipelines."""
from jaxcnn.data import coco_format  # noqa: F401
from jaxcnn.data import images  # noqa: F401
from jaxcnn.data import mnist  # noqa: F401
from jaxcnn.data import nuclei  # noqa: F401
from jaxcnn.data import moving_shapes  # noqa: F401
from jaxcnn.data import roads  # noqa: F401
from jaxcnn.data import shapes_instances  # noqa: F401
from jaxcnn.data import text  # noqa: F401
from jaxcnn.data import ucr  # noqa: F401
from jaxcnn.data.base import Dataset, DatasetError

__all__ = ["Dataset", "DatasetError"]
