"""Interpretation: class activation maps and their overlays (`cam.py`, `plots.py`)."""
from jaxcnn.interpret.cam import (CAMError, CAMResult, class_activation_map, compute_cam,
                                  features_and_logits, normalize, upsample)

__all__ = ["CAMError", "CAMResult", "class_activation_map", "compute_cam", "features_and_logits",
           "normalize", "upsample"]
