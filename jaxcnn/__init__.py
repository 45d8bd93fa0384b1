"""jaxcnn: a JAX/Flax functional research framework for convolutional networks."""

__version__ = "0.1.0"
