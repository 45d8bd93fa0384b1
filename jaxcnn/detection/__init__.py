"""Object detection and instance segmentation (Faster / Mask R-CNN) as pure functions with static shapes:
boxes, anchors, NMS, RoIAlign / RoIPool, the RPN (`rpn`) and the RoI heads' targets and losses (`roi_heads`)."""
from jaxcnn.detection.anchors import cell_anchors, grid_anchors, inside_image, num_anchors
from jaxcnn.detection.boxes import area, clip, decode, encode, iou, xywh_to_xyxy, xyxy_to_xywh
from jaxcnn.detection.nms import batched_nms, nms
from jaxcnn.detection.roi_align import roi_align, roi_pool

__all__ = ["area", "batched_nms", "cell_anchors", "clip", "decode", "encode", "grid_anchors", "inside_image",
           "iou", "nms", "num_anchors", "roi_align", "roi_pool", "xywh_to_xyxy", "xyxy_to_xywh"]
