"""The convolution typology as pure functions of (params, inputs), with thin Flax modules over them.

Everything is channels-last: 1D `[batch, length, channels]`, 2D `[batch, height, width, channels]`,
3D `[batch, x, y, z, channels]`.

| kind                      | pure function                                   | module                        | file          |
|---------------------------|-------------------------------------------------|-------------------------------|---------------|
| 1D/2D/3D, stride, groups  | `conv`, `convolve` (flipped kernel)             | `Conv`                        | nd.py         |
| dilated, causal dilated   | `conv(dilation=)`, `causal_conv`                | `CausalConv`, `DilatedCausalStack` | dilated.py |
| transposed                | `conv_transpose`, `conv_matrix`, `overlap_counts`, `resize_conv` | `ConvTranspose`, `ResizeConv` | transposed.py |
| inception                 | `inception`                                     | `InceptionNaive`, `InceptionReduced`, `InceptionFactorized`, `InceptionAsymmetric` | inception.py |
| separable, inverted residual | `spatially_separable_conv`, `depthwise_separable_conv`, `drop_path` | `SpatiallySeparableConv`, `DepthwiseSeparableConv`, `InvertedResidual` | separable.py |
| skip connections          | `residual`                                      | `BasicBlock`, `BottleneckBlock` | residual.py |
| pooling, GAP, SE          | `max_pool`, `avg_pool`, `global_avg_pool`, `global_max_pool`, `squeeze_excite` | `MaxPool`, `AvgPool`, `SqueezeExcite` | pooling.py |
| batch normalisation       | `batch_norm`                                    | `BatchNorm`                   | normalization.py |
"""
from jaxcnn.conv.dilated import CausalConv, DilatedCausalStack, causal_conv
from jaxcnn.conv.inception import (InceptionAsymmetric, InceptionFactorized, InceptionNaive,
                                   InceptionReduced, inception)
from jaxcnn.conv.nd import Conv, conv, convolve, output_size, resolve_padding
from jaxcnn.conv.normalization import BatchNorm, batch_norm
from jaxcnn.conv.pooling import (AvgPool, MaxPool, SqueezeExcite, adaptive_avg_pool, avg_pool,
                                 global_avg_pool, global_max_pool, max_pool, squeeze_excite)
from jaxcnn.conv.residual import BasicBlock, BottleneckBlock, residual, zero_pad_shortcut
from jaxcnn.conv.separable import (DepthwiseSeparableConv, InvertedResidual, SpatiallySeparableConv,
                                   depthwise_conv, depthwise_separable_conv, drop_path, sobel_kernels,
                                   spatially_separable_conv)
from jaxcnn.conv.transposed import (ConvTranspose, ResizeConv, conv_matrix, conv_transpose,
                                    overlap_counts, resize_conv, transposed_output_size)

__all__ = [
    "AvgPool", "BasicBlock", "BatchNorm", "BottleneckBlock", "CausalConv", "Conv", "ConvTranspose",
    "DepthwiseSeparableConv", "DilatedCausalStack", "InceptionAsymmetric", "InceptionFactorized",
    "InceptionNaive", "InceptionReduced", "InvertedResidual", "MaxPool", "ResizeConv", "SpatiallySeparableConv",
    "SqueezeExcite", "adaptive_avg_pool", "avg_pool", "batch_norm", "causal_conv", "conv", "conv_matrix", "conv_transpose",
    "convolve", "depthwise_conv", "depthwise_separable_conv", "drop_path", "global_avg_pool", "global_max_pool",
    "inception", "max_pool", "output_size", "overlap_counts", "residual", "resize_conv",
    "resolve_padding", "sobel_kernels", "spatially_separable_conv", "squeeze_excite",
    "transposed_output_size", "zero_pad_shortcut",
]
