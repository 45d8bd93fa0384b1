"""The convolution typology as pure functions of (params, inputs), with thin Flax modules over them.

Everything is channels-last: 1D `[batch, length, channels]`, 2D `[batch, height, width, channels]`,
3D `[batch, x, y, z, channels]`.
"""
from jaxcnn.conv.nd import Conv, conv
from jaxcnn.conv.normalization import BatchNorm, batch_norm
from jaxcnn.conv.pooling import global_avg_pool

__all__ = ["Conv", "conv", "BatchNorm", "batch_norm", "global_avg_pool"]
