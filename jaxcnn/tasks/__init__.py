"""Tasks: loss, metrics and evaluation summaries, registered by name in `jaxcnn.registry.TASKS`."""
from jaxcnn.tasks import classification  # noqa: F401
from jaxcnn.tasks import instance_segmentation  # noqa: F401
from jaxcnn.tasks import segmentation  # noqa: F401
